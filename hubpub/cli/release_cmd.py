"""`hubpub release` (`hubpub init` is in init_cmd.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._app import VERBOSE, StageChoice, cli, load, renderer

if TYPE_CHECKING:
    from ..events import StageEvent
    from ..release import ReleaseResult

STAGE_CHOICE = StageChoice()


@cli.command("release")
@click.argument("recipes", metavar="RECIPE...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--from", "from_stage", type=STAGE_CHOICE, help="Start at this stage (it always runs); earlier outputs are used as they are.")
@click.option("--until", "until_stage", type=STAGE_CHOICE, help="Stop after this stage.")
@click.option("--no-push", is_flag=True, help="Run quantize, validate and card; upload nothing.")
@click.option("--dry-run", is_flag=True, help="Show which stages would run and the push plan; write nothing.")
@click.option("--force", is_flag=True, help="Run every stage even when its inputs are unchanged.")
@click.option("--strict", is_flag=True, help="Quantize fails when a quantized linear sees no calibration data.")
@click.option("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co).")
@click.option("--tag", help="Tag for the release commit (default: the recipe's [push] tag).")
@click.option("--variant", metavar="NAME", help="Release only this [[variant]] of the recipe (default: every variant).")
@click.option("--on", "on", type=click.Choice(["local", "hf-jobs"]), default="local", show_default=True,
              help="Where to run: here, or as a Hugging Face Job per recipe (several recipes: parallel jobs).")
@click.option("--flavor", metavar="NAME", help="--on hf-jobs: hardware flavor (default: [jobs] flavor; `hubpub jobs flavors`).")
@click.option("--timeout", metavar="DURATION", help="--on hf-jobs: stop the job after this long, e.g. 2h, 90m (default: [jobs] timeout).")
@click.option("--detach", is_flag=True, help="--on hf-jobs: print the job id and return; follow with `hubpub jobs logs ID -f`.")
@VERBOSE
def release_command(
    recipes: tuple[str, ...],
    on: str,
    flavor: str | None,
    timeout: str | None,
    detach: bool,
    from_stage: str | None,
    until_stage: str | None,
    no_push: bool,
    dry_run: bool,
    force: bool,
    endpoint: str | None,
    tag: str | None,
    verbose: bool,
    variant: str | None = None,
    strict: bool = False,
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
      hubpub release recipes/a.toml recipes/b.toml --on hf-jobs --flavor a10g-small
    """
    if on == "hf-jobs":
        from .jobs_cmd import release_on_jobs

        return release_on_jobs(recipes, flavor=flavor, timeout=timeout, detach=detach, endpoint=endpoint, tag=tag,
                               push=not no_push, force=force, until_stage=until_stage, from_stage=from_stage, dry_run=dry_run)
    if len(recipes) > 1 or flavor or timeout or detach:
        raise click.UsageError("several recipes, --flavor, --timeout and --detach need --on hf-jobs")
    recipe = recipes[0]
    from ..release import release
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)  # URLs stay on one line
    loaded = load(recipe)
    if loaded.variants or variant:
        return _release_family(console, loaded, variant=variant, from_stage=from_stage, until_stage=until_stage,
                               push=not no_push, dry_run=dry_run, force=force, endpoint=endpoint, tag=tag, verbose=verbose,
                               strict=strict)
    from ..errors import ValidateError

    try:
        with renderer(verbose=verbose, on_stage=lambda event: _print_stage(console, event)) as events:
            result = release(loaded, from_stage=from_stage, until_stage=until_stage, push=not no_push, dry_run=dry_run,
                             force=force, endpoint=endpoint, tag=tag, events=events, strict=strict)
    except ValidateError as exc:
        if getattr(exc, "metrics", None) is not None:  # the tables of what failed, then the one-line error
            from ..validate.report import print_report
            from .validate_cmd import _table_console

            print_report(exc.metrics, _table_console(), only_failures=True)
        raise
    _print_summary(console, result)


def _release_family(console, recipe, *, variant: str | None, verbose: bool, **options) -> None:  # type: ignore[no-untyped-def]
    """A recipe with [[variant]] tables: every variant (or --variant NAME), then the family README."""
    from ..variants import release_family

    with renderer(verbose=verbose, on_stage=lambda event: _print_stage(console, event)) as events:
        result = release_family(recipe, variant, events=events,
                                on_variant=lambda name: console.print(f"[bold]variant {name}[/bold]"), **options)
    for name, one in result.results:
        console.print(f"[bold]== variant {name}[/bold]")
        _print_summary(console, one)
    if result.table is not None:
        from rich.table import Table

        table = Table(title=result.table.title, title_justify="left")
        for column in ("variant", "format", "bits/group", "size", "bits/weight", "latency", *result.table.columns, "gates", ""):
            table.add_column(column)
        for row in result.table.rows:
            table.add_row(row["name"], str(row.get("format", "—")), row["scheme"], row["size_text"], row["bpw_text"],
                          row["latency_text"], *[row["cells"].get(c, "—") for c in result.table.columns], row["verdict"],
                          "recommended" if row["recommended"] else "")
        console.print(table)
    if result.readme is not None:
        console.print(f"family README: {result.readme}")


def _print_stage(console, event: StageEvent) -> None:  # type: ignore[no-untyped-def]
    style = {"running": "bold", "ran": "green", "cached": "dim", "skipped": "dim", "would run": "yellow"}.get(event.status, "")
    took = f" in {event.seconds:.1f} s" if event.status == "ran" else ""
    why = f" ({event.reason})" if event.reason else ""
    label = "running..." if event.status == "running" else event.status + took
    text = f"{event.stage:<9} {label}{why}"
    console.print(f"[{style}]{text}[/{style}]" if style else text, markup=bool(style))


def _print_summary(console, result: ReleaseResult) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    if result.dry_run:
        console.print("[yellow]Dry run: nothing was written or uploaded.[/yellow]")
        if result.plan is not None:
            console.print("push plan:\n" + "\n".join(result.plan.lines()), markup=False)
        elif any(s.stage == "push" and s.status == "would run" for s in result.stages):
            console.print("push plan: made after the stages before it have run (their outputs change what is pushed)")
    for note in result.notes:
        console.print(note, markup=False)
    if result.headline:
        table = Table(title=f"Release of {result.recipe_path.name}", title_justify="left")
        for column in ("", "base", "quantized", "change"):
            table.add_column(column, justify="right" if column else "left")
        for row in result.headline:
            table.add_row(row.label, row.left_text, row.right_text, row.delta_text)
        console.print(table)
    if result.bytes_uploaded is not None:
        from ..units import human_bytes

        console.print(f"uploaded {human_bytes(result.bytes_uploaded)}")
    if result.repo_url:
        tag = f" (tag {result.tag})" if result.tag else ""
        console.print(f"[bold]{'would publish to' if result.dry_run else 'published'}: {result.repo_url}{tag}[/bold]")
        if result.commit_url and not result.dry_run:
            console.print(f"commit: {result.commit_url}")
    console.print(f"release folder: {result.output_dir}")


# `hubpub init` lives in init_cmd.py.
