"""`hubpub sweep`: quantize + validate every point of a grid of [quantize] settings, compare them,
mark the Pareto front and pick one under a budget, written back as a recipe ready to release.

The grid comes from ``--grid 'group_size=[32,64]'`` options and/or the recipe's ``[sweep]``
table (``grid = { group_size = [32, 64] }``; a ``--grid`` field replaces the table's). Every point
is a ``[[variant]]`` built by :mod:`hubpub.variants` (so every recipe validator runs on it) and
released up to validate into ``<output_dir>/sweep/<point>/`` (each stage cached per point folder;
the base is measured once: the points share the recipe's base cache).

Pareto front: a point is on it when no other point is at most as large (weight bytes) and at
least as good on the main quality metric, and strictly better on one of the two. The main metric
is ``top1_agreement`` (higher is better) when the recipe has a ``kl`` eval, else ``perplexity``
(lower is better) when an eval reports it, else validity (``passed``: gates met).

The pick rule (``--pick 'max_size_mb=120,min_top1=0.85'``, :func:`hubpub.variants.parse_pick`)
chooses the smallest point that passes its gates and meets every bound.
"""

from __future__ import annotations

import itertools
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HubpubError, RecipeError, ValidateError
from .events import Notice, emit, step

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from .events import EventSink
    from .recipe import Recipe, SweepSection
    from .variants import Rule

GRID_EXAMPLE = "--grid 'group_size=[32,64]' (a [quantize] field, '=', then the values in [...] separated by commas)"
SWEEP_DIR = "sweep"
# short forms for point names: group_size=32,method=rtn -> g32-rtn
ABBREV = {"group_size": "g", "bits": "w", "iters": "i", "nsamples": "n", "seqlen": "s", "batch_size": "b"}
_BARE = re.compile(r"^[A-Za-z0-9_.:+/-]+$")


class SweepError(HubpubError):
    """A sweep's grid or pick rule is wrong, or nothing satisfies the pick rule."""

    stage = "sweep"


# ----------------------------------------------------------------------------- the grid
def grid_fields() -> list[str]:
    """The names a grid may vary: [quantize] fields and every backend's settings."""
    from .quantize.backends import backends, setting_names
    from .recipe import QuantizeSection

    known = [f.alias or n for n, f in QuantizeSection.model_fields.items()]
    return known + sorted({s for b in backends for s in setting_names(b)} - set(known))


def field_problem(name: str) -> str | None:
    from .recipe import _did_you_mean

    fields = grid_fields()
    if name in fields:
        return None
    return f"unknown [quantize] field {name!r}{_did_you_mean(name, fields)}"


def section_problem(section: "SweepSection") -> tuple[tuple[Any, ...], str, Any] | None:
    """[sweep]'s own check (recipe.py calls it): known fields, non-empty lists, a valid pick rule."""
    for name, values in section.grid.items():
        bad = field_problem(name)
        if bad:
            return ("grid", name), bad.replace("unknown [quantize] field", "unknown field", 1).replace(f" {name!r}", "", 1), values
        if not values:
            return ("grid", name), "give at least one value, e.g. group_size = [32, 64]", values
    if section.pick is not None:
        from .variants import parse_pick

        try:
            parse_pick(section.pick)
        except ValueError as exc:
            return ("pick",), str(exc).removeprefix("--pick: "), section.pick
    return None


def _value(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if not _BARE.match(text):
        raise ValueError(text)
    return text


def parse_grid(specs: list[str] | tuple[str, ...]) -> dict[str, list[Any]]:
    """['group_size=[32,64]', 'method=[rtn,autoround]'] -> {'group_size': [32, 64], 'method': ['rtn', 'autoround']}."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\[(.*)\]\s*$", spec, re.S)
        if not m:
            raise SweepError(f"--grid {spec!r}: must look like {GRID_EXAMPLE}")
        name, body = m.group(1), m.group(2)
        bad = field_problem(name)
        if bad:
            raise SweepError(f"--grid {spec!r}: {bad}")
        try:
            values = [_value(v) for v in body.split(",") if v.strip()]
        except ValueError as exc:
            raise SweepError(f"--grid {spec!r}: value {str(exc)!r} is not a number, true/false or a plain word;"
                             f" quote it, or see {GRID_EXAMPLE}") from None
        if not values:
            raise SweepError(f"--grid {spec!r}: no values; must look like {GRID_EXAMPLE}")
        if name in grid:
            raise SweepError(f"--grid {spec!r}: {name} is given twice; put all its values in one --grid")
        grid[name] = list(dict.fromkeys(values))
    return grid


def _name_part(name: str, value: Any) -> str:
    if name == "sym" and isinstance(value, bool):
        return "sym" if value else "asym"
    if isinstance(value, bool):
        return name if value else f"no-{name}"
    if name in ("method", "format"):
        return str(value)
    return f"{ABBREV.get(name, name)}{value}"


def point_name(settings: dict[str, Any]) -> str:
    """A folder-safe name for a point: {'group_size': 32, 'method': 'rtn'} -> 'g32-rtn'."""
    raw = "-".join(_name_part(k, v) for k, v in settings.items()) or "point"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip(".-") or "point"
    return re.sub(r"-{2,}", "-", name)[:64].rstrip(".-")


def point_label(settings: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in settings.items())


@dataclass
class Point:
    name: str  # the folder under <output_dir>/sweep/
    settings: dict[str, Any]
    recipe: "Recipe"
    seconds: float = 0.0
    ran: list[str] = field(default_factory=list)  # stages that ran (empty: all cached)
    error: str | None = None  # validate failed (gates), the numbers are still in the table
    row: dict[str, Any] = field(default_factory=dict)
    front: bool = False

    @property
    def label(self) -> str:
        return point_label(self.settings)


def resolve_grid(recipe: "Recipe", grid: dict[str, list[Any]] | None) -> dict[str, list[Any]]:
    merged = {**dict(recipe.sweep.grid), **(grid or {})}
    if not merged:
        raise SweepError(f"{recipe.path}: nothing to sweep; give {GRID_EXAMPLE}, or a [sweep] table with"
                         " grid = {{ group_size = [32, 64] }}".replace("{{", "{").replace("}}", "}"))
    return merged


def plan(recipe: "Recipe", grid: dict[str, list[Any]] | None = None) -> list[Point]:
    """Every grid point as a plain Recipe (built through hubpub.variants), checked before any work."""
    from pydantic import ValidationError

    from .recipe import Recipe, _validation_problems
    from .variants import expand_variants

    if recipe.variants:
        raise SweepError(f"{recipe.path}: has [[variant]] tables; sweep a recipe without them"
                         " (its [quantize] is where the grid starts)")
    grid = resolve_grid(recipe, grid)
    fields = list(grid)
    combos = [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]
    names: list[str] = []
    for combo in combos:
        name, n = point_name(combo), 2
        while name.lower() in (x.lower() for x in names):
            name, n = f"{point_name(combo)[:60]}-{n}", n + 1
        names.append(name)
    data = tomllib.loads(recipe.text) if recipe.text else recipe.model_dump(mode="python", by_alias=True, exclude_unset=True)
    for key in ("variant", "family", "sweep"):
        data.pop(key, None)
    data["output_dir"] = str(recipe.output_path / SWEEP_DIR)
    data["variant"] = [{"name": name, **combo} for name, combo in zip(names, combos)]
    try:
        parent = Recipe.model_validate(data, context={"base_dir": str(recipe.base_dir)})
    except ValidationError as exc:
        loc, msg = _validation_problems(exc)[0]
        if loc[:1] == ("variant",) and len(loc) >= 3 and isinstance(loc[1], int):
            where = ".".join(str(p) for p in loc[2:])
            raise SweepError(f"{recipe.path}: grid point {names[loc[1]]} ({point_label(combos[loc[1]])}):"
                             f" {where}: {msg}") from None
        raise SweepError(f"{recipe.path}: {'.'.join(map(str, loc))}: {msg}") from None
    parent._path = recipe.path
    parent._text = recipe.text
    shared = recipe._shared_work or recipe.work_path  # the base cache of the recipe itself
    points = []
    for name, combo, built in zip(names, combos, expand_variants(parent)):
        built._shared_work = shared
        points.append(Point(name, combo, built))
    return points


# ----------------------------------------------------------------------------- the comparison
def main_metric(recipe: "Recipe", rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """(metric, higher_is_better) the Pareto front and the table rank quality by."""
    if any(getattr(e, "kind", None) == "kl" for e in recipe.evals) and any(r.get("top1_agreement") is not None for r in rows):
        return "top1_agreement", True
    if any(r.get("perplexity") is not None for r in rows):
        return "perplexity", False
    return "passed", True


def pareto(rows: list[dict[str, Any]], metric: str, higher: bool) -> list[int]:
    """Indices of the rows no other row dominates (smaller-or-equal size, better-or-equal metric, one strictly)."""
    def good(r: dict[str, Any]) -> float | None:
        v = r.get(metric)
        return None if v is None else (v if higher else -v)

    front = []
    for i, r in enumerate(rows):
        if r.get("size_mb") is None or good(r) is None:
            continue
        dominated = any(
            j != i and o.get("size_mb") is not None and good(o) is not None
            and o["size_mb"] <= r["size_mb"] and good(o) >= good(r)  # type: ignore[operator]
            and (o["size_mb"] < r["size_mb"] or good(o) > good(r))  # type: ignore[operator]
            for j, o in enumerate(rows))
        if not dominated:
            front.append(i)
    return front


@dataclass
class SweepResult:
    recipe_path: Path
    output_dir: Path  # <output_dir>/sweep
    points: list[Point]
    metric: str
    higher_is_better: bool
    columns: list[str]  # quality metric names, in order

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [p.row for p in self.points]

    @property
    def front(self) -> list[Point]:
        return [p for p in self.points if p.front]

    def rule_text(self) -> str:
        better = "higher" if self.higher_is_better else "lower"
        what = "validity (gates met)" if self.metric == "passed" else self.metric
        return f"Pareto front: smaller weight size vs {better} {what}; a point is on it when no other is both at most as large and at least as good"


def sweep(
    recipe: "Recipe",
    grid: dict[str, list[Any]] | None = None,
    *,
    force: bool = False,
    events: "EventSink | None" = None,
    progress: bool = True,  # compat: ignored, progress goes through events
) -> SweepResult:
    """Quantize + validate every grid point (each stage cached in its point folder), then measure
    and compare them. A point that fails validation stays in the table with its gates failed."""
    from .release import release
    from .units import human_duration
    from .variants import measured_row

    points = plan(recipe, grid)
    total = len(points)
    started = time.perf_counter()
    with step(events, "sweep", "points", total=total, unit="point") as s:
        for i, point in enumerate(points, 1):
            done = i - 1
            if done:
                per = (time.perf_counter() - started) / done
                pace = f"{human_duration(per)} per point, about {human_duration(per * (total - done))} left"
            else:
                pace = "first point"
            emit(events, Notice("sweep", f"point {i}/{total}: {point.name} ({point.label}; {pace})"))
            t0 = time.perf_counter()
            try:
                result = release(point.recipe, until_stage="validate", push=False, force=force, events=events)
                point.ran = result.ran
            except ValidateError as exc:
                point.error = str(exc).splitlines()[0] if str(exc) else "validation failed"
                point.ran = ["validate"]
                emit(events, Notice("sweep", f"point {point.name}: {point.error}", level="warning"))
            point.seconds = time.perf_counter() - t0
            s.advance(item=point.name)
    columns: list[str] = []
    for point in points:
        point.row = measured_row(point.name, point.recipe.output_path)
        point.row["label"] = point.label
        for q in point.row.get("quality", []):
            if q["metric"] not in columns:
                columns.append(q["metric"])
    metric, higher = main_metric(recipe, [p.row for p in points])
    for i in pareto([p.row for p in points], metric, higher):
        points[i].front = True
    return SweepResult(recipe.path, recipe.output_path / SWEEP_DIR, points, metric, higher, columns)


# ----------------------------------------------------------------------------- picking
def pick_rule(text: str) -> "Rule":
    from .variants import parse_pick

    try:
        return parse_pick(text)
    except ValueError as exc:
        msg = str(exc)
        raise SweepError(msg if msg.startswith("--pick") else f"--pick {text}: {msg}") from None


def _short(metric: str) -> str:
    from .variants import ALIASES

    return next((k for k, v in ALIASES.items() if v == metric), metric)


def describe(row: dict[str, Any], metrics: list[str]) -> str:
    from .units import human_bytes

    parts = []
    for metric in dict.fromkeys(["size_mb", *metrics]):
        value = row.get(metric)
        if metric == "size_mb":
            parts.append(f"size {human_bytes(row['size_bytes'])}" if row.get("size_bytes") is not None else "size not measured")
        else:
            parts.append(f"{_short(metric)} {value:.3g}" if value is not None else f"{_short(metric)} not measured")
    if not row.get("passed"):
        parts.append("gates failed" if "passed" in row else "not validated")
    return f"{row['name']} ({', '.join(parts)})"


def choose(result: SweepResult, rule: "Rule") -> Point:
    """The smallest point that passes its gates and meets every bound; else SweepError naming the closest."""
    candidates = [p for p in result.points if p.row.get("passed")]
    picked = rule.pick([p.row for p in candidates])
    if picked is not None:
        return next(p for p in candidates if p.row is picked)
    metrics = [c.metric for c in rule.conditions]
    closest = sorted(result.rows, key=lambda r: (not r.get("passed"), sum(c.miss(r) for c in rule.conditions)))[:3]
    raise SweepError(f"--pick {rule.text}: no point satisfies it; closest: " + ", ".join(describe(r, metrics) for r in closest))


def picked_path(recipe: "Recipe") -> Path:
    return recipe.path.with_name(f"{recipe.path.stem}.picked.toml")


def picked_text(recipe: "Recipe", point: Point, rule_text: str | None = None) -> str:
    """The recipe's own text (comments kept) with the point's [quantize] fields set and [sweep] dropped."""
    import tomlkit

    doc = tomlkit.parse(recipe.text)
    if "quantize" not in doc:
        doc.add("quantize", tomlkit.table())
    table = doc["quantize"]
    for name, value in point.settings.items():
        table[name] = value  # type: ignore[index]
    if "sweep" in doc:
        del doc["sweep"]
    why = f" under --pick '{rule_text}'" if rule_text else ""
    head = (f"# Picked by `hubpub sweep {recipe.path.name}`{why}: point {point.name} ({point.label}).\n"
            f"# Its measurements: {point.recipe.output_path}\n")
    return head + tomlkit.dumps(doc)


def write_picked(recipe: "Recipe", point: Point, path: Path | None = None, rule_text: str | None = None) -> Path:
    """Write the picked recipe (default ``<recipe stem>.picked.toml`` beside the recipe) and load it
    back: it must be a valid recipe with the point's settings, else nothing is left behind."""
    from . import artifacts
    from .recipe import load_recipe

    target = Path(path) if path is not None else picked_path(recipe)
    if target.resolve() == recipe.path.resolve():
        raise SweepError(f"--write {target}: that is the recipe itself; write the picked recipe to another file")
    if target.exists() and target.is_dir():
        raise SweepError(f"--write {target}: is a folder; give a file name like {picked_path(recipe).name}")
    if not target.parent.is_dir():
        raise SweepError(f"--write {target}: folder {target.parent} does not exist")
    artifacts.write_atomic(target, picked_text(recipe, point, rule_text))
    try:
        loaded = load_recipe(target)
    except RecipeError:
        target.unlink(missing_ok=True)
        raise
    dumped = loaded.quantize.model_dump(mode="python", by_alias=True)
    if loaded.quantize._settings is not None:
        dumped.update(loaded.quantize._settings.model_dump(mode="python", by_alias=True))
    wrong = {k: v for k, v in point.settings.items() if dumped.get(k) != v}
    if wrong:  # pragma: no cover - a tomlkit round-trip problem
        target.unlink(missing_ok=True)
        raise SweepError(f"--write {target}: the written recipe does not set {wrong}; nothing was written")
    return target


__all__ = ["Point", "SweepError", "SweepResult", "choose", "main_metric", "pareto", "parse_grid", "pick_rule",
           "plan", "point_name", "sweep", "write_picked"]
