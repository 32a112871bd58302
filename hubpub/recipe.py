"""The TOML recipe: one pydantic model, the single source of truth for every stage.

``load_recipe(path)`` reads and checks a recipe; every problem becomes a one-line
:class:`~hubpub.errors.RecipeError` naming the file, the line where it can be found, the
field path and how to fix it, e.g.::

    recipe.toml:7: quantize.bits: must be 2, 3, 4 or 8 (got 5)

Relative paths inside a recipe are resolved against the recipe file's folder; the default
``output_dir`` is ``out/<recipe file stem>`` under the current working directory.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMATS = ("auto_round", "auto_gptq", "auto_awq", "llm_compressor")  # the built-ins; hubpub.quantize.formats is the registry
BITS = (2, 3, 4, 8)
# The generate() arguments a validation mode may set; anything else is a typo we report.
GENERATE_KWARGS = (
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "num_beams",
    "num_return_sequences",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "length_penalty",
    "early_stopping",
    "seed",
)
HEX40 = re.compile(r"^[0-9a-f]{40}$")
# Same rule as huggingface_hub.utils.validate_repo_id, kept here so parsing a recipe stays fast.
REPO_ID = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$")
BUILTIN_CORPORA = ("builtin:pydoc",)


def _did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(choices)}"


def looks_like_repo_id(value: str) -> bool:
    return repo_id_problem(value, namespace=False) is None


def repo_id_problem(value: str, *, namespace: bool = True) -> str | None:
    """Why value is not a Hub repo id by huggingface_hub's own rule (validate_repo_id), or None."""
    shape = "must be 'owner/name'" if namespace else "must be a Hub repo id"
    if not value.isascii():
        return f"{shape} in ASCII letters, digits, '-', '_' or '.'"
    if re.search(r"[^A-Za-z0-9_.\-/]", value):
        return f"{shape} with letters, digits, '-', '_' or '.'"
    if namespace and value.count("/") != 1:
        return f"{shape} (one '/')"
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        if "--" in value or ".." in value:
            return f"{shape} without '--' or '..'"
        if value.endswith(".git"):
            return f"{shape} not ending in '.git'"
        del exc
        return f"{shape} with letters, digits, '-', '_' or '.', not starting or ending with '-' or '.', at most 96 each"
    return None


def ref_problem(value: str) -> str | None:
    """Why value cannot be a git branch / tag / commit name on the Hub (git check-ref-format), or None."""
    if not value:
        return "must not be empty"
    if not value.isascii():
        return "must be ASCII"
    if value != value.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "~^:?*[\\" for c in value):
        return "must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    if ".." in value or "@{" in value or "//" in value or value == "@":
        return "must not contain '..', '@{' or '//'"
    if value.startswith(("/", ".", "-")) or value.endswith(("/", ".", ".lock")):
        return "must not start with '/', '.' or '-', nor end with '/', '.' or '.lock'"
    return None


class Section(BaseModel):
    """Base of every recipe table: unknown keys are errors."""

    # strict: TOML has real booleans and numbers, so "yes" for a bool is a mistake, not a bool
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


# ----------------------------------------------------------------------------- [model]
class ModelSection(Section):
    source: str = Field(description="Local folder, Hub repo id, a .gguf file, or package:NAME")
    revision: str | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False
    name: str | None = None
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a local folder, a Hub repo id, a .gguf file or package:NAME")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        bad = ref_problem(v) if v is not None else None
        if bad:
            raise ValueError(f"{bad}; use a branch, tag or 40-hex commit sha of the base model (got {v!r})")
        return v

    @model_validator(mode="after")
    def _remote_code_is_pinned(self, info: Any) -> "ModelSection":
        base_dir = Path((info.context or {}).get("base_dir", "."))
        if self.trust_remote_code and self.source_kind(base_dir) == "hub" and not (self.revision and HEX40.match(self.revision)):
            raise ValueError(
                "trust_remote_code = true with a Hub source needs revision pinned to a 40-hex commit sha,"
                " so the code you run is the code you reviewed"
            )
        return self

    def source_kind(self, base_dir: Path) -> Literal["package", "gguf", "folder", "hub"]:
        """How ``source`` is to be read. A path that exists wins over a Hub id."""
        if self.source.startswith("package:"):
            return "package"
        path = resolve_path(base_dir, self.source)
        if self.source.endswith(".gguf"):
            return "gguf"
        if path.exists():
            return "folder"
        if looks_like_repo_id(self.source) and not self.source.startswith((".", "/", "~")):
            return "hub"
        return "folder"

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        src = self.source.removeprefix("package:").rstrip("/")
        return Path(src).name.removesuffix(".gguf")


# ----------------------------------------------------------------------------- [quantize]
class SplitSection(Section):
    prefix: str = Field(description="Prefix of the text decoder's tensors in the full checkpoint")
    config_key: str | None = None
    architecture: str | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix_shape(cls, v: str) -> str:
        if not v or not v.endswith("."):
            raise ValueError(f"must end with '.', e.g. 'language_model.' (got {v!r})")
        return v


class CalibrationSource(Section):
    """One entry of ``[quantize] calibration = [...]`` (hubpub/calibration/: kinds, reading, sample split)."""

    source: str = Field(description="builtin:pydoc, a .jsonl / .txt / .parquet file, a dataset folder, or hf:owner/name")
    samples: int | None = Field(None, ge=1, description="calibration samples taken from this source")
    weight: float | None = Field(None, gt=0, description="share of quantize.nsamples (normalized over the weighted sources)")
    column: str | None = Field(None, description="text column (.jsonl / .parquet / datasets; default 'text')")
    split: str | None = Field(None, description="dataset split (hf: / dataset folder; default 'train')")
    revision: str | None = Field(None, description="Hub dataset revision (hf: only)")
    streaming: bool = Field(False, description="stream the dataset instead of downloading it whole (hf: / dataset folder)")

    @model_validator(mode="after")
    def _source_fits(self) -> "CalibrationSource":
        from .calibration import source_problem

        problem = source_problem(self)
        if problem:
            from pydantic_core import PydanticCustomError

            key, msg = problem
            raise PydanticCustomError("hubpub_nested", "{message}", {"message": msg, "error": {
                "type": "value_error", "loc": (key,), "msg": msg, "input": getattr(self, key)}})
        return self


class QuantizeSection(Section):
    """[quantize]. ``method`` names a quantize backend and ``format`` an export format from their
    registries (hubpub/quantize/backends, hubpub/quantize/formats; plugins add more). Keys that
    only the chosen backend reads (e.g. AWQ's ``n_grid``) are validated by its settings model."""

    method: str = "autoround"
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    iters: int = Field(200, ge=0, description="tuning steps per block (tuned backends: autoround, awq+autoround)")
    nsamples: int = Field(128, ge=1)
    seqlen: int = Field(2048, ge=8)
    batch_size: int = Field(8, ge=1)
    format: str = "auto_round"
    targets: list[str] = Field(default_factory=list, description="glob patterns of the linears to quantize (default: every Linear in the blocks)")
    blocks: list[str] = Field(default_factory=list, description="module lists holding the blocks (default: detected)")
    keep_bf16: list[str] = Field(default_factory=list)
    calibration: Union[str, list[CalibrationSource]] = "builtin:pydoc"  # one corpus, or sources (hubpub/calibration/)
    calibration_hook: str | None = Field(None, description="'file.py:function' (relative to the recipe) or 'module:function'"
                                         " yielding forward calls (kwargs) that calibrate paths text does not reach;"
                                         " runs only with model.trust_remote_code (hubpub/calibration/hook.py)")
    calibration_hook_samples: int | None = Field(None, ge=1, description="forward calls taken from calibration_hook (default: nsamples)")
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    low_gpu_mem_usage: bool = False
    split: SplitSection | None = None

    _settings: Any = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _backend_settings(cls, data: Any, handler: Any) -> "QuantizeSection":
        if not isinstance(data, dict):
            return handler(data)
        own = {k: v for k, v in data.items() if k in cls.model_fields}
        section = handler(own)
        section._settings = _quantize_settings(section.method, {k: v for k, v in data.items() if k not in cls.model_fields})
        return section

    @property
    def settings(self) -> Any:
        """The backend's own settings (its settings_model instance), or None if it has none."""
        if self._settings is None:
            self._settings = _quantize_settings(self.method, {})
        return self._settings

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        from .quantize.backends import backends

        backends.get(v)  # ValueError listing the installed choices
        return v

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in BITS:
            raise ValueError(f"must be 2, 3, 4 or 8 (got {v})")
        return v

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int) -> int:
        if v == -1 or (v >= 16 and v & (v - 1) == 0):
            return v
        raise ValueError(f"must be -1 (per channel) or a power of two >= 16, e.g. 32, 64, 128 (got {v})")

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        from .quantize.formats import formats

        if v.startswith("gguf:") and v not in formats:  # a GGUF type hubpub does not export: list the ones it does
            from .quantize.formats.gguf import unknown_type

            raise ValueError(unknown_type(v))
        if v not in formats:  # the GGUF types count as one choice here, "gguf:<type>"
            from .quantize.formats.gguf import unknown_format

            raise ValueError(unknown_format(v, formats.names()))
        return v

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, v: "str | list[CalibrationSource]") -> "str | list[CalibrationSource]":
        if not isinstance(v, str):
            if not v:
                raise ValueError('must name at least one source, e.g. [{ source = "builtin:pydoc", samples = 8 }]')
            return v
        if v.startswith("builtin:") and v not in BUILTIN_CORPORA:
            raise ValueError(f"unknown built-in corpus {v!r}{_did_you_mean(v, BUILTIN_CORPORA)}")
        if not v.startswith("builtin:") and not v.endswith((".jsonl", ".txt")):
            raise ValueError(f"must be a .jsonl file with a \"text\" field, a .txt file, or one of {', '.join(BUILTIN_CORPORA)} (got {v!r})")
        return v

    @field_validator("targets", "blocks", "keep_bf16")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.strip():
                raise ValueError("patterns must not be empty; give module names or globs like 'model.layers.*.mlp.*'")
        return v

    @field_validator("calibration_hook")
    @classmethod
    def _hook_spec(cls, value: str | None) -> str | None:
        if value is not None:
            from .calibration.hook import parse_spec

            parse_spec(value)  # ValueError with the expected shape
        return value

    @model_validator(mode="after")
    def _format_fits_scheme(self) -> "QuantizeSection":
        """(backend, scheme, format, device) combinations that cannot be written or loaded back."""
        from .quantize.backends import backends
        from .quantize.formats import formats

        backend, fmt = backends.get(self.method), formats.get(self.format)
        if backend.formats is not None and self.format not in backend.formats:
            raise ValueError(f"method {self.method!r} cannot write format {self.format!r}; use format {backend.formats[0]!r}")
        if self.device != "auto" and self.device not in backend.devices:
            raise ValueError(f"method {self.method!r} runs on {' or '.join(backend.devices)} only; set device = 'auto'")
        reason = fmt.refuse(backend=self.method, bits=self.bits, sym=self.sym, device=self.device)
        if not reason and hasattr(fmt, "refuse_group_size"):  # formats with a fixed block size (gguf:*)
            reason = fmt.refuse_group_size(self.group_size)
        if reason:
            raise ValueError(reason)
        return self


def _quantize_settings(method: str, extra: dict[str, Any]) -> Any:
    """Validate the [quantize] keys the backend owns; errors keep their field path (quantize.<key>)."""
    from pydantic_core import PydanticCustomError

    from .quantize.backends import backends, setting_names, validate_settings

    backend = backends.get(method)
    names = setting_names(backend)
    for key in extra:
        if key not in names:
            owners = [b.name for b in backends if key in setting_names(b)]
            if owners:
                msg = f"read by method {' / '.join(map(repr, owners))} only, not {method!r}; remove it or change quantize.method"
            else:
                msg = f"unknown field{_did_you_mean(key, list(QuantizeSection.model_fields) + names)}"
            raise PydanticCustomError("hubpub_nested", "{message}", {"message": msg, "error": {"type": "value_error", "loc": (key,), "msg": msg, "input": extra[key]}})
    try:
        return validate_settings(backend, extra)
    except ValidationError as exc:
        inner = exc.errors(include_url=False)[0]
        raise PydanticCustomError("hubpub_nested", "{message}", {"message": inner["msg"], "error": dict(inner)}) from None


def _unnest(errors: list[Any]) -> list[Any]:
    """Errors a section validated itself (backend settings) carry their inner error: put it in place."""
    out = []
    for err in errors:
        inner = (err.get("ctx") or {}).get("error") if err.get("type") == "hubpub_nested" else None
        out.append({**inner, "loc": tuple(err["loc"]) + tuple(inner["loc"])} if inner else err)
    return out


# ----------------------------------------------------------------------------- [validate]
class ChatMessage(Section):
    role: Literal["system", "user", "assistant"]
    content: str


class Expect(Section):
    """What a generation mode's output must look like."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True, strict=True)

    nonempty: bool = True
    no_replacement_char: bool = True
    regex: str | None = None
    is_json: bool = Field(False, alias="json", description="the output parses as JSON")
    boxes: int | None = Field(None, ge=1, description="at least this many <box>x1,y1,x2,y2</box>")
    points: int | None = Field(None, ge=1, description="at least this many points")

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return v


# What a custom_generate method can be given, by name ([[validate.modes]] arguments = {param = "value"}):
# the worker builds exactly these (hubpub/validate/worker.py custom_values); README "Custom generation modes".
CUSTOM_VALUES = ("tokenizer", "processor", "images", "image", "prompt", "messages", "prompts", "task", "max_new_tokens", "generate")
DEFAULT_CUSTOM_CALL = ("tokenizer", "images", "prompt", "task")  # without `arguments`, plus **generate


class Mode(Section):
    name: str
    prompt: Union[str, list[ChatMessage], None] = None
    prompts: list[str] | None = None
    images: list[str] = Field(default_factory=list)
    generate: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    custom_generate: str | None = None
    # custom_generate's call (README "Custom generation modes"): without `arguments` hubpub calls
    # method(tokenizer=, images=, prompt=, task=, **generate); with it, exactly the listed
    # parameters ({method parameter: hubpub value}, values from CUSTOM_VALUES), then custom_kwargs
    arguments: dict[str, str] = Field(default_factory=dict)
    custom_kwargs: dict[str, Any] = Field(default_factory=dict)
    task: str | None = None
    expect: Expect = Field(default_factory=Expect)

    @field_validator("generate")
    @classmethod
    def _known_generate_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key not in GENERATE_KWARGS:
                raise ValueError(f"unknown generate argument {key!r}{_did_you_mean(key, GENERATE_KWARGS)}")
        return v

    @field_validator("custom_generate")
    @classmethod
    def _method_name(cls, v: str | None) -> str | None:
        if v is not None and not (v.isidentifier() and not v.startswith("__")):
            raise ValueError(f"must be the name of a method of the model, like 'generate_slow' (got {v!r})")
        return v

    @field_validator("arguments")
    @classmethod
    def _arguments(cls, v: dict[str, str], info) -> dict[str, str]:  # type: ignore[no-untyped-def]
        if v and not info.data.get("custom_generate"):
            raise ValueError("only for a mode with custom_generate (the model method these arguments are passed to)")
        for param, value in v.items():
            if not param.isidentifier():
                raise ValueError(f"{param!r} is not a Python parameter name")
            if value not in CUSTOM_VALUES:
                raise ValueError(f"{param} = {value!r}: unknown value{_did_you_mean(value, CUSTOM_VALUES)}"
                                 f" (hubpub passes: {', '.join(CUSTOM_VALUES)})")
            if value == "image" and not info.data.get("images"):
                raise ValueError(f"{param} = 'image' needs an image: add images = [...] to the mode")
        return v

    @field_validator("custom_kwargs")
    @classmethod
    def _custom_kwargs(cls, v: dict[str, Any], info) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        if v and not info.data.get("custom_generate"):
            raise ValueError("only for a mode with custom_generate (the model method these arguments are passed to)")
        mapped = info.data.get("arguments") or {}
        passed = set(mapped) if mapped else {*DEFAULT_CUSTOM_CALL, *(info.data.get("generate") or {})}
        for key in v:
            if not key.isidentifier():
                raise ValueError(f"{key!r} is not a Python parameter name")
            if key in passed:
                where = "arguments" if mapped else "hubpub's default call (tokenizer, images, prompt, task and the generate table)"
                raise ValueError(f"{key!r} is already passed by {where}; set it in one place")
        return v

    @model_validator(mode="after")
    def _has_prompt(self) -> "Mode":
        if self.prompt is None and not self.prompts:
            raise ValueError(f"mode {self.name!r} needs 'prompt' (text or chat messages) or 'prompts' (a batch)")
        if self.prompt is not None and self.prompts:
            raise ValueError(f"mode {self.name!r} sets both 'prompt' and 'prompts': keep one")
        return self


class GatesBase(Section):
    """Thresholds; validate fails when one is violated. Unset gates are not checked.

    Gates are relative to the base: a mode that fails on the base is a base limitation (shown in
    the card), not a regression. The gate fields other than these two come from the eval kinds
    (hubpub.validate.evals: each kind declares the gates it defines), see :func:`ensure_eval_kinds`.
    """

    min_validity: float | None = Field(1.0, ge=0, le=1, description="fraction of the modes passing on the base that must pass on the quantized model")
    absolute_validity: bool = Field(False, description="min_validity counts every mode, also those that fail on the base")

    def configured(self) -> dict[str, float]:
        """The eval-kind gates that are set: {name: threshold}."""
        return {k: v for k, v in self.model_dump().items() if k not in ("min_validity", "absolute_validity") and v is not None}


Gates = GatesBase  # replaced by a model with every eval kind's gate fields on first parse


class ValidateSection(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_new_tokens: int = Field(24, ge=1)
    warmup_runs: int = Field(1, ge=0)
    latency_runs: int = Field(3, ge=1)
    # "interleaved": after the per-model workers, one process loads both models and alternates their
    # timed calls (same conditions for both); "separate": each model is timed in its own worker (for
    # two models that do not fit in memory together; machine drift then falls into the difference)
    latency: Literal["interleaved", "separate"] = "interleaved"
    builtin_modes: bool = True
    modes: list[Mode] = Field(default_factory=list)
    gates: GatesBase = Field(default_factory=GatesBase)

    @model_validator(mode="after")
    def _unique_mode_names(self) -> "ValidateSection":
        seen: set[str] = set()
        for mode in self.modes:
            if mode.name in seen:
                raise ValueError(f"mode name {mode.name!r} is used twice: names must be unique")
            seen.add(mode.name)
        return self


# ----------------------------------------------------------------------------- [[eval]]
class EvalEntry(Section):
    """Base of every [[eval]] entry. Each eval kind (hubpub.validate.evals) subclasses it with
    ``kind: Literal["<its name>"]`` and its own fields; [[eval]] is a union discriminated on kind."""

    kind: str
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind

    def input_files(self) -> list[str]:
        """Recipe-relative files this entry reads (for the stage cache key and `hubpub check`)."""
        return []

    def input_dirs(self) -> list[str]:
        """Recipe-relative folders this entry reads (lm_eval's include_path)."""
        return []


_BUILT_KINDS: tuple[str, ...] | None = None


def ensure_eval_kinds() -> None:
    """Build [[eval]] (a union discriminated on ``kind``) and [validate.gates] from the installed
    eval kinds. Runs on the first parse, and again when a plugin registered a new kind."""
    global _BUILT_KINDS, Gates
    from pydantic import create_model
    from pydantic.fields import FieldInfo
    from typing import Annotated

    from .validate.evals import eval_kinds

    kinds = list(eval_kinds)
    names = tuple(k.name for k in kinds)
    if names == _BUILT_KINDS:
        return
    entries = tuple(k.Entry for k in kinds)
    union: Any = Annotated[Union[entries], Field(discriminator="kind")] if len(entries) > 1 else entries[0]
    gate_fields: dict[str, Any] = {}
    for kind in kinds:
        for gate in kind.gates:
            gate_fields.setdefault(gate.name, (float | None, Field(None, ge=gate.ge, le=gate.le, description=gate.description)))
    Gates = create_model("Gates", __base__=GatesBase, **gate_fields)  # type: ignore[call-overload]
    ValidateSection.__pydantic_fields__["gates"] = FieldInfo.from_annotated_attribute(Gates, Field(default_factory=Gates))
    ValidateSection.model_rebuild(force=True)
    Recipe.__pydantic_fields__["evals"] = FieldInfo.from_annotated_attribute(list[union], Field(default_factory=list, alias="eval"))  # type: ignore[valid-type]
    Recipe.__pydantic_fields__["validate_"] = FieldInfo.from_annotated_attribute(
        ValidateSection, Field(default_factory=ValidateSection, alias="validate"))
    Recipe.model_rebuild(force=True)
    _BUILT_KINDS = names


def _check_gates(recipe: "Recipe") -> str | None:
    """A gate whose eval is not configured: (field path, message) as one string, or None."""
    from .validate.evals import eval_kinds

    present = {e.kind for e in recipe.evals}
    for name in recipe.validate.gates.configured():
        owners = sorted(k.name for k in eval_kinds if any(g.name == name for g in k.gates))
        if owners and not present & set(owners):
            kinds = " or ".join(repr(o) for o in owners)
            return f"validate.gates.{name}: this gate reads an eval of kind {kinds} and the recipe has none; add an [[eval]] with kind = {owners[0]!r} or remove the gate"
    return None


# ----------------------------------------------------------------------------- [card]
class CardSection(Section):
    template_dir: str | None = None
    template: str = "README.md.j2"
    title: str | None = None
    summary: str | None = None
    base_model: str | None = Field(None, description="Hub id of the base model, for the card's front matter")
    license: str = "inherit"
    language: list[str] = Field(default_factory=list)
    pipeline_tag: str | None = None
    tags: list[str] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)
    credits: list[str] = Field(default_factory=list)
    plots: bool = True
    previous: str | None = Field(None, description="local folder of the previous release, for the history section")
    previous_tag: str | None = Field(None, description="tag of the previous release in the target repo")

    @field_validator("base_model")
    @classmethod
    def _base_model(cls, v: str | None) -> str | None:
        if v is not None and repo_id_problem(v):
            raise ValueError(f"must be a Hub repo id like 'org/name' (got {v!r})")
        return v

    @field_validator("previous_tag")
    @classmethod
    def _previous_tag(cls, v: str | None) -> str | None:
        bad = ref_problem(v) if v is not None else None
        if bad:
            raise ValueError(f"{bad}; give the tag of the previous release, e.g. 'v1' (got {v!r})")
        return v


# ----------------------------------------------------------------------------- [push]
class PushSection(Section):
    repo_id: str | None = None
    private: bool = False
    tag: str | None = None
    revision: str = "main"
    create_pr: bool = False
    delete_missing: bool = False
    commit_message: str | None = None
    # how a [[variant]] family is published (hubpub.variants): a repo per variant, one repo with a
    # subfolder per variant (one commit), or one repo with a branch per variant
    layout: Literal["repos", "subfolders", "branches"] = "repos"

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, v: str | None) -> str | None:
        bad = repo_id_problem(v) if v is not None else None
        if bad:
            raise ValueError(f"{bad} (got {v!r})")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str) -> str:
        bad = ref_problem(v)
        if bad:
            raise ValueError(f"{bad}; give the branch to commit to, e.g. 'main' (got {v!r})")
        return v

    @field_validator("commit_message")
    @classmethod
    def _commit_message(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty; remove it to get the generated message")
        return v

    @model_validator(mode="after")
    def _pr_without_tag(self) -> "PushSection":
        if self.create_pr and self.tag:
            raise ValueError("create_pr = true with a tag: a pull request is not a release, so it gets no tag;"
                             " remove push.tag, or set create_pr = false to commit and tag")
        return self

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        from .naming import TAG_HINT, is_tag_name

        if v is not None and not (v.isascii() and is_tag_name(v)):
            raise ValueError(f"must be a git tag name: {TAG_HINT} (got {v!r})")
        return v


# ----------------------------------------------------------------------------- [jobs]
JOB_TIMEOUT = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def timeout_seconds(value: str | int) -> int:
    """'2h' / '90m' / '45s' / '1d' / 7200 -> seconds (the units huggingface_hub's run_job takes)."""
    m = JOB_TIMEOUT.match(str(value).strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"must be a duration like '2h', '90m', '3600s' or a number of seconds (got {value!r})")
    return int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


class JobsSection(Section):
    """How `hubpub release --on hf-jobs` runs this recipe on Hugging Face Jobs (see docs/scaling-out.md)."""

    flavor: str = Field("a10g-small", description="Jobs hardware flavor, e.g. a10g-small, a100-large, h200")
    timeout: Union[str, int] = Field("2h", description="the job is stopped after this long: '2h', '90m', or seconds")
    image: str | None = Field(None, description="Docker image; default python:<local major.minor>")
    namespace: str | None = Field(None, description="user or org the job runs under (default: the token's user)")
    staging_repo: str | None = Field(None, description="private model repo the job's inputs are uploaded to")

    @field_validator("flavor")
    @classmethod
    def _flavor(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9\-]*", v):
            raise ValueError(f"must be a Jobs flavor name like 'a10g-small' or 'h200' (got {v!r})")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str | int) -> str | int:
        timeout_seconds(v)
        return v

    @field_validator("staging_repo")
    @classmethod
    def _staging_repo(cls, v: str | None) -> str | None:
        if v is not None and not (looks_like_repo_id(v) and "/" in v):
            raise ValueError(f"must be 'owner/name' (got {v!r})")
        return v

    @property
    def timeout_s(self) -> int:
        return timeout_seconds(self.timeout)


# ----------------------------------------------------------------------------- [[variant]] / [family]
class VariantSection(Section):
    """One [[variant]]: a ``name`` and overrides of [quantize] fields (any of them, backend settings
    included) and of [push] (``[variant.push]``: repo_id, revision, tag, path). Checked against the
    recipe's own [quantize] in hubpub.variants (every variant is re-validated as a whole recipe)."""

    model_config = ConfigDict(extra="allow", validate_default=True, strict=True)

    name: str
    push: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from .variants import name_problem

        bad = name_problem(v)
        if bad:
            raise ValueError(bad)
        return v

    @property
    def overrides(self) -> dict[str, Any]:
        """The [quantize] fields this variant sets."""
        return dict(self.model_extra or {})


class FamilySection(Section):
    """[family]: how the variants are compared. ``recommend`` is a rule like
    "smallest where top1_agreement >= 0.9" (hubpub.variants.parse_rule; no code is run)."""

    recommend: str | None = None
    title: str | None = None

    @field_validator("recommend")
    @classmethod
    def _recommend(cls, v: str | None) -> str | None:
        if v is not None:
            from .variants import parse_rule

            parse_rule(v)  # ValueError saying what is wrong
        return v


class SweepSection(Section):
    """[sweep]: ``grid = { group_size = [32, 64], method = ["rtn", "autoround"] }`` (each key a
    [quantize] field, each value the list of settings to try) and an optional ``pick`` rule like
    "max_size_mb=120,min_top1=0.85" (hubpub.variants.parse_pick). Used by `hubpub sweep` only."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    pick: str | None = None

    @model_validator(mode="after")
    def _fits(self) -> "SweepSection":
        from .sweep import section_problem

        problem = section_problem(self)
        if problem is not None:
            from pydantic_core import PydanticCustomError

            loc, msg, value = problem
            raise PydanticCustomError("hubpub_nested", "{message}", {"message": msg, "error": {
                "type": "value_error", "loc": loc, "msg": msg, "input": value}})
        return self


# ----------------------------------------------------------------------------- the recipe
class Recipe(Section):
    output_dir: str | None = None
    model: ModelSection
    quantize: QuantizeSection = Field(default_factory=QuantizeSection)
    validate_: ValidateSection = Field(default_factory=ValidateSection, alias="validate")
    evals: list[EvalEntry] = Field(default_factory=list, alias="eval")
    card: CardSection = Field(default_factory=CardSection)
    push: PushSection = Field(default_factory=PushSection)
    jobs: JobsSection = Field(default_factory=JobsSection)
    variants: list[VariantSection] = Field(default_factory=list, alias="variant")
    family: FamilySection = Field(default_factory=FamilySection)
    sweep: SweepSection = Field(default_factory=SweepSection)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True, strict=True)

    _path: Path = PrivateAttr(default=Path("recipe.toml"))
    _text: str = PrivateAttr(default="")
    # set on the recipes hubpub.variants builds: the family's shared scratch (base measured once)
    # and the family table the cards show
    _shared_work: Path | None = PrivateAttr(default=None)
    _family: Any = PrivateAttr(default=None)
    # a [[variant]] expanded into a plain recipe: (name, its effective [quantize] / [push] / [card]);
    # its published hubpub_recipe.toml is that single recipe (hubpub.portable)
    _variant: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _variants_fit(self, info: Any) -> "Recipe":
        if self.variants:
            from .variants import check_variants

            check_variants(self)  # raises a field-path error at variant[i].<field>
        return self

    # -- paths -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._path

    @property
    def text(self) -> str:
        """The recipe file's exact text (written beside the weights as hubpub_recipe.toml)."""
        return self._text

    @property
    def base_dir(self) -> Path:
        return self._path.parent

    @property
    def name(self) -> str:
        return self._path.stem

    def resolve(self, value: str | os.PathLike[str]) -> Path:
        return resolve_path(self.base_dir, value)

    @property
    def output_path(self) -> Path:
        if self.output_dir:
            return self.resolve(self.output_dir)
        return Path.cwd() / "out" / self.name

    @property
    def work_path(self) -> Path:
        """Scratch space beside the output (base model conversions, temp builds, stage state)."""
        out = self.output_path
        return out.parent / f".{out.name}.hubpub"

    @property
    def validate(self) -> ValidateSection:  # type: ignore[override]
        return self.validate_

    def section_hash(self, *sections: str) -> str:
        """A stable hash of some recipe sections (for stage caching and the manifest)."""
        data = self.model_dump(mode="json", by_alias=True)
        picked = {s: data.get(s) for s in sections}
        blob = json.dumps(picked, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def resolve_path(base_dir: Path, value: str | os.PathLike[str]) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else (base_dir / path)


# ----------------------------------------------------------------------------- loading
MAX_RECIPE_BYTES = 1024 * 1024  # a recipe is a few KiB; anything bigger is the wrong file


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where it is, which field, what to do."""

    file: str
    line: int | None
    field: str  # "" when the problem is about the file itself
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        where += f":{self.column}" if self.line and self.column else ""
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column, "field": self.field, "message": self.message}


def problems_error(problems: list[Problem]) -> RecipeError:
    """The one-line RecipeError for stage commands: the first problem, and how many more."""
    n_more = len(problems) - 1
    more = f" (and {n_more} more problem{'s' if n_more > 1 else ''}; `hubpub check` lists them all)" if n_more else ""
    return RecipeError(f"{problems[0]}{more}")


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read, parse and check a recipe file. Raises RecipeError with a one-line message."""
    recipe, problems = read_recipe(path)
    if problems:
        raise problems_error(problems)
    assert recipe is not None
    return recipe


def read_recipe(path: str | os.PathLike[str]) -> tuple[Recipe | None, list[Problem]]:
    """(recipe or None, every problem found): what `hubpub check` reports. Never raises for bad input."""
    path = Path(path)
    text, problem = read_recipe_text(path)
    if problem is not None:
        return None, [problem]
    return parse_recipe_problems(text, path)


def read_recipe_text(path: Path) -> tuple[str, Problem | None]:
    """The file's text, or the problem that stops us reading it. Special files are never opened:
    /dev/zero, a named pipe or a socket would block or never end."""
    shown = str(path)

    def bad(message: str) -> tuple[str, Problem]:
        return "", Problem(shown, None, "", message)

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return bad("file not found; pass the path of a recipe .toml file (see recipes/ for examples)")
    except NotADirectoryError:
        return bad("file not found (a part of the path is a file, not a folder); pass the path of a recipe .toml file")
    except PermissionError:
        return bad("permission denied; make the recipe file readable")
    except (OSError, ValueError) as exc:
        return bad(f"cannot read ({type(exc).__name__}: {exc}); pass the path of a recipe .toml file")
    if stat.S_ISDIR(st.st_mode):
        return bad("is a folder; pass the path of a recipe .toml file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
        return bad(f"is {kind}, not a file; pass the path of a recipe .toml file")
    if st.st_size > MAX_RECIPE_BYTES:
        return bad(f"is {st.st_size:,} bytes, more than a recipe can be ({MAX_RECIPE_BYTES:,}); pass the recipe .toml file, not a data file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_RECIPE_BYTES + 1)
    except PermissionError:
        return bad("permission denied; make the recipe file readable")
    except OSError as exc:
        return bad(f"cannot read ({exc.strerror or type(exc).__name__}); pass the path of a recipe .toml file")
    if len(raw) > MAX_RECIPE_BYTES:
        return bad(f"is more than {MAX_RECIPE_BYTES:,} bytes, more than a recipe can be; pass the recipe .toml file, not a data file")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return "", Problem(shown, line, "", "not UTF-8 text; save the recipe as UTF-8")


def parse_recipe(text: str, path: Path) -> Recipe:
    recipe, problems = parse_recipe_problems(text, path)
    if problems:
        raise problems_error(problems)
    assert recipe is not None
    return recipe


def parse_recipe_problems(text: str, path: Path) -> tuple[Recipe | None, list[Problem]]:
    """Parse and check recipe text: (the recipe if it has no problem, every problem found)."""
    shown = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [_toml_problem(shown, text, exc)]
    index = _line_index(text)
    problems: list[Problem] = []
    recipe: Recipe | None = None
    ensure_eval_kinds()  # [[eval]] and [validate.gates] are built from the installed eval kinds
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": str(path.resolve().parent)})
    except ValidationError as exc:
        problems = [_problem(shown, index, loc, msg) for loc, msg in _validation_problems(exc)]
    except RecursionError:  # pragma: no cover - tomllib refuses such nesting first
        problems = [Problem(shown, None, "", "nested too deeply; a recipe is a few flat tables")]
    if recipe is not None:
        gate = _check_gates(recipe)  # "field.path: message"
        if gate:
            field, _, message = gate.partition(": ")
            problems.append(Problem(shown, _lookup_line(index, _parse_field_path(field)), field, message))
    from .check import value_problems  # the rules pydantic field types cannot say

    seen = {p.field for p in problems}
    for loc, msg in value_problems(data):
        problem = _problem(shown, index, loc, msg)
        if problem.field not in seen:
            seen.add(problem.field)
            problems.append(problem)
    if problems:
        problems.sort(key=lambda p: p.line or 0)
        return None, problems
    assert recipe is not None
    recipe._path = path.resolve()
    recipe._text = text
    return recipe, []


def line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the TOML key at loc (e.g. ("eval", 1, "kind")), else of its closest parent."""
    return _lookup_line(_line_index(text), loc)


def _problem(shown: str, index: dict[tuple[Any, ...], int], loc: tuple[Any, ...], message: str) -> Problem:
    return Problem(shown, _lookup_line(index, loc), _field_path(loc), message)


def _toml_error(shown: str, exc: Exception) -> str:
    """One line for a TOML syntax error (for callers that parse TOML themselves)."""
    return str(_toml_problem(shown, "", exc))


def _toml_problem(shown: str, text: str, exc: Exception) -> Problem:
    msg = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    reason = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", msg)
    fix = "fix the syntax (strings need quotes, tables look like [quantize])"
    line, column = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    if m and reason == "Illegal character '\\n'":
        reason, fix = "unterminated string", 'close the quote on the same line (use """...""" for text over several lines)'
    if line is None and text:
        # '... (at end of document)': point at the line where the open string / array starts
        opened = _scan(text)[1]
        kind = "array" if "array" in reason.lower() or "inline table" in reason.lower() else "string"
        kind = kind if kind in opened else next((k for k in ("string", "array") if k in opened), None)
        if kind is not None:
            line = opened[kind]
            reason = {"string": "unterminated string", "array": "unclosed array or inline table"}[kind]
            fix = "close it (each \" ' \"\"\" \'\'\' [ { needs its closing partner)"
        else:  # the first line that is neither a [table] nor key = value, else where the text ends
            lines = text.splitlines()
            line = opened.get("stray") or next((i for i in range(len(lines), 0, -1) if lines[i - 1].strip()), 1)
    return Problem(shown, line, "", f"invalid TOML: {reason}; {fix}", column)


# -- which line holds a field ---------------------------------------------------------
_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*=""")
_HEADER = re.compile(r"""\s*(\[\[?)\s*((?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*\]\]?""")
_KEY_PART = re.compile(r"""[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*"|'[^']*'""")


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts = []
    for p in _KEY_PART.findall(dotted):
        if p.startswith('"'):
            try:
                p = json.loads(p)
            except ValueError:
                p = p[1:-1]
        elif p.startswith("'"):
            p = p[1:-1]
        parts.append(p)
    return tuple(parts)


def _scan(text: str) -> tuple[dict[tuple[Any, ...], int], dict[str, int]]:
    """(path -> line for every table header and key, the still-open construct at the end if any).

    Array-of-tables entries get their index: the second [[eval]] is ("eval", 1). Keys inside
    multi-line strings and arrays are skipped; inline tables are found at their key's line."""
    index: dict[tuple[Any, ...], int] = {}
    explicit: set[tuple[Any, ...]] = set()
    arrays: dict[tuple[Any, ...], int] = {}  # array-of-tables path -> entries so far
    current: tuple[Any, ...] = ()
    in_string: str | None = None  # the delimiter of an open multi-line string
    depth = 0  # open [ { of a multi-line value
    opened: dict[str, int] = {}  # "string" / "array" -> the line where the one still open starts

    def note(path: tuple[Any, ...], n: int, exact: bool) -> None:
        for k in range(1, len(path) + 1):
            p = path[:k]
            if k == len(path) and exact:
                if p not in explicit:
                    index[p] = n
                    explicit.add(p)
            elif p not in index:
                index[p] = n

    def resolve(keys: tuple[str, ...]) -> tuple[Any, ...]:
        out: tuple[Any, ...] = ()
        for k in keys:
            out += (k,)
            if out in arrays:
                out += (arrays[out] - 1,)
        return out

    for n, raw in enumerate(text.splitlines(), 1):
        rest = raw
        if in_string is not None:
            end = rest.find(in_string)
            if end < 0:
                continue
            rest = rest[end + 3 :]
            in_string = None
            opened.pop("string", None)
        if depth == 0 and in_string is None and rest is raw:
            h = _HEADER.match(raw)
            if h and not _KEY.match(raw):
                keys = _key_parts(h.group(2))
                if h.group(1) == "[[":
                    base = resolve(keys[:-1]) + (keys[-1],)
                    arrays[base] = arrays.get(base, 0) + 1
                    current = base + (arrays[base] - 1,)
                    note(base, n, False)
                else:
                    current = resolve(keys)
                note(current, n, True)
                continue
            k = _KEY.match(raw)
            if k:
                note(current + _key_parts(k.group(1)), n, True)
                rest = raw[k.end() :]
            else:
                if raw.strip() and not raw.strip().startswith("#"):
                    opened.setdefault("stray", n)  # neither a table header nor key = value
                continue
        was_open = depth > 0
        depth, in_string, open_kind = _scan_value(rest, depth)
        if in_string is not None or open_kind == "string":
            opened["string"] = n
        if depth > 0 and not was_open:
            opened["array"] = n
        elif depth == 0:
            opened.pop("array", None)
    return index, opened


def _scan_value(s: str, depth: int) -> tuple[int, str | None, str | None]:
    """Walk a value's text: (bracket depth after it, an open multi-line string delimiter, kind)."""
    i = 0
    while i < len(s):
        c = s[i]
        if c == "#":
            break
        if s.startswith(('"""', "'''"), i):
            delim = s[i : i + 3]
            end = s.find(delim, i + 3)
            if end < 0:
                return depth, delim, "string"
            i = end + 3
            continue
        if c in "\"'":
            j = i + 1
            while j < len(s) and s[j] != c:
                j += 2 if c == '"' and s[j] == "\\" else 1
            if j >= len(s):  # a one-line string that does not close on its line
                return depth, None, "string"
            i = j + 1
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return depth, None, None


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    return _scan(text)[0]


def _lookup_line(index: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    """The line of loc, else of the first line under it, else of its closest parent."""
    for n in range(len(loc), 0, -1):
        prefix = tuple(loc[:n])
        if prefix in index:
            return index[prefix]
        under = [line for path, line in index.items() if path[:n] == prefix]
        if under:
            return min(under)
    return None


# -- pydantic errors -> (field path, message) -------------------------------------------
_MEMBER_WORDS = {"str": "text in quotes", "int": "a whole number", "float": "a number", "bool": "true or false"}


def _tag_positions(loc: tuple[Any, ...]) -> list[int]:
    """Where pydantic put a union member's name ('str', 'list[ChatMessage]') into loc: follow
    the recipe's types along loc; the part right after a union-typed field is the member tag."""
    import typing

    positions: list[int] = []
    ann: Any = Recipe
    i = 0
    while i < len(loc) and ann is not None:
        part = loc[i]
        if typing.get_origin(ann) is typing.Annotated:  # e.g. [[eval]]: a union discriminated on kind
            ann = typing.get_args(ann)[0]
            continue
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        origin = typing.get_origin(ann)
        if origin in (Union, getattr(__import__("types"), "UnionType", Union)) and len(args) > 1:
            tag = str(part)
            member = next((a for a in args if tag.startswith(getattr(typing.get_origin(a), "__name__", "\0") + "[")
                           or tag == getattr(a, "__name__", "") or tag in _discriminator_tags(a)), None)
            if member is None:
                return positions
            positions.append(i)
            ann, i = member, i + 1
            continue
        if len(args) == 1 and origin in (Union, getattr(__import__("types"), "UnionType", Union)):
            ann = args[0]
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            field = ann.model_fields.get(part) or next((f for f in ann.model_fields.values() if f.alias == part), None)
            ann = field.annotation if field else None
        elif origin is list and isinstance(part, int):
            ann = args[0] if args else None
        elif origin is dict:
            ann = args[1] if len(args) > 1 else None
        else:
            ann = None
        i += 1
    return positions


def _discriminator_tags(member: Any) -> tuple[str, ...]:
    """The ``kind`` literal(s) of a discriminated union member (an eval kind's entry model)."""
    import typing

    field = member.model_fields.get("kind") if isinstance(member, type) and issubclass(member, BaseModel) else None
    return tuple(str(a) for a in typing.get_args(field.annotation)) if field is not None and typing.get_origin(field.annotation) is Literal else ()


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    drop = set(_tag_positions(loc))
    return tuple(p for i, p in enumerate(loc) if i not in drop)


def _validation_problems(exc: ValidationError) -> list[tuple[tuple[Any, ...], str]]:
    """Every problem as (location, message). A value that fits no member of a union yields
    errors for each member; those of the member that got furthest say what is really wrong."""
    errors = _unnest(exc.errors(include_url=False))
    for err in errors:  # [[eval]] kind missing or unknown: point at the kind key
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            err["loc"] = (*err["loc"], "kind")
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for err in errors:
        raw = tuple(err["loc"])
        tags = _tag_positions(raw)
        key = raw[: tags[0]] if tags else raw + ("\0",)
        groups.setdefault(key, []).append(err)
    out: list[tuple[tuple[Any, ...], str]] = []
    for key, members in groups.items():
        if key[-1:] == ("\0",):
            out.extend((_clean_loc(tuple(e["loc"])), _message(e)) for e in members)
            continue
        depth = max(len(e["loc"]) for e in members)
        if depth == len(key) + 1 and len(members) > 1:  # the value's type fits no member at all
            kinds = [_MEMBER_WORDS.get(str(e["loc"][-1]), "a list" if str(e["loc"][-1]).startswith("list") else "a table")
                     for e in members]
            out.append((key, f"must be {' or '.join(dict.fromkeys(kinds))} (got {members[0].get('input')!r})"))
            continue
        best = max(members, key=lambda e: len(e["loc"]))["loc"][len(key)]
        out.extend((_clean_loc(tuple(e["loc"])), _message(e)) for e in members if e["loc"][len(key)] == best)
    return out


def _message(err: Any) -> str:
    loc = _clean_loc(tuple(err["loc"]))
    etype = err["type"]
    got = err.get("input")
    if etype == "extra_forbidden":
        owner = _model_at(loc) if loc[:1] != ("eval",) else _eval_entry_model(tuple(err["loc"]))
        names = [f.alias or n for n, f in owner.model_fields.items()] if owner else []
        return f"unknown field{_did_you_mean(str(loc[-1]), names) if names else ''}"
    if etype == "missing":
        return "required field is missing; add it"
    if etype == "union_tag_invalid":  # [[eval]] kind = a name no installed eval kind has
        from .validate.evals import eval_kinds

        return eval_kinds.unknown(str(err.get("ctx", {}).get("tag")))
    if etype == "union_tag_not_found":
        from .validate.evals import eval_kinds

        return f"needs kind = one of {', '.join(repr(n) for n in eval_kinds.names())}"
    if etype == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be {expected} (got {got!r}){_literal_hint(got, expected)}"
    if etype in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number (got {got!r})"
    if etype in ("bool_type", "bool_parsing"):
        return f"must be true or false (got {got!r})"
    if etype == "string_type":
        return f"must be a string in quotes (got {got!r})"
    if etype in ("float_type", "float_parsing"):
        return f"must be a number (got {got!r})"
    if etype == "finite_number":
        return f"must be a finite number (got {got!r})"
    if etype == "list_type":
        return f"must be a list like [\"a\", \"b\"] (got {got!r})"
    if etype in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a table (got {got!r})"
    if etype.startswith(("greater_than", "less_than")):
        limit = next(iter(err.get("ctx", {}).values()), "")
        word = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[etype]
        return f"must be {word} {limit} (got {got!r})"
    if etype in ("string_too_short", "too_short"):
        return f"must not be empty (got {got!r})"
    if etype in ("string_too_long", "too_long"):
        limit = next(iter(err.get("ctx", {}).values()), "")
        return f"is too long (at most {limit}; got {len(got) if hasattr(got, '__len__') else got!r})"
    return str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _eval_entry_model(raw: tuple[Any, ...]) -> type[BaseModel] | None:
    """The entry model of the eval kind whose tag pydantic put at raw[2] (eval, 1, 'kl', field)."""
    from .validate.evals import eval_kinds

    if len(raw) > 3 and isinstance(raw[1], int) and raw[2] in eval_kinds:
        return eval_kinds.get(str(raw[2])).Entry
    return None


def _literal_hint(got: Any, expected: str) -> str:
    choices = re.findall(r"'([^']*)'", expected)
    if isinstance(got, str) and choices:
        close = difflib.get_close_matches(got, choices, n=1, cutoff=0.6)
        if close and close[0] != got:
            return f"; did you mean '{close[0]}'?"
    return ""


_FIELD_NAMES: dict[type[BaseModel], list[str]] = {}


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at loc[-1], for 'did you mean'."""
    model: Any = Recipe
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
    return model


def _unwrap_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:  # a key TOML has to quote is shown quoted: model." "
            name = str(part) if re.fullmatch(r"[A-Za-z0-9_\-]+", str(part)) else json.dumps(str(part), ensure_ascii=False)
            out += ("." if out else "") + name
    return out


def _parse_field_path(field: str) -> tuple[Any, ...]:
    """'eval[1].kind' -> ('eval', 1, 'kind'); 'model." "' -> ('model', ' ')."""
    out: list[Any] = []
    for quoted, name, index in re.findall(r'("(?:[^"\\]|\\.)*")|([^.\[\]"]+)|\[(\d+)\]', field):
        out.append(int(index) if index else json.loads(quoted) if quoted else name)
    return tuple(out)


def _find_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line of the TOML key at loc, else of its closest parent, 1-based."""
    return line_of(text, _clean_loc(tuple(loc)))
