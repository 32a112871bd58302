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
FAMILY_PLOT = "assets/variants.png"  # the size-vs-quality plot, beside the table (family README and every card)
LAYOUTS = ("repos", "subfolders", "branches")
# the family README's own files at the root of a subfolders / branches repo: no variant may be named so
FAMILY_ROOT = ("README.md", FAMILY_FILE, "assets", ".gitattributes", ".eval_results")


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
            if field_name == "layout":
                raise _nested(("variant", i, "push", field_name), "the layout is the family's: set layout under [push],"
                              " not [variant.push]", value)
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
        _apply_layout(recipe, variant, d)
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
        built._variant = (variant.name, {k: d[k] for k in ("quantize", "push", "card") if k in d})
        out.append(built)
    return out


def variant_tag(name: str, tag: str) -> str:
    """A branches-layout tag: tags are repo-wide, so each variant's release gets its own (``g32-v1``)."""
    return f"{name}-{tag}"


def _apply_layout(recipe: "Recipe", variant: Any, d: dict[str, Any]) -> None:
    """The variant's [push] / [card] as the layout places it (d is its recipe data, changed in place).

    branches: its own branch (``revision`` = the variant's name unless its [variant.push] says
    otherwise) and its own tag (``<name>-<tag>``; so is ``card.previous_tag``). subfolders: the
    variant is pushed by the family commit, and its previous release lies under ``<name>/`` of the
    family repo (release_family reads it), so the per-variant card does not look it up at the root."""
    layout = recipe.push.layout
    push = d.setdefault("push", {})
    push.pop("layout", None)
    if layout == "branches":
        push["revision"] = variant.push.get("revision", variant.name)
        if push.get("tag") and "tag" not in variant.push:
            push["tag"] = variant_tag(variant.name, push["tag"])
        card = d.get("card") or {}
        if card.get("previous_tag"):
            card["previous_tag"] = variant_tag(variant.name, card["previous_tag"])
    elif layout == "subfolders":
        (d.get("card") or {}).pop("previous_tag", None)


def targets(recipe: "Recipe") -> list[dict[str, Any]]:
    """Where each variant is published: repo_id, revision, tag, subfolder (None: the repo root)."""
    layout = recipe.push.layout
    parent = recipe.push
    out = []
    for v in recipe.variants:
        repo = parent.repo_id if layout == "subfolders" else v.push.get("repo_id", parent.repo_id)
        if layout == "branches":
            revision = v.push.get("revision", v.name)
            tag = v.push.get("tag", variant_tag(v.name, parent.tag) if parent.tag else None)
        else:
            revision = parent.revision if layout == "subfolders" else v.push.get("revision", parent.revision)
            tag = parent.tag if layout == "subfolders" else v.push.get("tag", parent.tag)
        out.append({"name": v.name, "repo_id": repo, "revision": revision, "tag": tag,
                    "subfolder": v.name if layout == "subfolders" else None})
    return out


def layout_problems(recipe: "Recipe") -> list[tuple[str, str]]:
    """(field, message) for a layout that would put two variants' files on the same path
    (`hubpub check` and release_family report them; nothing is pushed)."""
    if not recipe.variants:
        return []
    layout = recipe.push.layout
    problems: list[tuple[str, str]] = []
    where = {"repos": "layout \"repos\" gives each variant its own repo",
             "branches": "layout \"branches\" gives each variant its own branch of one repo",
             "subfolders": "layout \"subfolders\" gives each variant its own folder of one repo"}[layout]
    if layout == "subfolders":
        for i, v in enumerate(recipe.variants):
            for key in ("repo_id", "revision", "tag"):
                if key in v.push:
                    problems.append((f"variant[{i}].push.{key}", f"{where}, pushed as one commit to [push] {key}:"
                                     f" remove it here, or set [push] layout = \"repos\" to push variant {v.name!r} on its own"))
            if v.name.lower() in {n.lower() for n in FAMILY_ROOT}:
                problems.append((f"variant[{i}].name", f"{v.name!r} is where the family README keeps its own files at the repo root"
                                 f" ({', '.join(FAMILY_ROOT[:3])}); rename the variant"))
        return problems
    seen: dict[tuple[str, str], int] = {}
    tags: dict[tuple[str, str], int] = {}
    for i, t in enumerate(targets(recipe)):
        if t["repo_id"] is None:
            continue  # no push target (push refuses it, --no-push does not need one)
        v = recipe.variants[i]
        key = (t["repo_id"].lower(), t["revision"])
        if key in seen:
            j = seen[key]
            key_field = "revision" if layout == "branches" else "repo_id"
            field = f"variant[{i}].push.{key_field}" if key_field in v.push else f"variant[{i}].name"
            fix = ("give it its own [variant.push] revision (the default is the variant's name)" if layout == "branches"
                   else "give it its own [variant.push] repo_id, or set [push] layout = \"subfolders\" or \"branches\"")
            problems.append((field, f"variant {v.name!r} and variant[{j}] ({recipe.variants[j].name!r}) would both publish to"
                             f" {t['repo_id']}@{t['revision']} ({where}); {fix}"))
        seen.setdefault(key, i)
        if t["tag"] and layout == "branches":
            tkey = (t["repo_id"].lower(), t["tag"])
            if tkey in tags:
                j = tags[tkey]
                problems.append((f"variant[{i}].push.tag", f"variant {v.name!r} and variant[{j}] ({recipe.variants[j].name!r})"
                                 f" would both tag {t['repo_id']}@{t['tag']} (a tag names one commit); remove it here"
                                 f" (the default is '<variant>-<tag>') or pick another"))
            tags.setdefault(tkey, i)
    return problems


def layout_error(recipe: "Recipe") -> None:
    """Raise the one-line RecipeError (file:line: field: message) of the first layout problem."""
    from .recipe import _line_index, _lookup_line, _parse_field_path, Problem, problems_error

    found = layout_problems(recipe)
    if found:
        index = _line_index(recipe.text)
        raise problems_error([Problem(str(recipe.path), _lookup_line(index, _parse_field_path(f)), f, m) for f, m in found])


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
    layout: str = "repos"
    plot: Any = None  # card.family_plot.FamilyPlot, drawn beside the table as FAMILY_PLOT

    def for_card(self, current: str | None) -> dict[str, Any]:
        def href(link: str | None) -> str | None:
            if link is None or "://" in link or current is None:
                return link
            return "../" + link  # a card in <variant>/ links to a sibling folder beside it

        rows = [dict({k: v for k, v in r.items() if not k.startswith("_") and k != "quality"}, current=(r["name"] == current),
                     href=href(r.get("link"))) for r in self.rows]
        plot = None
        if self.plot is not None:
            better = "higher" if self.plot.higher_is_better else "lower"
            plot = {"path": FAMILY_PLOT, "metric": self.plot.label, "better": better, "front": list(self.plot.front)}
        mine = next((r for r in self.rows if r["name"] == current), None)
        where = dict(mine["target"]) if mine and mine.get("target") else None  # {repo_id, revision, tag, subfolder}
        return {"title": self.title, "rows": rows,
                "columns": self.columns, "recommended": self.recommended, "rule": self.rule, "note": self.note,
                "current": current, "layout": self.layout, "plot": plot, "where": where}

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
    for variant, r, target in zip(recipe.variants, recipes, targets(recipe)):
        row = measured_row(variant.name, r.output_path)
        row["target"] = target  # where the layout publishes it
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
    plot = None
    if recipe.card.plots:
        from .card.family_plot import plan_family_plot
        from .sweep import main_metric

        metric, higher = main_metric(recipe, rows)
        label = next((q["label"] for r in rows for q in r.get("quality", []) if q["metric"] == metric), None)
        plot = plan_family_plot(rows, metric, higher, recommended, label)
    for row in rows:
        row["pareto"] = plot is not None and row["name"] in plot.front
    return FamilyTable(title, rows, columns, recommended, recipe.family.recommend, note, layout_of(recipe), plot)


def layout_of(recipe: "Recipe") -> str:
    return recipe.push.layout


def sibling_link(recipe: "Recipe", name: str, variant: "Recipe", *, endpoint: str | None) -> str | None:
    """Where a reader finds the variant: its own repo, a subfolder or a branch of the family repo."""
    from .hub._client import resolve_endpoint

    hub = resolve_endpoint(endpoint).rstrip("/")
    layout = layout_of(recipe)
    repo = variant.push.repo_id
    if layout == "subfolders":
        return f"{hub}/{repo}/tree/{recipe.push.revision}/{name}" if repo else f"{name}/"
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
    plan: list[str] = field(default_factory=list)  # the whole family's publishing plan (lines)
    pushes: list[Any] = field(default_factory=list)  # hub.push.PushResult of the family commits (subfolders; branches' README)


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
    strict: bool = False,
) -> FamilyResult:
    """Release every variant (or only ``variant``): build and validate each, then card and push each
    with the family table in its card, then write <output_dir>/README.md with the table.

    ``[push] layout``: "repos" pushes each variant to its own repo; "branches" each to its own
    branch of one repo (then the family README to the family revision); "subfolders" pushes the
    family README and every variant folder (under ``<name>/``) as ONE commit once every card is
    rendered. A layout that would put two variants on the same path is refused before any work."""
    from .events import Notice, emit
    from .release import release
    from .stages import stage_names, stages

    names = stage_names()
    layout_error(recipe)  # two variants on one path: a RecipeError with the line, nothing built or pushed
    select_variants(recipe, variant)  # an unknown --variant fails here, before any work
    layout = layout_of(recipe)
    every = expand_variants(recipe)
    chosen_names = [n for n in variant_names(recipe) if variant is None or n == variant]
    chosen = [r for n, r in zip(variant_names(recipe), every) if n in chosen_names]
    results: list[tuple[str, ReleaseResult]] = []
    family_out = recipe.output_path
    pushes_family = push and (until_stage is None or "push" not in names or names.index(until_stage) >= names.index("push"))
    if layout == "subfolders" and variant is not None and pushes_family and not dry_run:
        raise ReleaseError(f"--variant {variant}: {recipe.path}: push.layout = \"subfolders\" publishes the whole family"
                           " as one commit; drop --variant, or add --no-push to build only this variant")
    per_variant_push = push and layout != "subfolders"

    if dry_run:
        for name, r in zip(chosen_names, chosen):
            if on_variant:
                on_variant(name)
            results.append((name, release(r, from_stage=from_stage, until_stage=until_stage, push=per_variant_push, dry_run=True,
                                          force=force, endpoint=endpoint, tag=_tag_for(recipe, name, tag), events=events)))
        plan = family_plan(recipe, every, tag=tag, endpoint=endpoint) if push else []
        for line in plan:
            emit(events, Notice("push", line))
        return FamilyResult(recipe.path, family_out, results, None, None, dry_run=True, plan=plan)

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
                        endpoint=endpoint, tag=_tag_for(recipe, name, tag), events=events, strict=strict)
            except ValidateError as exc:
                failed.append(f"{name}: {exc}")
    table = family_table(recipe, every, endpoint=endpoint)
    _write_family_files(table, family_out, [r.output_path for r in every])
    if failed:
        readme = _write_readme(recipe, table, family_out)
        raise ValidateError(f"{len(failed)} of {len(chosen)} variants failed validation, nothing was pushed: {'; '.join(failed)}"
                            + (f" (family table: {readme})" if readme else ""))

    # 2. card and push, each card with the family table (and its own version history)
    card_runs = "card" in names and (until_stage is None or names.index(until_stage) >= names.index("card"))
    if card_runs and recipe.card.previous_tag and not recipe.card.previous:
        _previous_releases(recipe, chosen_names, chosen, endpoint=endpoint, events=events)
    if layout == "subfolders" and push:
        emit(events, Notice("push", "layout subfolders: the variants are published together, as one commit, after every card"))
    for name, r in zip(chosen_names, chosen):
        r._family = table.for_card(name)
        if on_variant:
            on_variant(name)
        later_from = from_stage if from_stage and (measure_until is None or names.index(from_stage) > names.index(measure_until)) else None
        if force and later_from is None and "card" in names:
            later_from = "card"  # quantize / validate were forced in the first pass already
        if later_from is not None and not per_variant_push and stages.get(later_from).publishes:
            continue  # --from push with subfolders: the family commit below is all there is to do
        results.append((name, release(r, from_stage=later_from, until_stage=until_stage, push=per_variant_push, force=False,
                                      endpoint=endpoint, tag=_tag_for(recipe, name, tag), events=events)))
    readme = _write_readme(recipe, table, family_out)

    # 3. the family commits: every variant in one (subfolders), or the family README on its own branch (branches)
    pushed = []
    if pushes_family and readme is not None and layout in ("subfolders", "branches"):
        from .hub.push import push_family

        roots = [FAMILY_ROOT[0], FAMILY_FILE] + ([FAMILY_PLOT] if table.plot is not None else [])
        if layout == "subfolders":
            pushed.append(push_family(recipe, list(zip(variant_names(recipe), every)), family_out, roots, tag=tag,
                                      endpoint=endpoint, events=events))
        elif not any(t["revision"] == recipe.push.revision and t["repo_id"] == recipe.push.repo_id for t in targets(recipe)):
            if recipe.push.repo_id:
                pushed.append(push_family(recipe, [], family_out, roots, with_members=False, endpoint=endpoint, events=events))
        for one in pushed:
            for note in one.notes:
                emit(events, Notice("push", note))
            at = f" (tag {one.tag})" if one.tag else ""
            emit(events, Notice("push", f"family published: {one.repo_url}@{one.plan.revision}{at}, {len(one.plan.local)} files,"
                                        f" verified; commit {one.commit_url}"))
    return FamilyResult(recipe.path, family_out, results, table, readme, pushes=pushed)


def _tag_for(recipe: "Recipe", name: str, tag: str | None) -> str | None:
    """--tag as a variant's release sees it (branches: ``<name>-<tag>``, tags being repo-wide)."""
    if tag is None or layout_of(recipe) != "branches":
        return tag
    return variant_tag(name, tag)


def _write_family_files(table: FamilyTable, family_out: Path, folders: list[Path]) -> None:
    """hubpub_family.json, and the size-vs-quality plot beside the family README and in every
    variant folder (each card shows it); a file is rewritten only when its bytes change."""
    from . import artifacts

    if not family_out.is_dir():
        return
    artifacts.write_atomic(family_out / FAMILY_FILE, _table_json(table))
    if table.plot is None:
        return
    from .card.family_plot import render_family_png

    png = render_family_png(table.plot)
    for folder in [family_out, *folders]:
        if folder.is_dir():
            path = folder / FAMILY_PLOT
            if not path.is_file() or path.read_bytes() != png:
                artifacts.write_atomic(path, png)


def _previous_releases(recipe: "Recipe", names: list[str], recipes: list["Recipe"], *, endpoint: str | None,
                       events: "EventSink | None") -> None:
    """[card] previous_tag for a family: each variant's previous release, read from where the layout
    put it (its repo, its branch's tag, or its subfolder), downloaded beside the variant's scratch and
    handed to its card as [card] previous. A variant new since then gets no history (a notice);
    none found at all is an error (a wrong tag)."""
    from .card.history import fetch_previous_files
    from .errors import CardError
    from .events import Notice, emit

    prev = recipe.card.previous_tag
    assert prev is not None
    layout = layout_of(recipe)
    found, missing = 0, []
    for name, r in zip(names, recipes):
        repo = recipe.push.repo_id if layout == "subfolders" else r.push.repo_id
        tag = r.card.previous_tag if layout == "branches" else prev
        if not repo or not tag:
            raise CardError(f"{recipe.path}: card.previous_tag: needs [push] repo_id (the repo to read tag {prev!r} from); set it or use card.previous")
        dest = r.work_path / f"previous-{tag.replace('/', '_')}"
        why = fetch_previous_files(repo, tag, dest, subfolder=name if layout == "subfolders" else None, endpoint=endpoint)
        if why is None:
            found += 1
            r.card = r.card.model_copy(update={"previous": str(dest), "previous_tag": tag})
        else:
            missing.append(f"{name} ({why})")
            r.card = r.card.model_copy(update={"previous": None, "previous_tag": None})
    if not found:
        raise CardError(f"{recipe.path}: card.previous_tag: no variant has a previous release at {prev!r}: {'; '.join(missing)};"
                        " check the tag, or unset card.previous_tag")
    for line in missing:
        emit(events, Notice("card", f"variant {line}: its card has no version history"))


def family_plan(recipe: "Recipe", recipes: list["Recipe"], *, tag: str | None = None, endpoint: str | None = None) -> list[str]:
    """The whole family's publishing plan (dry run): every repo / branch / subfolder and its files,
    with the remote comparison of the family commit when every variant folder is built."""
    from .hub._client import resolve_endpoint
    from .hub.plan import scan_release
    from .units import human_bytes

    layout = layout_of(recipe)
    hub = resolve_endpoint(endpoint)
    lines = [f"family plan: layout {layout}, {len(recipes)} variants"]

    def files_of(folder: Path, indent: str, prefix: str = "") -> list[str]:
        if not (folder / "README.md").is_file():
            return [f"{indent}(not built yet: its files are known after quantize, validate and card run)"]
        files = scan_release(folder)
        return [f"{indent}{prefix}{f.path}  {human_bytes(f.size)}" for f in files] + \
               [f"{indent}{len(files)} files, {human_bytes(sum(f.size for f in files))}"]

    for t, r in zip(targets(recipe), recipes):
        shown_tag = _tag_for(recipe, t["name"], tag) if tag else t["tag"]
        if layout == "subfolders":
            lines.append(f"  {t['name']}/ -> {hub}/{t['repo_id']}@{t['revision']}/{t['name']}/")
            lines += files_of(r.output_path, "    ", f"{t['name']}/")
        else:
            lines.append(f"  {t['name']} -> {hub}/{t['repo_id'] or '(no [push] repo_id)'}@{t['revision']}"
                         + (f", tag {shown_tag}" if shown_tag else ""))
            lines += files_of(r.output_path, "    ")
    family_out = recipe.output_path
    if layout == "subfolders":
        lines.insert(1, f"  one commit to {hub}/{recipe.push.repo_id}@{recipe.push.revision}"
                        + (f", tag {tag or recipe.push.tag}" if (tag or recipe.push.tag) else "")
                        + f": the family README ({FAMILY_ROOT[0]}, {FAMILY_FILE}, {FAMILY_PLOT}) at the root, each variant in its folder")
        if all((r.output_path / "README.md").is_file() for r in recipes) and (family_out / FAMILY_ROOT[0]).is_file():
            from .errors import HubpubError
            from .hub.push import push_family

            try:
                result = push_family(recipe, list(zip(variant_names(recipe), recipes)), family_out,
                                     [FAMILY_ROOT[0], FAMILY_FILE, FAMILY_PLOT], tag=tag, dry_run=True, endpoint=endpoint)
                lines += ["  against the remote:"] + ["  " + line for line in result.plan.lines()]
            except HubpubError as exc:
                lines.append(f"  against the remote: not yet ({exc})")
    elif layout == "branches":
        on_family = any(t["revision"] == recipe.push.revision and t["repo_id"] == recipe.push.repo_id for t in targets(recipe))
        if recipe.push.repo_id and not on_family:
            lines.append(f"  family README -> {hub}/{recipe.push.repo_id}@{recipe.push.revision}: {FAMILY_ROOT[0]}, {FAMILY_FILE}, {FAMILY_PLOT}")
    else:
        lines.append("  family README: written locally only (each variant's card carries the table)")
    return lines


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
    plot = None if table.plot is None else {"path": FAMILY_PLOT, "metric": table.plot.metric, "front": table.plot.front}
    return json.dumps({"title": table.title, "rule": table.rule, "recommended": table.recommended, "rows": rows,
                       "layout": table.layout, "plot": plot},
                      indent=2, sort_keys=True, default=str) + "\n"


__all__ = ["FamilyResult", "FamilyTable", "Rule", "expand_variants", "family_plan", "family_table", "layout_problems",
           "parse_pick", "parse_rule", "release_family", "select_variants", "targets"]
