"""`hubpub quantize`."""

from __future__ import annotations

import click

from ._app import RECIPE, VERBOSE, cli, load, renderer


@cli.command("quantize")
@RECIPE
@click.option("--force", is_flag=True, help="Quantize again even if a finished output for this recipe exists.")
@click.option("--no-progress", is_flag=True, help="No progress bars or progress lines.")
@click.option("--strict", is_flag=True, help="Fail (before tuning its block) when a quantized linear sees no calibration data.")
@VERBOSE
def quantize_cmd(recipe: str, force: bool, no_progress: bool, verbose: bool, strict: bool) -> None:
    """Quantize the recipe's base model into output_dir (weights, config, manifest).

    \b
    Example:
      hubpub quantize recipes/demo.toml
      hubpub quantize recipes/demo.toml --force --no-progress
    """
    from rich.console import Console
    from rich.table import Table

    from ..quantize import quantize
    from ..units import human_bytes, human_duration

    loaded = load(recipe, stage="quantize")
    with renderer(verbose=verbose, quiet=no_progress) as events:
        result = quantize(loaded, force=force, events=events, strict=strict)
    m = result.manifest
    console = Console(stderr=False, highlight=False)
    if result.reused:
        console.print(f"Reused finished output {result.output_dir} (same recipe and source; --force to redo)")
    table = Table(title=f"{m.model_name}: {m.method} W{m.bits} g{m.group_size} {'sym' if m.sym else 'asym'} -> {m.format}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("linears quantized", str(m.linears_quantized))
    table.add_row("tensors", f"{m.tensors_before} -> {m.tensors_after}")
    table.add_row("weights before", human_bytes(m.bytes_before))
    table.add_row("weights after", human_bytes(m.bytes_after))
    table.add_row("ratio", f"{result.ratio:.2f}x")
    table.add_row("time", f"{human_duration(m.timings.get('total', 0.0))} on {m.device}")
    console.print(table)
    console.print(f"Wrote {result.output_dir}")
