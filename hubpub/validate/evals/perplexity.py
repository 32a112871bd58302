"""``kind = "perplexity"``: exp(mean next-token NLL) over ``max_samples`` windows of ``seqlen`` tokens.

Intervals: windows are resampled (bootstrap, seeded); the change is paired (the same windows on
both models), so a difference is called real only when its interval excludes 0.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from ...artifacts import EvalResult, MetricInfo
from ...errors import ValidateError
from ...recipe import EvalEntry
from . import GateSpec, PrepareContext, ScoreContext, bootstrap, check_text_file, eval_kinds, load_texts

PPL = MetricInfo(label="Perplexity", unit="", higher_is_better=False, digits=2, delta="relative")
MAX_PPL_INCREASE = GateSpec(
    name="max_ppl_increase", metric="perplexity", direction="max", value="relative_change", ge=0.0,
    bounds=(-1.0, math.inf), unit="relative", description="relative, 0.10 = perplexity may rise 10 %",
)


class TextEntry(EvalEntry):
    file: Optional[str] = None
    seqlen: int = Field(256, ge=8)
    max_samples: int = Field(8, ge=1)
    seed: int = 0

    @field_validator("file")
    @classmethod
    def _file(cls, v: Optional[str]) -> Optional[str]:
        return check_text_file(v)

    @model_validator(mode="after")
    def _needs_file(self) -> "TextEntry":
        if not self.file:
            raise ValueError(f"eval kind {self.kind!r} needs 'file' (a .txt/.jsonl text, or builtin:pydoc)")
        return self

    def input_files(self) -> list[str]:
        return [self.file] if self.file and not self.file.startswith("builtin:") else []

    def same_text(self, other: Any) -> bool:
        return isinstance(other, TextEntry) and (self.file, self.seqlen, self.max_samples) == (other.file, other.seqlen, other.max_samples)


class PerplexityEntry(TextEntry):
    kind: Literal["perplexity"]


class TextJob(BaseModel):
    texts: list[str]
    seqlen: int
    max_samples: int
    logprobs_path: Optional[str] = None  # kl: where the worker saves next-token log-probs ({role} filled in)


class WindowNLL(BaseModel):
    nll: list[float] = Field(default_factory=list)  # summed NLL per window
    tokens: list[int] = Field(default_factory=list)  # predicted tokens per window
    logprobs_file: Optional[str] = None
    # sha256 of the token ids scored: base and quantized must score the same tokens (a GGUF release
    # carries its own tokenizer; one that splits text differently would make every figure meaningless)
    ids_sha256: Optional[str] = None

    def perplexity(self, idx: list[int] | None = None) -> float:
        idx = list(range(len(self.nll))) if idx is None else idx
        count = sum(self.tokens[i] for i in idx)
        return math.exp(sum(self.nll[i] for i in idx) / max(count, 1))


def window_nll(model: Any, tokenizer: Any, job: TextJob, role: str, progress: Any = None) -> WindowNLL:
    """Per-window NLL (and, when job.logprobs_path is set, the log-probs saved as .npy) in the worker."""
    import numpy as np
    import torch

    ids = tokenizer("\n\n".join(job.texts), return_tensors="pt")["input_ids"][0]
    windows = [ids[i : i + job.seqlen] for i in range(0, max(1, len(ids) - job.seqlen + 1), job.seqlen)][: job.max_samples]
    import hashlib

    out = WindowNLL(ids_sha256=hashlib.sha256(np.concatenate([w.numpy() for w in windows]).astype(np.int64).tobytes()).hexdigest()
                    if windows else None)
    logprobs = []
    with torch.inference_mode():
        for window in windows:
            x = window.unsqueeze(0).to(model.device)
            lp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
            out.nll.append(-float(lp.gather(1, x[0, 1:].unsqueeze(1)).sum()))
            out.tokens.append(int(x.shape[1] - 1))
            if job.logprobs_path:
                logprobs.append(lp.cpu())
            if progress:
                progress(f"window {len(out.nll)}")
    if job.logprobs_path:
        path = job.logprobs_path.format(role=role)
        stacked = torch.nn.utils.rnn.pad_sequence(logprobs, batch_first=True) if logprobs else torch.zeros(0)
        np.save(path, stacked.numpy())
        out.logprobs_file = path
    return out


def same_tokens(name: str, base: WindowNLL, quant: WindowNLL) -> None:
    """Both models scored the same token ids (else no per-token comparison means anything)."""
    if base.ids_sha256 and quant.ids_sha256 and base.ids_sha256 != quant.ids_sha256:
        raise ValidateError(f"{name}: the base and the quantized model tokenized the eval text differently (their tokenizers"
                            " differ), so perplexity and KL would compare different tokens; ship the base's tokenizer with the release")


def perplexity_result(name: str, kind: str, base: WindowNLL, quant: WindowNLL, seed: int) -> EvalResult:
    same_tokens(name, base, quant)
    result = EvalResult(name=name, kind=kind, display={"perplexity": PPL})
    result.metrics["perplexity"] = {"base": base.perplexity(), "quantized": quant.perplexity()}
    n = min(len(base.nll), len(quant.nll))
    intervals = {
        "base": bootstrap(base.perplexity, len(base.nll), seed=seed),
        "quantized": bootstrap(quant.perplexity, len(quant.nll), seed=seed),
        "delta": bootstrap(lambda idx: quant.perplexity(idx) / base.perplexity(idx) - 1, n, seed=seed),
    }
    result.intervals["perplexity"] = {k: v for k, v in intervals.items() if v is not None}
    return result


@eval_kinds.register
class Perplexity:
    name = "perplexity"
    display_name = "Perplexity"
    reference_url = "https://huggingface.co/docs/transformers/perplexity"
    Entry = PerplexityEntry
    Job = TextJob
    Output = WindowNLL
    metrics = {"perplexity": PPL}
    gates = (MAX_PPL_INCREASE,)

    def prepare(self, entry: PerplexityEntry, ctx: PrepareContext) -> TextJob:
        return TextJob(texts=load_texts(ctx, entry.file or ""), seqlen=entry.seqlen, max_samples=entry.max_samples)

    def steps(self, job: TextJob) -> int:
        return job.max_samples

    def run(self, job: TextJob, model: Any) -> WindowNLL:
        return window_nll(model.model, model.tokenizer, job, model.role, model.progress)

    def score(self, entry: PerplexityEntry, job: TextJob, outputs: dict[str, WindowNLL], ctx: ScoreContext) -> EvalResult:
        return perplexity_result(entry.label, self.name, outputs["base"], outputs["quantized"], entry.seed)
