"""Variants: one recipe, several checkpoints (``[[variant]]`` tables), compared in one table.

``expand_variants(recipe)`` turns a recipe with ``[[variant]]`` tables into one plain Recipe per
variant: the parent's TOML with the variant's [quantize] (and [push]) overrides merged in,
re-validated by the normal recipe loader (so every validator runs), released into
``<output_dir>/<variant name>/``. ``release_family(recipe)`` runs :func:`hubpub.release.release`
for each variant: first up to validate for all (the base is measured once: validate's base cache
is shared by the family), then card and push with the family table in every card, then writes
the family README (``<output_dir>/README.md``) with the comparison table.

The "recommended" column comes from a rule (``[family] recommend``) in a small grammar; nothing
is evaluated as code::

    smallest [where COND (and COND)*]        smallest file
    fastest  [where ...]                     lowest latency
    lowest METRIC / highest METRIC [where ...]
    COND := METRIC (>= | <= | > | < | ==) NUMBER

METRIC is a column name: ``size_mb``, ``bits_per_weight``, ``memory_mb``, ``latency_s``,
``passed`` (1 or 0), any eval metric (``top1_agreement``, ``kl``, ``perplexity``...) and
``<metric>_delta`` (its change vs the base, relative or absolute as the eval kind declares).
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ReleaseError, ValidateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from .events import EventSink
    from .recipe import Recipe
    from .release import ReleaseResult

VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PUSH_OVERRIDES = ("repo_id", "revision", "tag", "private", "commit_message")
FAMILY_FILE = "hubpub_family.json"


def name_problem(name: str) -> str | None:
    if not VARIANT_NAME.match(name) or name.endswith((".", ".lock")) or ".." in name:
        return (f"must be a folder name of letters, digits, '.', '_' or '-' (at most 64, not starting with '.' or '-');"
                f" it names the variant's release folder <output_dir>/<name>/ (got {name!r})")
    return None


# ----------------------------------------------------------------------------- checking
def _nested(loc: tuple[Any, ...], msg: str, value: Any = None) -> Exception:
    """A pydantic error placed at loc under the recipe root (recipe.py's hubpub_nested errors)."""
    from pydantic_core import PydanticCustomError

    return PydanticCustomError("hubpub_nested", "{message}", {"message": msg, "error": {"type": "value_error", "loc": loc, "msg": msg, "input": value}})


def _raw_quantize(recipe: "Recipe") -> dict[str, Any]:
    """The [quantize] keys the recipe file set (backend settings included)."""
    q = recipe.quantize
    raw = q.model_dump(mode="python", exclude_unset=True, by_alias=True)
    if q._settings is not None:
        raw.update(q._settings.model_dump(mode="python", exclude_unset=True, by_alias=True))
    return raw


def check_variants(recipe: "Recipe") -> None:
    """Every variant's overrides are known [quantize] / [push] fields, names are unique and each merged
    [quantize] is valid. Raises the first problem at ``variant[i].<field>`` (called by the Recipe's validator)."""
    from pydantic import ValidationError

    from .quantize.backends import backends, setting_names
    from .recipe import PushSection, QuantizeSection, _did_you_mean, _unnest

    known = [f.alias or n for n, f in QuantizeSection.model_fields.items()]
    settings = sorted({s for b in backends for s in setting_names(b)})
    seen: dict[str, int] = {}
    parent_q = _raw_quantize(recipe)
    parent_push = recipe.push.model_dump(mode="python", exclude_unset=True)
    for i, variant in enumerate(recipe.variants):
        key = variant.name.lower()
        if key in seen:
            raise _nested(("variant", i, "name"), f"variant name {variant.name!r} is used by variant[{seen[key]}] too;"
                          " each variant needs its own name (it is its release folder)", variant.name)
        seen[key] = i
        for field_name, value in variant.overrides.items():
            if field_name not in known and field_name not in settings:
                raise _nested(("variant", i, field_name), f"unknown field{_did_you_mean(field_name, known + settings)}"
                              " (a variant overrides [quantize] fields, or [push] ones in [variant.push])", value)
        for field_name, value in variant.push.items():
            if field_name not in PUSH_OVERRIDES:
                raise _nested(("variant", i, "push", field_name), f"unknown field{_did_you_mean(field_name, PUSH_OVERRIDES)}", value)
        merged = {**parent_q, **variant.overrides}
        try:
            QuantizeSection.model_validate(merged)
        except ValidationError as exc:
            err = _unnest(exc.errors(include_url=False))[0]
            where = next((p for p in err["loc"] if isinstance(p, str)), None)
            loc = ("variant", i, where) if where in variant.overrides else ("variant", i, next(iter(variant.overrides), "name"))
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise _nested(loc, f"{'quantize.' + where + ': ' if where and where not in variant.overrides else ''}{msg}", err.get("input")) from None
        if variant.push:
            try:
                PushSection.model_validate({**parent_push, **variant.push})
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = next((p for p in err["loc"] if isinstance(p, str)), "repo_id")
                raise _nested(("variant", i, "push", where), str(err["msg"]).removeprefix("Value error, "), err.get("input")) from None
    if recipe.family.recommend:
        parse_rule(recipe.family.recommend)


# ----------------------------------------------------------------------------- expanding
def variant_names(recipe: "Recipe") -> list[str]:
    return [v.name for v in recipe.variants]


def expand_variants(recipe: "Recipe") -> list["Recipe"]:
    """One plain Recipe per [[variant]] (none: [recipe] itself), output in <output_dir>/<name>/."""
    from pydantic import ValidationError

    from .recipe import Recipe, _line_index, _problem, _validation_problems, ensure_eval_kinds, problems_error

    if not recipe.variants:
        return [recipe]
    data = tomllib.loads(recipe.text) if recipe.text else recipe.model_dump(mode="python", by_alias=True, exclude_unset=True)
    for key in ("variant", "family"):
        data.pop(key, None)
    family_out = recipe.output_path
    ensure_eval_kinds()
    out: list[Recipe] = []
    for i, variant in enumerate(recipe.variants):
        d = copy.deepcopy(data)
        d.setdefault("quantize", {}).update(copy.deepcopy(variant.overrides))
        if variant.push:
            d.setdefault("push", {}).update(copy.deepcopy(variant.push))
        d["output_dir"] = str(family_out / variant.name)
        try:
            built = Recipe.model_validate(d, context={"base_dir": str(recipe.base_dir)})
        except ValidationError as exc:  # pragma: no cover - check_variants catches these first
            index = _line_index(recipe.text)
            problems = [_problem(str(recipe.path), index, ("variant", i, *loc[1:]) if loc[:1] == ("quantize",) else loc, msg)
                        for loc, msg in _validation_problems(exc)]
            raise problems_error(problems) from None
        built._path = recipe.path
        built._text = recipe.text
        built._shared_work = recipe.work_path
        out.append(built)
    return out


def select_variants(recipe: "Recipe", variant: str | None) -> list["Recipe"]:
    recipes = expand_variants(recipe)
    if variant is None:
        return recipes
    names = variant_names(recipe)
    if not names:
        raise ReleaseError(f"--variant {variant}: {recipe.path} has no [[variant]] tables; drop --variant")
    if variant not in names:
        from .recipe import _did_you_mean

        raise ReleaseError(f"--variant {variant}: {recipe.path} has no such variant{_did_you_mean(variant, names)}")
    return [recipes[names.index(variant)]]


# ----------------------------------------------------------------------------- rules
_COND = re.compile(r"^\s*([a-z_][a-z0-9_]*)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|true|false)\s*$")
_OBJECTIVE = re.compile(r"^\s*(smallest|fastest|(?:lowest|highest)\s+([a-z_][a-z0-9_]*))\s*(?:where\s+(.+))?$", re.S)
ALIASES = {"top1": "top1_agreement", "size": "size_mb", "ppl": "perplexity", "bpw": "bits_per_weight",
           "latency": "latency_s", "memory": "memory_mb"}


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    def holds(self, row: dict[str, Any]) -> bool | None:
        got = row.get(self.metric)
        if got is None:
            return None
        return {">=": got >= self.value, "<=": got <= self.value, ">": got > self.value, "<": got < self.value,
                "==": got == self.value}[self.op]

    def miss(self, row: dict[str, Any]) -> float:
        """How far row is from meeting it (0 when it holds), in units of the threshold."""
        got = row.get(self.metric)
        if got is None:
            return float("inf")
        if self.holds(row):
            return 0.0
        return abs(got - self.value) / (abs(self.value) or 1.0)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Rule:
    order_by: str  # the column minimised or maximised
    maximize: bool
    conditions: tuple[Condition, ...]
    text: str

    def ok(self, row: dict[str, Any]) -> bool:
        return all(c.holds(row) for c in self.conditions)

    def pick(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        fits = [r for r in rows if self.ok(r) and r.get(self.order_by) is not None]
        if not fits:
            return None
        return (max if self.maximize else min)(fits, key=lambda r: r[self.order_by])

    def closest(self, rows: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: sum(c.miss(r) for c in self.conditions))[:n]


def _metric(name: str) -> str:
    return ALIASES.get(name, name)


def _number(text: str) -> float:
    return 1.0 if text == "true" else 0.0 if text == "false" else float(text)


def parse_rule(text: str) -> Rule:
    """'smallest where top1_agreement >= 0.9 and kl <= 0.2' -> Rule. ValueError says what is wrong."""
    m = _OBJECTIVE.match(text)
    if not m:
        raise ValueError(f"must look like 'smallest where top1_agreement >= 0.9' (smallest | fastest | lowest METRIC |"
                         f" highest METRIC, then optionally 'where' conditions joined by 'and'); got {text!r}")
    head, metric, where = m.group(1), m.group(2), m.group(3)
    if head == "smallest":
        order_by, maximize = "size_mb", False
    elif head == "fastest":
        order_by, maximize = "latency_s", False
    else:
        order_by, maximize = _metric(metric), head.startswith("highest")
    conditions = []
    for part in re.split(r"\s+and\s+", where.strip()) if where else []:
        c = _COND.match(part)
        if not c:
            raise ValueError(f"condition {part.strip()!r} must look like 'METRIC >= NUMBER' (operators >= <= > < ==)")
        conditions.append(Condition(_metric(c.group(1)), c.group(2), _number(c.group(3))))
    return Rule(order_by, maximize, tuple(conditions), text)


def parse_pick(text: str) -> Rule:
    """`hubpub sweep --pick 'max_size_mb=120,min_top1=0.85'`: max_X caps X, min_X floors it; the
    smallest point that satisfies every bound is picked."""
    conditions = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        m = re.match(r"^(max|min)_([a-z_][a-z0-9_]*)\s*=\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)$", part)
        if not m:
            raise ValueError(f"--pick: {part!r} must look like max_size_mb=120 or min_top1=0.85")
        conditions.append(Condition(_metric(m.group(2)), "<=" if m.group(1) == "max" else ">=", float(m.group(3))))
    if not conditions:
        raise ValueError("--pick: give at least one bound, e.g. 'max_size_mb=120,min_top1=0.85'")
    return Rule("size_mb", False, tuple(conditions), text)


# ----------------------------------------------------------------------------- the table
def measured_row(name: str, out: Path) -> dict[str, Any]:
    """One variant's numbers from its release folder (manifest + metrics), as rule columns."""
    from . import artifacts
    from .card.numbers import delta_value
    from .stage_table import read_manifest, read_metrics

    manifest, metrics = read_manifest(out), read_metrics(out)
    row: dict[str, Any] = {"name": name, "folder": str(out)}
    if manifest is None:
        return row
    size = metrics.quantized.weight_bytes if metrics else manifest.bytes_after
    params = manifest.bytes_before / 2 if manifest.bytes_before else None  # the base is 16-bit
    row.update(format=manifest.format, method=manifest.method, bits=manifest.bits, group_size=manifest.group_size,
               sym=manifest.sym, size_bytes=size, size_mb=size / 1e6,
               bits_per_weight=(8 * size / params) if params else None)
    if metrics is None:
        return row
    q, b = metrics.quantized, metrics.base
    row.update(passed=1.0 if metrics.passed else 0.0,
               memory_mb=q.peak_memory_bytes / 1e6 if q.peak_memory_bytes else None, latency_s=q.latency_s,
               base_latency_s=b.latency_s if b else None, base_memory_mb=(b.peak_memory_bytes / 1e6 if b and b.peak_memory_bytes else None))
    quality = []
    for ev in metrics.evals:
        for metric, values in ev.metrics.items():
            info = ev.display.get(metric)
            base_v, quant_v = values.get("base"), values.get("quantized")
            row[metric] = quant_v
            change = delta_value(base_v, quant_v, "metric", info) if base_v is not None else None
            row[f"{metric}_delta"] = change
            quality.append({"metric": metric, "label": (info.label if info and info.label else metric.replace("_", " ")),
                            "base": base_v, "value": quant_v, "delta": change, "info": info})
    row["quality"] = quality
    row["_artifact"] = artifacts.METRICS
    return row


@dataclass
class FamilyTable:
    """What the family README and every variant's card show."""

    title: str
    rows: list[dict[str, Any]]  # measured_row() + text cells + link
    columns: list[str]  # quality column labels, in order
    recommended: str | None
    rule: str | None
    note: str = ""

    def for_card(self, current: str | None) -> dict[str, Any]:
        def href(link: str | None) -> str | None:
            if link is None or "://" in link or current is None:
                return link
            return "../" + link  # a card in <variant>/ links to a sibling folder beside it

        rows = [dict({k: v for k, v in r.items() if not k.startswith("_") and k != "quality"}, current=(r["name"] == current),
                     href=href(r.get("link"))) for r in self.rows]
        return {"title": self.title, "rows": rows,
                "columns": self.columns, "recommended": self.recommended, "rule": self.rule, "note": self.note,
                "current": current}

    def digest(self) -> str:
        from .stages import digest

        return digest([{k: v for k, v in r.items() if not k.startswith("_") and k != "quality"} for r in self.rows],
                      self.columns, self.recommended)


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def family_table(recipe: "Recipe", recipes: list["Recipe"], *, endpoint: str | None = None) -> FamilyTable:
    from . import units
    from .card.numbers import format_delta_value, format_value

    rows = []
    columns: list[str] = []
    for variant, r in zip(recipe.variants, recipes):
        row = measured_row(variant.name, r.output_path)
        for qual in row.get("quality", []):
            if qual["label"] not in columns:
                columns.append(qual["label"])
        cells = {}
        for qual in row.get("quality", []):
            value = format_value(qual["value"], "metric", info=qual["info"])
            delta = format_delta_value(qual["delta"], "metric", info=qual["info"]) if qual["delta"] is not None else ""
            cells[qual["label"]] = f"{value} ({delta})" if delta else value
        row.update(
            scheme=(f"W{row['bits']} g{row['group_size']}{'' if row.get('sym', True) else ' asym'}" if "bits" in row else "—"),
            size_text=units.human_bytes(row["size_bytes"]) if row.get("size_bytes") is not None else "—",
            bpw_text=_cell(row.get("bits_per_weight"), "{:.2f}"),
            memory_text=units.human_bytes(row["memory_mb"] * 1e6) if row.get("memory_mb") is not None else "—",
            latency_text=units.human_duration(row["latency_s"]) if row.get("latency_s") is not None else "—",
            verdict="not measured" if "passed" not in row else ("pass" if row["passed"] else "FAIL"),
            cells=cells, link=sibling_link(recipe, variant.name, r, endpoint=endpoint),
        )
        rows.append(row)
    rule = parse_rule(recipe.family.recommend) if recipe.family.recommend else None
    recommended, note = None, ""
    if rule is not None:
        picked = rule.pick([r for r in rows if r.get("passed")])
        recommended = picked["name"] if picked else None
        if picked is None:
            note = f"no variant passes its gates and satisfies the rule '{rule.text}'"
    for row in rows:
        row["recommended"] = row["name"] == recommended
    title = recipe.family.title or f"{recipe.model.display_name} variants"
    return FamilyTable(title, rows, columns, recommended, recipe.family.recommend, note)


def layout_of(recipe: "Recipe") -> str:
    return getattr(recipe.push, "layout", "repos")


def sibling_link(recipe: "Recipe", name: str, variant: "Recipe", *, endpoint: str | None) -> str | None:
    """Where a reader finds the variant: its own repo, a subfolder or a branch of the family repo."""
    hub = (endpoint or "https://huggingface.co").rstrip("/")
    layout = layout_of(recipe)
    repo = variant.push.repo_id
    if layout == "subfolders":
        return f"{name}/"
    if not repo:
        return None
    if layout == "branches":
        return f"{hub}/{repo}/tree/{variant.push.revision}"
    return f"{hub}/{repo}"


def family_readme(recipe: "Recipe", table: FamilyTable) -> str:
    from .card.environment import render_template

    user_dir = recipe.resolve(recipe.card.template_dir) if recipe.card.template_dir else None
    body = render_template("_variants.md.j2", {"variants": table.for_card(None), "family_readme": True}, user_dir)
    return f"# {table.title}\n\n{body.strip()}\n"


# ----------------------------------------------------------------------------- the run
@dataclass
class FamilyResult:
    recipe_path: Path
    output_dir: Path
    results: list[tuple[str, "ReleaseResult"]]
    table: FamilyTable | None
    readme: Path | None
    dry_run: bool = False
    failed: list[str] = field(default_factory=list)


def release_family(
    recipe: "Recipe",
    variant: str | None = None,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    push: bool = True,
    dry_run: bool = False,
    force: bool = False,
    endpoint: str | None = None,
    tag: str | None = None,
    events: "EventSink | None" = None,
    on_variant: Callable[[str], None] | None = None,
) -> FamilyResult:
    """Release every variant (or only ``variant``): build and validate each, then card and push each
    with the family table in its card, then write <output_dir>/README.md with the table."""
    from . import artifacts
    from .release import release
    from .stages import stage_names

    names = stage_names()
    select_variants(recipe, variant)  # an unknown --variant fails here, before any work
    every = expand_variants(recipe)
    chosen_names = [n for n in variant_names(recipe) if variant is None or n == variant]
    chosen = [r for n, r in zip(variant_names(recipe), every) if n in chosen_names]
    results: list[tuple[str, ReleaseResult]] = []
    family_out = recipe.output_path

    if dry_run:
        for name, r in zip(chosen_names, chosen):
            if on_variant:
                on_variant(name)
            results.append((name, release(r, from_stage=from_stage, until_stage=until_stage, push=push, dry_run=True,
                                          force=force, endpoint=endpoint, tag=tag, events=events)))
        return FamilyResult(recipe.path, family_out, results, None, None, dry_run=True)

    # 1. build and measure every chosen variant (the base is measured once: validate's base cache)
    measure_until = "validate" if "validate" in names else None
    before_card = measure_until is not None and (until_stage is None or names.index(until_stage) >= names.index(measure_until))
    first_phase_from = from_stage if from_stage and measure_until and names.index(from_stage) <= names.index(measure_until) else None
    failed: list[str] = []
    if before_card and (from_stage is None or first_phase_from is not None):
        for name, r in zip(chosen_names, chosen):
            if on_variant:
                on_variant(name)
            try:
                release(r, from_stage=first_phase_from, until_stage=measure_until, push=False, force=force,
                        endpoint=endpoint, tag=tag, events=events)
            except ValidateError as exc:
                failed.append(f"{name}: {exc}")
    table = family_table(recipe, every, endpoint=endpoint)
    if family_out.is_dir():
        artifacts.write_atomic(family_out / FAMILY_FILE, _table_json(table))
    if failed:
        readme = _write_readme(recipe, table, family_out)
        raise ValidateError(f"{len(failed)} of {len(chosen)} variants failed validation, nothing was pushed: {'; '.join(failed)}"
                            + (f" (family table: {readme})" if readme else ""))

    # 2. card and push, each card with the family table
    for name, r in zip(chosen_names, chosen):
        r._family = table.for_card(name)
        if on_variant:
            on_variant(name)
        later_from = from_stage if from_stage and (measure_until is None or names.index(from_stage) > names.index(measure_until)) else None
        if force and later_from is None and "card" in names:
            later_from = "card"  # quantize / validate were forced in the first pass already
        results.append((name, release(r, from_stage=later_from, until_stage=until_stage, push=push, force=False,
                                      endpoint=endpoint, tag=tag, events=events)))
    readme = _write_readme(recipe, table, family_out)
    return FamilyResult(recipe.path, family_out, results, table, readme)


def _write_readme(recipe: "Recipe", table: FamilyTable, family_out: Path) -> Path | None:
    from . import artifacts

    if not family_out.is_dir():
        return None
    path = family_out / artifacts.CARD
    artifacts.write_atomic(path, family_readme(recipe, table))
    return path


def _table_json(table: FamilyTable) -> str:
    import json

    rows = [{k: v for k, v in r.items() if not k.startswith("_") and k not in ("quality", "info")} for r in table.rows]
    return json.dumps({"title": table.title, "rule": table.rule, "recommended": table.recommended, "rows": rows},
                      indent=2, sort_keys=True, default=str) + "\n"


__all__ = ["FamilyResult", "FamilyTable", "Rule", "expand_variants", "family_table", "parse_pick", "parse_rule",
           "release_family", "select_variants"]
