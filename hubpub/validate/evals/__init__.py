"""Eval kinds: the ``[[eval]]`` entries of a recipe, as a registry with a typed protocol.

An eval kind is one module that registers an object with:

* ``name`` (the recipe's ``kind``), ``display_name``, ``reference_url``;
* ``Entry``: its recipe model, a :class:`hubpub.recipe.EvalEntry` subclass with
  ``kind: Literal["<name>"]`` ([[eval]] is a union discriminated on ``kind``, built from this
  registry, so field errors keep their path: ``eval[1].seqlen: must be >= 8 (got 2)``);
* ``Job`` / ``Output``: pydantic models of what crosses into the worker process and back;
* ``prepare(entry, ctx) -> Job`` (parent process; raises ValidateError for bad input before any
  model loads), ``steps(job) -> int`` (progress units), ``run(job, model) -> Output`` (in the
  worker, with the loaded model, see :class:`hubpub.validate.protocol.LoadedModel`),
  ``score(entry, job, outputs, ctx) -> EvalResult`` (parent, base vs quantized);
* ``metrics``: {metric: MetricInfo} -- how its numbers are shown (unit, higher-is-better, digits,
  relative or absolute delta), so the card never guesses from a name;
* ``gates``: the [validate.gates] entries it defines (:class:`GateSpec`).

Third-party kinds register through the ``hubpub.evals`` entry-point group.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Sequence

from ...registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from pydantic import BaseModel

    from ...artifacts import EvalResult, MetricInfo
    from ...recipe import EvalEntry, Recipe
    from ..protocol import LoadedModel, ModeJob


@dataclass(frozen=True)
class GateSpec:
    """One [validate.gates] entry an eval kind defines.

    ``value`` says what is compared with the threshold: the quantized model's metric, its change
    relative to the base ((q - b) / b), the drop from the base (b - q), or the recovery (q / b).
    ``bounds`` is the range the compared value can take: a limit outside it cannot fail.
    """

    name: str
    metric: str
    direction: Literal["max", "min"]
    value: Literal["quantized", "relative_change", "drop", "recovery"] = "quantized"
    ge: float | None = 0.0
    le: float | None = None
    bounds: tuple[float, float] = (-math.inf, math.inf)
    unit: str = ""  # "relative" (0.10 = +10 %), "%" (a fraction) or ""
    description: str = ""


@dataclass
class PrepareContext:
    """What ``prepare`` may use (parent process)."""

    recipe: "Recipe"
    index: int  # position in [[eval]], for error messages: f"{recipe.path}: eval[{index}].field"
    task: str  # causal-lm | image-text-to-text | custom
    modes: list["ModeJob"]  # the generation modes the workers run
    work: Path  # scratch folder (deleted after validate)
    all_entries: list["EvalEntry"] = field(default_factory=list)

    def where(self, field_name: str = "") -> str:
        return f"{self.recipe.path}: eval[{self.index}]{'.' + field_name if field_name else ''}"


@dataclass
class ScoreContext:
    """What ``score`` may use (parent process)."""

    recipe: "Recipe"
    index: int
    assets: Path  # the release folder's assets/ (images linked from the card)
    stem: str  # file-name stem for this eval's assets
    work: Path  # scratch folder (deleted after validate)
    all_entries: list["EvalEntry"] = field(default_factory=list)
    seed: int = 0


class EvalKind(Protocol):
    name: str
    display_name: str
    reference_url: str
    Entry: type["EvalEntry"]
    Job: type["BaseModel"]
    Output: type["BaseModel"]
    metrics: dict[str, "MetricInfo"]
    gates: tuple[GateSpec, ...]

    def prepare(self, entry: Any, ctx: PrepareContext) -> Any: ...

    def steps(self, job: Any) -> int: ...

    def run(self, job: Any, model: "LoadedModel") -> Any: ...

    def score(self, entry: Any, job: Any, outputs: dict[str, Any], ctx: ScoreContext) -> "EvalResult": ...


eval_kinds: Registry[EvalKind] = Registry(
    kind="eval kind",
    group="hubpub.evals",
    builtin=(
        "hubpub.validate.evals.perplexity",
        "hubpub.validate.evals.kl",
        "hubpub.validate.evals.similarity",
        "hubpub.validate.evals.grounding",
        "hubpub.validate.evals.lm_eval",
    ),
    required=("name", "display_name", "Entry", "Job", "Output", "metrics", "gates", "prepare", "steps", "run", "score"),
)


def gate_specs() -> dict[str, list[tuple[str, GateSpec]]]:
    """gate name -> [(eval kind, spec)] over every installed kind."""
    out: dict[str, list[tuple[str, GateSpec]]] = {}
    for kind in eval_kinds:
        for gate in kind.gates:
            out.setdefault(gate.name, []).append((kind.name, gate))
    return out


# ----------------------------------------------------------------------------- shared helpers
def bootstrap(stat: Callable[[Sequence[int]], float | None], n: int, *, seed: int = 0, resamples: int = 1000) -> tuple[float, float] | None:
    """95 % percentile interval of ``stat(indices)`` over ``resamples`` resamplings of range(n).

    ``stat`` receives the resampled item indices (with repeats) and returns the statistic, so a
    paired statistic (base vs quantized on the same items) resamples both sides together.
    Seeded: the same inputs give the same interval.
    """
    if n < 2:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        v = stat(idx)
        if v is not None and math.isfinite(v):
            values.append(v)
    if len(values) < resamples // 2:
        return None
    values.sort()
    lo = values[int(0.025 * (len(values) - 1))]
    hi = values[int(math.ceil(0.975 * (len(values) - 1)))]
    return (float(lo), float(hi))


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def mean_interval(values: Sequence[float], *, seed: int = 0) -> tuple[float, float] | None:
    return bootstrap(lambda idx: mean([values[i] for i in idx]), len(values), seed=seed)


def paired_delta_interval(base: Sequence[float], quant: Sequence[float], *, seed: int = 0) -> tuple[float, float] | None:
    """Interval of mean(quant) - mean(base), items resampled in pairs."""
    n = min(len(base), len(quant))
    return bootstrap(lambda idx: mean([quant[i] for i in idx]) - mean([base[i] for i in idx]), n, seed=seed)


def load_texts(ctx: PrepareContext, file: str) -> list[str]:
    """An eval's text: a .txt file, a .jsonl file with a "text" field, or builtin:pydoc (held out)."""
    from ...calibration import read_texts
    from ...errors import ValidateError

    return read_texts(ctx.recipe, file, ctx.where("file"), error=ValidateError, held_out=True)


def check_text_file(value: str | None) -> str | None:
    if value is not None and not value.startswith("builtin:") and not value.endswith((".txt", ".jsonl")):
        raise ValueError(f"'file' must be a .txt or .jsonl file, or builtin:pydoc (got {value!r})")
    return value
