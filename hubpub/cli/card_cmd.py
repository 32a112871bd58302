"""`hubpub card` and `hubpub templates export`."""

from __future__ import annotations

import click

from ._app import RECIPE, cli, load


@cli.command("card")
@RECIPE
@click.option(
    "--template-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder whose templates override the built-ins by file name (default: [card] template_dir).",
)
@click.option(
    "--previous",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the previous release (hubpub_metrics.json + hubpub_recipe.toml) for the history section.",
)
def card_command(recipe: str, template_dir: str | None, previous: str | None) -> None:
    """Render README.md (and plots) from the manifest and the measured metrics.

    Needs hubpub_manifest.json (`hubpub quantize`) and hubpub_metrics.json (`hubpub validate`)
    in the output folder. Nothing is downloaded; torch is not imported.

    \b
    Example:
      hubpub card recipes/demo.toml
      hubpub card recipes/demo.toml --template-dir my_templates --previous out/v1
    """
    from ..card import render_card

    result = render_card(load(recipe, stage="card"), template_dir=template_dir, previous=previous)
    plots = f", {len(result.plots)} plot{'s' if len(result.plots) != 1 else ''}" if result.plots else ""
    click.echo(f"Wrote {result.path} ({len(result.text.splitlines())} lines{plots})")


@cli.group("templates")
def templates_group() -> None:
    """Work with the card templates.

    \b
    Example:
      hubpub templates export my_templates
    """


@templates_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite templates that already exist in DIRECTORY.")
def export_command(directory: str, force: bool) -> None:
    """Copy the built-in card templates into DIRECTORY to customize them.

    Edit README.md.j2 there (it extends base.md.j2; override any block), then render with
    `hubpub card RECIPE --template-dir DIRECTORY` or set [card] template_dir.

    \b
    Example:
      hubpub templates export my_templates
      hubpub card recipes/demo.toml --template-dir my_templates
    """
    from ..card import export_templates

    written = export_templates(directory, force=force)
    click.echo(f"Exported {len(written)} templates to {directory}")
