"""``kind = "kl"``: mean KL(base || quantized) of next-token distributions, and top-1 agreement.

Both are per-token means over the same windows as perplexity; intervals resample windows. The
entry's perplexity is reported only when no ``perplexity`` eval reads the same text (each metric
appears once in the card).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from ...artifacts import EvalResult, MetricInfo
from ...errors import ValidateError
from . import GateSpec, PrepareContext, ScoreContext, bootstrap, eval_kinds, load_texts
from .perplexity import MAX_PPL_INCREASE, PPL, TextEntry, TextJob, WindowNLL, perplexity_result, same_tokens, window_nll

KL_INFO = MetricInfo(label="Mean KL divergence", unit="", higher_is_better=False, digits=4, delta="absolute")
TOP1 = MetricInfo(label="Top-1 agreement", unit="%", higher_is_better=True, digits=1, delta="points")


class KLEntry(TextEntry):
    kind: Literal["kl"]


def kl_per_window(base_logprobs: Any, quant_logprobs: Any) -> tuple[list[float], list[float], list[int]]:
    """Per window: summed KL(base || quantized), top-1 agreements, and positions."""
    import numpy as np

    p = np.asarray(base_logprobs, dtype=np.float64)
    q = np.asarray(quant_logprobs, dtype=np.float64)
    if p.shape != q.shape:
        raise ValidateError(f"base and quantized vocabularies differ ({p.shape[-1]} vs {q.shape[-1]}); the tokenizer changed")
    if p.size == 0:
        return [], [], []
    if p.ndim == 2:  # one window
        p, q = p[None], q[None]
    kl = (np.exp(p) * (p - q)).sum(axis=-1)  # [windows, positions]
    agree = p.argmax(axis=-1) == q.argmax(axis=-1)
    positions = [p.shape[1]] * p.shape[0]
    return [float(v) for v in kl.sum(axis=1)], [float(v) for v in agree.sum(axis=1)], positions


def kl_stats(base_logprobs: Any, quant_logprobs: Any) -> dict[str, float]:
    """Mean KL(base || quantized) per token position and top-1 agreement, from log-prob arrays."""
    kl, agree, n = kl_per_window(base_logprobs, quant_logprobs)
    total = max(sum(n), 1)
    return {"kl": float(max(0.0, sum(kl) / total)), "top1_agreement": float(sum(agree) / total)}


@eval_kinds.register
class KL:
    name = "kl"
    display_name = "KL divergence and top-1 agreement vs the base"
    reference_url = "https://en.wikipedia.org/wiki/Kullback%E2%80%93Leibler_divergence"
    Entry = KLEntry
    Job = TextJob
    Output = WindowNLL
    metrics = {"kl": KL_INFO, "top1_agreement": TOP1, "perplexity": PPL}
    gates = (
        GateSpec(name="max_kl", metric="kl", direction="max", bounds=(0.0, math.inf), description="mean KL(base || quantized) per token"),
        GateSpec(name="min_top1_agreement", metric="top1_agreement", direction="min", le=1.0, bounds=(0.0, 1.0), unit="%",
                 description="fraction of positions where both models pick the same next token"),
        MAX_PPL_INCREASE,
    )

    def prepare(self, entry: KLEntry, ctx: PrepareContext) -> TextJob:
        return TextJob(texts=load_texts(ctx, entry.file or ""), seqlen=entry.seqlen, max_samples=entry.max_samples,
                       logprobs_path=str(ctx.work / f"logprobs_{ctx.index}_{{role}}.npy"))

    def steps(self, job: TextJob) -> int:
        return job.max_samples

    def run(self, job: TextJob, model: Any) -> WindowNLL:
        return window_nll(model.model, model.tokenizer, job, model.role, model.progress)

    def score(self, entry: KLEntry, job: TextJob, outputs: dict[str, WindowNLL], ctx: ScoreContext) -> EvalResult:
        import numpy as np

        base, quant = outputs["base"], outputs["quantized"]
        same_tokens(entry.label, base, quant)
        twin = any(e.kind == "perplexity" and entry.same_text(e) for e in ctx.all_entries)
        if twin:
            result = EvalResult(name=entry.label, kind=self.name)
        else:
            result = perplexity_result(entry.label, self.name, base, quant, entry.seed)
        arrays = [np.load(o.logprobs_file) if o.logprobs_file else np.zeros(0) for o in (base, quant)]
        kl, agree, n = kl_per_window(*arrays)

        def ratio(values: list[float], idx: list[int] | None = None) -> float:
            idx = list(range(len(values))) if idx is None else idx
            return sum(values[i] for i in idx) / max(sum(n[i] for i in idx), 1)

        result.metrics = {"kl": {"quantized": max(0.0, ratio(kl))}, "top1_agreement": {"quantized": ratio(agree)}, **result.metrics}
        for name, values in (("kl", kl), ("top1_agreement", agree)):
            interval = bootstrap(lambda idx, v=values: ratio(v, idx), len(values), seed=entry.seed)
            if interval:
                result.intervals[name] = {"quantized": interval}
        result.display = {"kl": KL_INFO, "top1_agreement": TOP1, **result.display}
        return result
