"""`hubpub validate`."""

from __future__ import annotations

import click

from ._app import RECIPE, cli, load


@cli.command("validate")
@RECIPE
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="The quantized checkpoint folder (default: the recipe's output_dir).")
@click.option("--quiet", is_flag=True, help="No progress bar; print tables only when something fails.")
def validate_command(recipe: str, output_dir: str | None, quiet: bool) -> None:
    """Prove the quantized checkpoint loads and works, measure it against the base, and gate.

    Base and quantized each load in a fresh process (any missing or unexpected weight fails),
    run every generation mode of the recipe (or the built-in set), the [[eval]] entries, and the
    thresholds of [validate.gates]. Writes hubpub_metrics.json; exits 1 if anything fails.

    \b
    Example:
      hubpub validate recipes/demo.toml
      hubpub validate recipes/demo.toml --output-dir out/demo --quiet
    """
    from ..validate import validate

    result = validate(load(recipe), output_dir=output_dir, progress=not quiet)
    q, b = result.metrics.quantized, result.metrics.base
    mem = f", peak memory {b.peak_memory_bytes / 1e6:.1f} -> {q.peak_memory_bytes / 1e6:.1f} MB" if b and b.peak_memory_bytes is not None and q.peak_memory_bytes is not None else ""
    click.echo(f"validate passed: {len(result.metrics.modes)} mode runs ok{mem}; wrote {result.metrics_path}")
