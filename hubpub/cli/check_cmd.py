"""`hubpub check`: parse and check recipes without running anything."""

from __future__ import annotations

import click

from ._app import cli, load


@cli.command("check")
@click.argument("recipes", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check_command(recipes: tuple[str, ...]) -> None:
    """Check recipe files: TOML syntax, field names, values. Runs no model.

    Each problem is reported with file, line, field path and how to fix it.

    \b
    Example:
      hubpub check recipes/*.toml
    """
    for path in recipes:
        recipe = load(path)
        q = recipe.quantize
        kind = recipe.model.source_kind(recipe.base_dir)
        split = f", split at {q.split.prefix!r}" if q.split else ""
        click.echo(
            f"{path}: ok - {kind} source {recipe.model.source!r}, {q.method} W{q.bits}A16 "
            f"group_size {q.group_size} {'sym' if q.sym else 'asym'} -> {q.format}{split}; output {recipe.output_path}"
        )
