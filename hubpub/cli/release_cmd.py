"""`hubpub release` and `hubpub init`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ._app import RECIPE, cli, load

if TYPE_CHECKING:
    from ..release import ReleaseResult, StageOutcome

STAGE_CHOICE = click.Choice(["quantize", "validate", "card", "push"])


@cli.command("release")
@RECIPE
@click.option("--from", "from_stage", type=STAGE_CHOICE, help="Start at this stage (it always runs); earlier outputs are used as they are.")
@click.option("--until", "until_stage", type=STAGE_CHOICE, help="Stop after this stage.")
@click.option("--no-push", is_flag=True, help="Run quantize, validate and card; upload nothing.")
@click.option("--dry-run", is_flag=True, help="Show which stages would run and the push plan; write nothing.")
@click.option("--force", is_flag=True, help="Run every stage even when its inputs are unchanged.")
@click.option("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co).")
@click.option("--tag", help="Tag for the release commit (default: the recipe's [push] tag).")
def release_command(
    recipe: str,
    from_stage: str | None,
    until_stage: str | None,
    no_push: bool,
    dry_run: bool,
    force: bool,
    endpoint: str | None,
    tag: str | None,
) -> None:
    """Quantize, validate, write the card and push, skipping stages whose inputs are unchanged.

    Each stage's inputs are hashed; a stage whose inputs and outputs match the last run is
    cached (edit a card template: only card and push run; change group_size: all of them).
    The token comes from HF_TOKEN or `hf auth login` and is never printed.

    \b
    Example:
      hubpub release recipes/demo.toml --endpoint http://127.0.0.1:8765
      hubpub release recipes/demo.toml --dry-run
      hubpub release recipe.toml --from card --no-push
      hubpub release recipe.toml --tag "$GITHUB_REF_NAME"
    """
    from ..release import release
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # URLs stay on one line
    result = release(
        load(recipe),
        from_stage=from_stage,
        until_stage=until_stage,
        push=not no_push,
        dry_run=dry_run,
        force=force,
        endpoint=endpoint,
        tag=tag,
        on_stage=lambda outcome: _print_stage(console, outcome),
    )
    _print_summary(console, result)


def _print_stage(console, outcome: StageOutcome) -> None:  # type: ignore[no-untyped-def]
    style = {"running": "bold", "ran": "green", "cached": "dim", "skipped": "dim", "would run": "yellow"}[outcome.status]
    took = f" in {outcome.seconds:.1f} s" if outcome.status == "ran" else ""
    why = f" ({outcome.reason})" if outcome.reason else ""
    label = "running..." if outcome.status == "running" else outcome.status + took
    console.print(f"[{style}]{outcome.stage:<9} {label}{why}[/{style}]")


def _print_summary(console, result: ReleaseResult) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    if result.dry_run:
        console.print("[yellow]Dry run: nothing was written or uploaded.[/yellow]")
        if result.plan is not None:
            console.print("\n".join(result.plan.lines()), markup=False)
    if result.headline:
        table = Table(title=f"Release of {result.recipe_path.name}", title_justify="left")
        for column in ("", "base", "quantized", "change"):
            table.add_column(column, justify="right" if column else "left")
        for row in result.headline:
            table.add_row(row.label, row.left_text, row.right_text, row.delta_text)
        console.print(table)
    if result.bytes_uploaded is not None:
        from ..card.numbers import human_bytes

        console.print(f"uploaded {human_bytes(result.bytes_uploaded)}")
    if result.repo_url:
        tag = f" (tag {result.tag})" if result.tag else ""
        console.print(f"[bold]{'would publish to' if result.dry_run else 'published'}: {result.repo_url}{tag}[/bold]")
        if result.commit_url and not result.dry_run:
            console.print(f"commit: {result.commit_url}")
    console.print(f"release folder: {result.output_dir}")


@cli.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init_command(directory: Path, force: bool) -> None:
    """Start a repo that releases models with hubpub: a recipe and a GitHub Actions workflow.

    Writes recipes/model.toml (edit source and repo_id) and .github/workflows/hubpub-release.yml,
    which runs `hubpub release` for every recipes/*.toml when you push a tag like v1.0.
    Existing files are left alone unless --force is given.

    \b
    Example:
      hubpub init my-models
      cd my-models && hubpub check recipes/model.toml
      git tag v1 && git push --tags
    """
    from ..init import init

    result = init(directory, force=force)
    for path in result.written:
        click.echo(f"wrote {path}")
    click.echo(result.next_steps)
