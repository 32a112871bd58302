"""`hubpub sweep`."""

from __future__ import annotations

import click

from ._app import RECIPE, VERBOSE, cli, load, renderer


@cli.command("sweep")
@RECIPE
@click.option("--grid", "grids", multiple=True, metavar="FIELD=[V1,V2,...]",
              help="A [quantize] field and the values to try, e.g. 'group_size=[32,64]'; repeat for more fields"
                   " (replaces that field of the recipe's [sweep] grid).")
@click.option("--pick", metavar="BOUNDS", help="Choose the smallest passing point within bounds, e.g."
                                               " 'max_size_mb=120,min_top1=0.85' (default: [sweep] pick).")
@click.option("--write", "write", type=click.Path(dir_okay=False), default=None,
              help="With a pick: where to write the picked recipe (default: <recipe stem>.picked.toml beside it).")
@click.option("--force", is_flag=True, help="Quantize and validate every point even when cached.")
@VERBOSE
def sweep_command(recipe: str, grids: tuple[str, ...], pick: str | None, write: str | None, force: bool, verbose: bool) -> None:
    """Quantize and validate every point of a grid of [quantize] settings, compare them in one table
    with the Pareto front marked, and optionally pick one and write it back as a recipe.

    Each point is released up to validate into <output_dir>/sweep/<point>/ (cached per point;
    the base is measured once). The Pareto front is size vs the main quality metric: top-1
    agreement with a kl eval, else perplexity, else validity.

    \b
    Example:
      hubpub sweep recipe.toml --grid 'group_size=[32,64,128]' --grid 'method=[rtn,autoround]'
      hubpub sweep recipe.toml --grid 'group_size=[32,64]' --pick 'max_size_mb=120,min_top1=0.85'
    """
    from rich.console import Console

    from ..sweep import choose, parse_grid, pick_rule, plan, sweep, write_picked
    from .release_cmd import _print_stage

    loaded = load(recipe)
    grid = parse_grid(grids)
    pick = pick if pick is not None else loaded.sweep.pick
    rule = pick_rule(pick) if pick else None  # a bad rule fails here, before any work
    if write and rule is None:
        raise click.UsageError("--write needs --pick (or a [sweep] pick)")
    plan(loaded, grid)  # every point is checked before the first is built
    from ..check import preflight

    preflight(loaded, stage="release", model=False)
    console = Console(highlight=False, soft_wrap=True)
    with renderer(verbose=verbose, on_stage=lambda event: _print_stage(console, event)) as events:
        result = sweep(loaded, grid, force=force, events=events)
    _print_table(console, result)
    if rule is None:
        return
    chosen = choose(result, rule)
    from pathlib import Path

    path = write_picked(loaded, chosen, Path(write) if write else None, rule.text)
    console.print(f"[bold]picked: {chosen.name}[/bold] ({chosen.label})", highlight=False)
    console.print(f"wrote {path}; release it with: hubpub release {path}", markup=False)


def _print_table(console, result) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from ..card.numbers import format_value
    from ..units import human_bytes, human_duration

    table = Table(title=f"Sweep of {result.recipe_path.name} ({len(result.points)} points)", title_justify="left")
    for column in ("point", "settings", "size", "bits/weight", "latency", *result.columns, "gates", "Pareto"):
        table.add_column(column, justify="right" if column in ("size", "bits/weight", "latency") else "left")
    for p in result.points:
        r = p.row
        infos = {q["metric"]: q for q in r.get("quality", [])}
        cells = []
        for metric in result.columns:
            q = infos.get(metric)
            cells.append("—" if q is None or q["value"] is None else format_value(q["value"], "metric", info=q["info"]))
        gates = "not measured" if "passed" not in r else ("pass" if r["passed"] else "FAIL")
        table.add_row(p.name, p.label, human_bytes(r["size_bytes"]) if r.get("size_bytes") is not None else "—",
                      f"{r['bits_per_weight']:.2f}" if r.get("bits_per_weight") is not None else "—",
                      human_duration(r["latency_s"]) if r.get("latency_s") is not None else "—",
                      *cells, gates, "*" if p.front else "")
    console.print(table)
    console.print(result.rule_text(), markup=False)
    console.print("Pareto front: " + (", ".join(p.name for p in result.front) or "none (nothing measured)"), markup=False)
    console.print(f"points: {result.output_dir}", markup=False)
