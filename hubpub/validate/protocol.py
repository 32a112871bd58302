"""The typed protocol between validate and its worker processes.

The parent writes a :class:`WorkerJob` as JSON, runs ``python -m hubpub.validate._worker_main JOB``
and reads back a :class:`WorkerResult`; progress travels as :class:`Progress` lines on the
worker's stdout. Eval-specific parts are each eval kind's own ``Job`` / ``Output`` models,
re-validated on arrival by the kind named beside them. No string-keyed dict crosses the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationInfo, field_validator

PROGRESS = "@@hubpub "  # prefix of a Progress line on the worker's stdout
BUILTIN_SCENE = "builtin:scene"
Role = Literal["base", "quantized"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChatTurn(Model):
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateArgs(Model):
    """generate() arguments a mode may set (recipe.GENERATE_KWARGS); unset ones are not passed."""

    max_new_tokens: Optional[int] = None
    min_new_tokens: Optional[int] = None
    do_sample: Optional[bool] = None
    temperature: Optional[float] = None
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    num_beams: Optional[int] = None
    num_return_sequences: Optional[int] = None
    repetition_penalty: Optional[float] = None
    no_repeat_ngram_size: Optional[int] = None
    length_penalty: Optional[float] = None
    early_stopping: Optional[bool] = None
    seed: Optional[int] = None

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ModeJob(Model):
    """One generation mode, as the worker runs it."""

    name: str
    prompt: Union[str, list[ChatTurn], None] = None
    prompts: Optional[list[str]] = None
    images: list[str] = Field(default_factory=list)  # absolute paths or builtin:scene
    generate: GenerateArgs = Field(default_factory=GenerateArgs)
    stream: bool = False
    custom_generate: Optional[str] = None
    arguments: dict[str, str] = Field(default_factory=dict)  # custom_generate parameter -> hubpub value
    custom_kwargs: dict[str, Any] = Field(default_factory=dict)  # passed as they are
    task: Optional[str] = None

    @property
    def is_chat(self) -> bool:
        return isinstance(self.prompt, list)

    def text(self) -> str:
        """The user text of the prompt (chat turns joined)."""
        if isinstance(self.prompt, list):
            return "\n".join(m.content for m in self.prompt if m.role == "user")
        return self.prompt or ""


def _kind_model(kind: str, attr: str, value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value
    from .evals import eval_kinds

    return getattr(eval_kinds.get(kind), attr).model_validate(value)


class EvalJob(Model):
    index: int
    kind: str
    label: str
    spec: SerializeAsAny[BaseModel]  # the kind's Job model

    @field_validator("spec", mode="before")
    @classmethod
    def _typed(cls, value: Any, info: ValidationInfo) -> Any:
        return _kind_model(info.data["kind"], "Job", value)


class WorkerJob(Model):
    role: Role
    model_dir: str
    task: str
    trust_remote_code: bool
    dtype: str
    device: str  # auto | cpu | cuda
    threads: Optional[int] = None
    modes: list[ModeJob]
    warmup_runs: int
    latency_runs: int
    scene_image: Optional[str] = None
    evals: list[EvalJob] = Field(default_factory=list)
    result_path: str
    # False: each mode runs once, untimed (outputs and memory only); the latencies then come from
    # the interleaved timing phase (TimingJob), where base and quantized run in the same conditions
    timed: bool = True


class ModeRun(Model):
    outputs: list[str] = Field(default_factory=list)
    latencies_s: list[float] = Field(default_factory=list)  # timed calls (after warm-up)
    starts_s: list[float] = Field(default_factory=list)  # timing phase only: when each timed call began (s after the first)
    new_tokens: int = 0
    error: Optional[str] = None


class EvalOutput(Model):
    index: int
    kind: str
    output: Optional[SerializeAsAny[BaseModel]] = None  # the kind's Output model
    error: Optional[str] = None

    @field_validator("output", mode="before")
    @classmethod
    def _typed(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else _kind_model(info.data["kind"], "Output", value)


class LoadingProblems(Model):
    missing_keys: list[str] = Field(default_factory=list)
    unexpected_keys: list[str] = Field(default_factory=list)
    mismatched_keys: list[str] = Field(default_factory=list)

    def any(self) -> bool:
        return bool(self.missing_keys or self.unexpected_keys or self.mismatched_keys)


class Memory(Model):
    kind: Literal["peak_rss_above_baseline", "cuda_max_allocated"]
    resident_bytes: int  # the model's own footprint after load (above the pre-load baseline)
    peak_bytes: int  # peak while the generation modes ran (evals excluded)


class Environment(Model):
    model_config = ConfigDict(extra="allow")

    device: str
    python: str
    torch: str
    transformers: Optional[str] = None
    auto_round: Optional[str] = None
    cpu: str = ""
    threads: int = 0
    gpu: Optional[str] = None


class WorkerResult(Model):
    role: Role
    environment: Optional[Environment] = None
    load_s: Optional[float] = None
    load_error: Optional[str] = None
    loading_problems: LoadingProblems = Field(default_factory=LoadingProblems)
    modes: list[ModeRun] = Field(default_factory=list)
    evals: list[EvalOutput] = Field(default_factory=list)
    memory: Optional[Memory] = None
    quant_backend: Optional[str] = None  # module class of the quantized linears, e.g. auto_round ... QuantLinear


class TimingJob(Model):
    """The interleaved timing phase: one process loads both models and alternates their calls.

    ``models`` holds one WorkerJob per role (model folder, dtype, device, modes, warmup_runs,
    latency_runs; their evals are empty). For each mode, every model does its warm-up calls, then
    the timed calls alternate in ABBA order (base, quantized, quantized, base, ...), so drift of
    the machine (load, clocks, caches) falls on both models alike. No memory is measured here:
    memory is each model's own footprint, measured alone in its own worker.
    """

    kind: Literal["timing"] = "timing"
    models: list[WorkerJob]
    result_path: str


class TimedModel(Model):
    role: Role
    load_error: Optional[str] = None
    modes: list[ModeRun] = Field(default_factory=list)  # latencies_s and new_tokens of the timed calls


class TimingResult(Model):
    order: str = "abba"  # how the timed calls alternated
    models: list[TimedModel] = Field(default_factory=list)

    def of(self, role: str) -> Optional[TimedModel]:
        return next((m for m in self.models if m.role == role), None)


class Progress(Model):
    """One line of worker progress: ``step`` (e.g. "modes", "eval perplexity") did ``done`` of ``total``."""

    step: str
    done: int
    total: int
    item: str = ""


@dataclass
class LoadedModel:
    """What an eval kind's ``run`` gets in the worker: the loaded model and a way to generate."""

    model: Any
    tokenizer: Any
    processor: Any
    role: Role
    device: str
    generate: Callable[[ModeJob], list[str]]  # one untimed call of a mode: decoded outputs
    progress: Callable[[str], None]  # one unit of the eval's steps done (item label)
    work_dir: str
    model_dir: str = ""  # the checkpoint folder (for kinds that reload parts of it, e.g. a fresh tokenizer)
