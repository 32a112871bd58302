"""An eval kind from outside hubpub: ``kind = "demo-entropy"``, the mean entropy (nats) of the
next-token distribution after each prompt, base vs quantized, with a gate of its own.

An eval kind satisfies hubpub.validate.evals.EvalKind: a recipe ``Entry`` (``kind`` as a
Literal), a ``Job`` / ``Output`` pair of pydantic models (what crosses into the worker process
and back), ``prepare`` / ``run`` / ``score``, how its metric is shown, and its gates.
Importing this module stays light: torch only inside ``run``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from hubpub.artifacts import EvalResult, MetricInfo
from hubpub.recipe import EvalEntry
from hubpub.validate.evals import GateSpec, mean

ENTROPY = MetricInfo(label="Next-token entropy", unit="nats", higher_is_better=False, digits=3, delta="relative")


class EntropyEntry(EvalEntry):
    kind: Literal["demo-entropy"]
    prompts: list[str] = Field(default_factory=lambda: ["The capital of France is", "def add(a, b):"], min_length=1)


class EntropyJob(BaseModel):
    prompts: list[str]


class EntropyOutput(BaseModel):
    entropies: list[float]


class DemoEntropy:
    name = "demo-entropy"
    display_name = "Next-token entropy (plugin)"
    reference_url = "https://example.invalid/hubpub-plugin-demo"
    Entry = EntropyEntry
    Job = EntropyJob
    Output = EntropyOutput
    metrics = {"entropy": ENTROPY}
    gates = (GateSpec(name="max_entropy_increase", metric="entropy", direction="max", value="relative_change",
                      ge=0.0, bounds=(-1.0, math.inf), unit="relative", description="relative rise of the entropy"),)

    def prepare(self, entry: EntropyEntry, ctx: Any) -> EntropyJob:
        return EntropyJob(prompts=entry.prompts)

    def steps(self, job: EntropyJob) -> int:
        return len(job.prompts)

    def run(self, job: EntropyJob, model: Any) -> EntropyOutput:
        import torch

        out = []
        with torch.inference_mode():
            for prompt in job.prompts:
                ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.model.device)
                logp = torch.log_softmax(model.model(input_ids=ids).logits[0, -1].float(), dim=-1)
                out.append(float(-(logp.exp() * logp).sum()))
                model.progress(prompt[:20])
        return EntropyOutput(entropies=out)

    def score(self, entry: EntropyEntry, job: EntropyJob, outputs: dict[str, EntropyOutput], ctx: Any) -> EvalResult:
        result = EvalResult(name=entry.label, kind=self.name, display={"entropy": ENTROPY})
        result.metrics["entropy"] = {"base": mean(outputs["base"].entropies), "quantized": mean(outputs["quantized"].entropies)}
        return result
