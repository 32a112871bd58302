"""The files the stages hand to each other, as typed models, and the names of every file.

quantize writes ``hubpub_manifest.json`` and ``hubpub_recipe.toml``; validate writes
``hubpub_metrics.json``; card writes ``README.md`` (+ plots); push uploads the folder.
Keeping the schemas here lets card and push read what quantize and validate wrote without
importing torch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST = "hubpub_manifest.json"
RECIPE_COPY = "hubpub_recipe.toml"
METRICS = "hubpub_metrics.json"
CARD = "README.md"
ASSETS_DIR = "assets"  # plots and grounding images, linked from the card


class Artifact(BaseModel):
    # extra="allow": a newer hubpub may add fields; an older one must still read the file
    model_config = ConfigDict(extra="allow")

    @classmethod
    def read(cls, path: Path):  # type: ignore[no-untyped-def]
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))

    def write(self, path: Path) -> None:
        write_atomic(Path(path), self.model_dump_json(indent=2, by_alias=True) + "\n")


# ----------------------------------------------------------------------------- manifest
class TensorGroup(BaseModel):
    """One line of the inventory: a name pattern and what happened to its tensors."""

    model_config = ConfigDict(extra="allow")

    pattern: str  # e.g. "model.layers.*.self_attn.q_proj" or "vision_model.*"
    action: Literal["quantized", "kept"]
    tensors: int  # tensors in the base checkpoint matched by this group
    linears: int = 0  # quantized groups: linear layers quantized
    packed_tensors: int = 0  # quantized groups: tensors written (qweight, scales, qzeros, ...)
    bytes_before: int
    bytes_after: int
    dtype: str | None = None  # kept groups: stored dtype
    rescaled: int = 0  # kept groups: tensors whose values the backend changed (AWQ scales folded into norms)


class Manifest(Artifact):
    hubpub_version: str
    recipe_hash: str  # hash of the quantize-relevant recipe sections + the source fingerprint
    source: dict[str, Any]  # {"kind", "location", "revision", "fingerprint"}
    model_name: str
    model_type: str  # config.model_type of the full model
    architecture: str  # config.architectures[0] of the full model
    task: Literal["causal-lm", "image-text-to-text", "custom"]
    trust_remote_code: bool = False
    method: str
    bits: int
    group_size: int
    sym: bool
    format: str
    iters: int
    nsamples: int
    seqlen: int
    split_prefix: str | None = None
    block_name_to_quantize: str | None = None
    groups: list[TensorGroup]
    tensors_before: int
    tensors_after: int
    linears_quantized: int
    bytes_before: int  # weight bytes of the base checkpoint (BF16)
    bytes_after: int  # weight bytes of the quantized checkpoint
    timings: dict[str, float]  # seconds: load, calibrate/quantize, export, repack, total
    versions: dict[str, str]  # torch, transformers, auto_round, hubpub, python
    device: str
    files: list[str] = Field(default_factory=list)  # files of the release folder written by quantize
    # quantize backend provenance (older manifests lack these: defaults keep them readable)
    algorithms: list[str] = Field(default_factory=list)  # auto-round algorithms run, e.g. ["awq", "rtn"]
    backend_settings: dict[str, Any] = Field(default_factory=dict)  # the backend's own [quantize] keys
    kept_bf16_linears: list[str] = Field(default_factory=list)  # block linears kept BF16 (keep_bf16 / not targets)
    plan: dict[str, Any] | None = None  # {"blocks", "groups": {pattern: {quantized, kept}}, "quantized", "kept"}
    calibration_coverage: dict[str, Any] | None = None  # per target group: calls / tokens that reached it
    calibration_sources: list[dict[str, Any]] = Field(default_factory=list)  # kind, name, revision, samples, sha256 (hubpub/calibration)


# ----------------------------------------------------------------------------- metrics
Interval = tuple[float, float]  # (low, high) of a 95 % interval


class MetricInfo(BaseModel):
    """How one eval metric is shown; set by its eval kind, so the card never guesses from a name."""

    model_config = ConfigDict(extra="allow", frozen=True)

    label: str
    unit: str = ""  # "%" = a fraction shown as a percentage; "" = a plain number; or a unit name
    higher_is_better: bool = True
    digits: int = 3  # decimals shown (for "%": decimals of the percentage)
    delta: Literal["relative", "absolute", "points"] = "absolute"  # how base -> quantized is shown
    headline: bool = True  # shown in the TL;DR table


class ModelMetrics(BaseModel):
    model_config = ConfigDict(extra="allow")

    weight_bytes: int
    # memory of the model itself, measured apart from eval work: resident after load, and the peak
    # while the generation modes ran (both above the process's baseline before loading)
    peak_memory_bytes: int | None = None
    resident_bytes: int | None = None
    memory_kind: str = "peak_rss_above_baseline"  # or "cuda_max_allocated"
    load_s: float | None = None
    latency_s: float | None = None  # median per call after warm-up (median over modes of each mode's median)
    latency_interval: Interval | None = None  # bootstrap 95 % interval of latency_s (runs resampled per mode)
    latency_runs: int = 0  # timed calls per mode
    tokens_per_s: float | None = None
    validity: float | None = None  # fraction of modes whose output passed its checks
    quant_backend: str | None = None  # the module class that runs the quantized layers
    # other runtimes the modes ran in besides transformers, e.g. {"llama.cpp": {"version", "passed",
    # "problem", "latency_s"}} for a GGUF release when llama-cpp-python is installed
    runtimes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # how latency was measured: "interleaved" (base and quantized alternating in one process),
    # "separate" (each in its own worker), "failed" (the timing process failed; no latency); None before 0.2
    latency_timing: str | None = None


class ModeResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    mode: str
    model: Literal["base", "quantized"]
    ok: bool
    expected: str
    output: str
    latency_s: float | None = None
    latencies_s: list[float] = Field(default_factory=list)  # every timed call
    problem: str | None = None


class EvalResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    # headline numbers, e.g. {"perplexity": {"base": 12.1, "quantized": 12.6}}
    metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    # 95 % intervals per metric: {"perplexity": {"base": (lo, hi), "quantized": (lo, hi), "delta": (lo, hi)}};
    # "delta" is the interval of the difference in the metric's delta unit (relative or absolute)
    intervals: dict[str, dict[str, Interval]] = Field(default_factory=dict)
    display: dict[str, MetricInfo] = Field(default_factory=dict)  # how each metric is shown
    per_class: list[dict[str, Any]] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list)  # relative to the release folder
    notes: list[str] = Field(default_factory=list)  # base limitations and other facts for the card
    details: dict[str, Any] = Field(default_factory=dict)  # kind-specific extras (lm_eval: command, tasks)


class GateResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    threshold: float
    value: float | None
    passed: bool
    vacuous: bool = False  # the limit cannot fail (e.g. min_validity = 0): reported as such
    unit: str = ""  # how value/threshold read: "relative" (0.10 = +10 %), "%" or "" (plain)
    note: str = ""


class Sample(BaseModel):
    model_config = ConfigDict(extra="allow")

    mode: str
    prompt: str
    base: str
    quantized: str


class Metrics(Artifact):
    hubpub_version: str
    recipe_hash: str  # the manifest's recipe_hash this was measured on
    passed: bool
    environment: dict[str, Any]  # device, torch, transformers, auto_round, python, cpu/gpu name
    base: ModelMetrics | None = None
    quantized: ModelMetrics
    modes: list[ModeResult] = Field(default_factory=list)
    evals: list[EvalResult] = Field(default_factory=list)
    gates: list[GateResult] = Field(default_factory=list)
    samples: list[Sample] = Field(default_factory=list)
    base_limitations: list[str] = Field(default_factory=list)  # modes that fail on the base model too


# ----------------------------------------------------------------------------- helpers
def write_atomic(path: Path, text: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if isinstance(text, bytes) else {"encoding": "utf-8"})) as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a release file is as readable as any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
