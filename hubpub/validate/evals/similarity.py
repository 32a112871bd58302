"""``kind = "similarity"``: quantized vs base greedy generations on the same prompts.

Per prompt: exact match, character similarity (1 - edit distance / longer length), difflib
ratio and word Jaccard, as the Lance card reports them, plus flips (the answer starts with a
different word: it changed, as unsloth counts flipped answers). An empty or whitespace-only
output on either side scores 0 (a failure, never a match); prompts the base answers with
nothing are counted and shown as a base limitation.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator

from ...artifacts import EvalResult, MetricInfo, Sample
from ...recipe import EvalEntry
from ..protocol import ChatTurn, GenerateArgs, ModeJob
from . import GateSpec, PrepareContext, ScoreContext, eval_kinds, mean, mean_interval, paired_delta_interval

DEFAULT_PROMPTS = ["The function returns", "A class definition", "An exception is raised when", "The for statement"]
METRICS = {
    "exact_match": MetricInfo(label="Exact match", unit="%", digits=1, delta="points"),
    "char_similarity": MetricInfo(label="Character similarity", unit="%", digits=1, delta="points"),
    "difflib_ratio": MetricInfo(label="Sequence similarity (difflib)", unit="%", digits=1, delta="points"),
    "word_jaccard": MetricInfo(label="Word Jaccard", unit="%", digits=1, delta="points"),
    "flips": MetricInfo(label="Flipped answers", unit="%", higher_is_better=False, digits=1, delta="points"),
}


class SimilarityEntry(EvalEntry):
    kind: Literal["similarity"]
    prompts: Optional[list[str]] = None  # default: the modes' text prompts
    max_new_tokens: int = Field(32, ge=1)
    seed: int = 0

    @field_validator("prompts")
    @classmethod
    def _not_empty(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        if v is not None and not [p for p in v if p.strip()]:
            raise ValueError("lists no prompt; add prompts, or leave the field out to use the modes' prompts")
        return v


class SimilarityJob(BaseModel):
    mode: ModeJob
    prompts: list[Union[str, list[ChatTurn]]]


class Generations(BaseModel):
    outputs: list[str] = Field(default_factory=list)


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def pair_scores(a: str, b: str) -> dict[str, float]:
    """The five scores of one pair; an empty side is a failure (0 similarity, a flip)."""
    if not a.strip() or not b.strip():
        return {"exact_match": 0.0, "char_similarity": 0.0, "difflib_ratio": 0.0, "word_jaccard": 0.0, "flips": 1.0}
    wa, wb = set(a.split()), set(b.split())
    return {
        "exact_match": float(a == b),
        "char_similarity": 1.0 - levenshtein(a, b) / max(len(a), len(b)),
        "difflib_ratio": difflib.SequenceMatcher(None, a, b).ratio(),
        "word_jaccard": len(wa & wb) / len(wa | wb),
        "flips": float(a.split()[0] != b.split()[0]),
    }


def text_similarity(base: list[str], other: list[str]) -> dict[str, float]:
    """Means over pairs of :func:`pair_scores`."""
    pairs = [pair_scores(a, b) for a, b in zip(base, other)]
    return {name: mean([p[name] for p in pairs]) for name in METRICS} if pairs else {}


def _plain(modes: list[ModeJob]) -> list[ModeJob]:
    return [m for m in modes if not m.custom_generate and not m.images]


@eval_kinds.register
class Similarity:
    name = "similarity"
    display_name = "Generations vs the base"
    reference_url = "https://docs.python.org/3/library/difflib.html"
    Entry = SimilarityEntry
    Job = SimilarityJob
    Output = Generations
    metrics = METRICS
    gates = (GateSpec(name="min_similarity", metric="difflib_ratio", direction="min", le=1.0, bounds=(0.0, 1.0), unit="%",
                      description="mean difflib ratio of quantized vs base generations"),)

    def prepare(self, entry: SimilarityEntry, ctx: PrepareContext) -> SimilarityJob:
        prompts = entry.prompts or [m.prompt for m in ctx.modes if isinstance(m.prompt, str) and not m.images] or DEFAULT_PROMPTS
        plain = _plain(ctx.modes)
        # an instruct model answers a bare prompt with nothing: ask through its chat template when a mode does
        chat = next((m for m in plain if m.is_chat), None)
        base = chat or (plain[0] if plain else ctx.modes[0])
        mode = base.model_copy(update={"stream": False, "prompts": None,
                                       "generate": GenerateArgs(max_new_tokens=entry.max_new_tokens, do_sample=False)})
        items: list[Any] = [[ChatTurn(role="user", content=p)] if chat else p for p in dict.fromkeys(p for p in prompts if isinstance(p, str) and p.strip())]
        return SimilarityJob(mode=mode, prompts=items)

    def steps(self, job: SimilarityJob) -> int:
        return len(job.prompts)

    def run(self, job: SimilarityJob, model: Any) -> Generations:
        out = Generations()
        for prompt in job.prompts:
            texts = model.generate(job.mode.model_copy(update={"prompt": prompt}))
            out.outputs.append(texts[0] if texts else "")
            model.progress(f"prompt {len(out.outputs)}")
        return out

    def score(self, entry: SimilarityEntry, job: SimilarityJob, outputs: dict[str, Generations], ctx: ScoreContext) -> EvalResult:
        base, quant = outputs["base"].outputs, outputs["quantized"].outputs
        pairs = [pair_scores(a, b) for a, b in zip(base, quant)]
        result = EvalResult(name=entry.label, kind=self.name, display=dict(METRICS))
        for name in METRICS:
            values = [p[name] for p in pairs]
            result.metrics[name] = {"quantized": mean(values)}
            interval = mean_interval(values, seed=entry.seed)
            if interval:
                result.intervals[name] = {"quantized": interval}
        empty_base = sum(not b.strip() for b in base)
        empty_quant = sum(not q.strip() and b.strip() for b, q in zip(base, quant))
        if empty_base:
            result.notes.append(f"the base model answered {empty_base} of {len(base)} prompts with nothing (a base limitation; scored as a mismatch)")
        if empty_quant:
            result.notes.append(f"the quantized model answered {empty_quant} of {len(base)} prompts with nothing where the base did not")
        samples = []
        for prompt, b, q in zip(job.prompts, base, quant):
            text = prompt if isinstance(prompt, str) else prompt[-1].content
            samples.append(Sample(mode=entry.label, prompt=text, base=b, quantized=q).model_dump())
        result.details["samples"] = samples
        return result


__all__ = ["Similarity", "levenshtein", "text_similarity", "pair_scores", "paired_delta_interval"]
