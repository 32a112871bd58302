"""`hubpub validate`."""

from __future__ import annotations

import click

from ._app import RECIPE, VERBOSE, cli, load, renderer


@cli.command("validate")
@RECIPE
@click.option("--output-dir", type=click.Path(file_okay=False), default=None,
              help="The quantized checkpoint folder (default: the recipe's output_dir).")
@click.option("--quiet", is_flag=True, help="No progress bar; print tables only when something fails.")
@VERBOSE
def validate_command(recipe: str, output_dir: str | None, quiet: bool, verbose: bool) -> None:
    """Prove the quantized checkpoint loads and works, measure it against the base, and gate.

    Base and quantized each load in a fresh process (any missing or unexpected weight fails),
    run every generation mode of the recipe (or the built-in set), the [[eval]] entries, and the
    thresholds of [validate.gates]. Writes hubpub_metrics.json; exits 1 if anything fails.

    \b
    Example:
      hubpub validate recipes/demo.toml
      hubpub validate recipes/demo.toml --output-dir out/demo --quiet
    """
    from ..units import human_bytes
    from ..validate import validate

    from ..errors import ValidateError
    from ..validate.report import print_report

    try:
        with renderer(verbose=verbose, quiet=quiet) as events:
            result = validate(load(recipe, stage="validate"), output_dir=output_dir, events=events)
    except ValidateError as exc:
        if getattr(exc, "metrics", None) is not None:  # the tables of what failed, then the one-line error
            print_report(exc.metrics, _table_console(), only_failures=quiet)  # type: ignore[attr-defined]
        raise
    if not quiet:
        print_report(result.metrics, _table_console())
    q, b = result.metrics.quantized, result.metrics.base
    mem = f", peak memory {human_bytes(b.peak_memory_bytes)} -> {human_bytes(q.peak_memory_bytes)}" if b and b.peak_memory_bytes is not None and q.peak_memory_bytes is not None else ""
    click.echo(f"validate passed: {len(result.metrics.modes)} mode runs ok{mem}; wrote {result.metrics_path}")


def _table_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    return console if console.is_terminal else Console(stderr=True, width=200, highlight=False)  # logs: cells not folded
