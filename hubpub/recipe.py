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
import sys
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMATS = ("auto_round", "auto_gptq", "auto_awq", "llm_compressor")
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
    return bool(REPO_ID.match(value)) and "--" not in value and ".." not in value and not value.endswith(".git")


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


class QuantizeSection(Section):
    method: Literal["autoround", "rtn"] = "autoround"
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    iters: int = Field(200, ge=0)
    nsamples: int = Field(128, ge=1)
    seqlen: int = Field(2048, ge=8)
    batch_size: int = Field(8, ge=1)
    format: str = "auto_round"
    keep_bf16: list[str] = Field(default_factory=list)
    calibration: str = "builtin:pydoc"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    low_gpu_mem_usage: bool = False
    split: SplitSection | None = None

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
        if v not in FORMATS:
            raise ValueError(f"unknown format {v!r}{_did_you_mean(v, FORMATS)}")
        return v

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, v: str) -> str:
        if v.startswith("builtin:") and v not in BUILTIN_CORPORA:
            raise ValueError(f"unknown built-in corpus {v!r}{_did_you_mean(v, BUILTIN_CORPORA)}")
        if not v.startswith("builtin:") and not v.endswith((".jsonl", ".txt")):
            raise ValueError(f"must be a .jsonl file with a \"text\" field, a .txt file, or one of {', '.join(BUILTIN_CORPORA)} (got {v!r})")
        return v

    @model_validator(mode="after")
    def _format_fits_scheme(self) -> "QuantizeSection":
        if self.format == "auto_awq" and self.sym:
            raise ValueError("format 'auto_awq' stores zero points: set sym = false, or pick format 'auto_round'")
        if self.format == "auto_awq" and self.bits != 4:
            raise ValueError("format 'auto_awq' supports bits = 4 only")
        return self


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


class Mode(Section):
    name: str
    prompt: Union[str, list[ChatMessage], None] = None
    prompts: list[str] | None = None
    images: list[str] = Field(default_factory=list)
    generate: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    custom_generate: str | None = None
    task: str | None = None
    expect: Expect = Field(default_factory=Expect)

    @field_validator("generate")
    @classmethod
    def _known_generate_kwargs(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if key not in GENERATE_KWARGS:
                raise ValueError(f"unknown generate argument {key!r}{_did_you_mean(key, GENERATE_KWARGS)}")
        return v

    @model_validator(mode="after")
    def _has_prompt(self) -> "Mode":
        if self.prompt is None and not self.prompts:
            raise ValueError(f"mode {self.name!r} needs 'prompt' (text or chat messages) or 'prompts' (a batch)")
        if self.prompt is not None and self.prompts:
            raise ValueError(f"mode {self.name!r} sets both 'prompt' and 'prompts': keep one")
        return self


class Gates(Section):
    """Thresholds; validate fails when one is violated. Unset gates are not checked."""

    max_ppl_increase: float | None = Field(None, ge=0, description="relative, 0.10 = perplexity may rise 10 %")
    min_top1_agreement: float | None = Field(None, ge=0, le=1)
    max_kl: float | None = Field(None, ge=0)
    min_similarity: float | None = Field(None, ge=0, le=1)
    min_validity: float | None = Field(1.0, ge=0, le=1)
    max_iou_drop: float | None = Field(None, ge=0, le=1)


class ValidateSection(Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_new_tokens: int = Field(24, ge=1)
    warmup_runs: int = Field(1, ge=0)
    latency_runs: int = Field(3, ge=1)
    builtin_modes: bool = True
    modes: list[Mode] = Field(default_factory=list)
    gates: Gates = Field(default_factory=Gates)

    @model_validator(mode="after")
    def _unique_mode_names(self) -> "ValidateSection":
        seen: set[str] = set()
        for mode in self.modes:
            if mode.name in seen:
                raise ValueError(f"mode name {mode.name!r} is used twice: names must be unique")
            seen.add(mode.name)
        return self


# ----------------------------------------------------------------------------- [[eval]]
EVAL_KINDS = ("perplexity", "kl", "similarity", "grounding")


class EvalEntry(Section):
    kind: str
    name: str | None = None
    file: str | None = None
    prompts: list[str] = Field(default_factory=list)
    seqlen: int = Field(256, ge=8)
    max_samples: int = Field(8, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    # grounding benchmark (synthetic images)
    images: int = Field(12, ge=1)
    image_size: int = Field(448, ge=32)
    classes: list[str] = Field(default_factory=lambda: ["square", "circle", "triangle", "A", "E", "K"])
    mode: str | None = None
    seed: int = 0

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in EVAL_KINDS:
            raise ValueError(f"unknown eval kind {v!r}{_did_you_mean(v, EVAL_KINDS)}")
        return v

    @model_validator(mode="after")
    def _needs(self) -> "EvalEntry":
        if self.kind in ("perplexity", "kl") and not self.file:
            raise ValueError(f"eval kind {self.kind!r} needs 'file' (a .txt/.jsonl text, or builtin:pydoc)")
        if self.file and not self.file.startswith("builtin:") and not self.file.endswith((".txt", ".jsonl")):
            raise ValueError(f"'file' must be a .txt or .jsonl file, or builtin:pydoc (got {self.file!r})")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


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
        if v is not None and not (looks_like_repo_id(v) and "/" in v):
            raise ValueError(f"must be a Hub repo id like 'org/name' (got {v!r})")
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

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, v: str | None) -> str | None:
        if v is not None and not (looks_like_repo_id(v) and "/" in v):
            raise ValueError(f"must be 'owner/name' with letters, digits, '-', '_' or '.' (got {v!r})")
        return v

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[\w][\w.\-/]*$", v):
            raise ValueError(f"must be a git tag name like 'v1' or 'v2.0' (got {v!r})")
        return v


# ----------------------------------------------------------------------------- the recipe
class Recipe(Section):
    output_dir: str | None = None
    model: ModelSection
    quantize: QuantizeSection = Field(default_factory=QuantizeSection)
    validate_: ValidateSection = Field(default_factory=ValidateSection, alias="validate")
    evals: list[EvalEntry] = Field(default_factory=list, alias="eval")
    card: CardSection = Field(default_factory=CardSection)
    push: PushSection = Field(default_factory=PushSection)

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True, strict=True)

    _path: Path = PrivateAttr(default=Path("recipe.toml"))
    _text: str = PrivateAttr(default="")

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
def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read, parse and check a recipe file. Raises RecipeError with a one-line message."""
    path = Path(path)
    shown = str(path)
    if not path.exists():
        raise RecipeError(f"{shown}: file not found; pass the path of a recipe .toml file (see recipes/ for examples)")
    if path.is_dir():
        raise RecipeError(f"{shown}: is a folder; pass the path of a recipe .toml file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{shown}: not UTF-8 text; save the recipe as UTF-8") from None
    return parse_recipe(text, path)


def parse_recipe(text: str, path: Path) -> Recipe:
    shown = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(_toml_error(shown, exc)) from None
    try:
        recipe = Recipe.model_validate(data, context={"base_dir": str(path.resolve().parent)})
    except ValidationError as exc:
        raise RecipeError(_validation_error(shown, text, exc)) from None
    recipe._path = path.resolve()
    recipe._text = text
    return recipe


def _toml_error(shown: str, exc: Exception) -> str:
    msg = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    where = f"{shown}:{m.group(1)}:{m.group(2)}" if m else shown
    reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", msg)
    return f"{where}: invalid TOML: {reason}; fix the syntax (strings need quotes, tables look like [quantize])"


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
        else:
            out += ("." if out else "") + str(part)
    return out


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts union member names ('str', 'list[ChatMessage]') into the location: drop them
    return tuple(p for p in loc if isinstance(p, int) or not re.match(r"^(str|list\[.*\]|none|int|float|bool)$", str(p)))


def _pick_error(errors: list[Any]) -> tuple[Any, int]:
    """The error to show, and how many other problems there are.

    A value that fits no member of a union (prompt = text | chat messages) yields one error per
    member; the deepest one says what is really wrong, the others are noise.
    """
    first = errors[0]
    if _clean_loc(tuple(first["loc"])) == tuple(first["loc"]):
        roots = {_clean_loc(tuple(e["loc"]))[: len(first["loc"])] for e in errors}
        return first, len(roots) - 1
    root = _clean_loc(tuple(first["loc"]))
    siblings = [e for e in errors if _clean_loc(tuple(e["loc"]))[: len(root)] == root]
    deepest = max(siblings, key=lambda e: len(e["loc"]))
    others = {_clean_loc(tuple(e["loc"]))[: len(root)] for e in errors if e not in siblings}
    return deepest, len(others)


def _validation_error(shown: str, text: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    err, n_more = _pick_error(errors)
    loc = _clean_loc(tuple(err["loc"]))
    field = _field_path(loc) if loc else ""
    etype = err["type"]
    if etype == "extra_forbidden":
        owner = _model_at(loc)
        names = [f.alias or n for n, f in owner.model_fields.items()] if owner else []
        msg = f"unknown field{_did_you_mean(str(loc[-1]), names) if names else ''}"
    elif etype == "missing":
        msg = "required field is missing; add it"
    elif etype == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"must be {expected} (got {err.get('input')!r})"
    elif etype in ("int_type", "int_parsing", "int_from_float"):
        msg = f"must be a whole number (got {err.get('input')!r})"
    elif etype in ("bool_type", "bool_parsing"):
        msg = f"must be true or false (got {err.get('input')!r})"
    elif etype in ("string_type",):
        msg = f"must be a string in quotes (got {err.get('input')!r})"
    elif etype in ("float_type", "float_parsing"):
        msg = f"must be a number (got {err.get('input')!r})"
    elif etype in ("list_type",):
        msg = f"must be a list like [\"a\", \"b\"] (got {err.get('input')!r})"
    elif etype in ("model_type", "dict_type"):
        msg = f"must be a table (got {err.get('input')!r})"
    elif etype.startswith(("greater_than", "less_than")):
        limit = next(iter(err.get("ctx", {}).values()), "")
        word = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[etype]
        msg = f"must be {word} {limit} (got {err.get('input')!r})"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
    line = _find_line(text, loc)
    where = f"{shown}:{line}" if line else shown
    more = f" (and {n_more} more problem{'s' if n_more > 1 else ''})" if n_more else ""
    return f"{where}: {field + ': ' if field else ''}{msg}{more}"


def _find_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best effort: the line of the TOML key at loc, else of its closest parent, 1-based."""
    keys = [str(p) for p in loc if not isinstance(p, int)]
    for n in range(len(keys), 0, -1):
        line = _find_key_line(text, keys[:n])
        if line:
            return line
    return None


def _find_key_line(text: str, keys: list[str]) -> int | None:
    if not keys:
        return None
    # the table the key lives in, as written in a header: 'quantize.split', 'validate.modes'
    table, key = ".".join(keys[:-1]), keys[-1]
    current = ""
    table_line = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?", line)
        if header:
            current = header.group(1).replace(" ", "")
            if current == ".".join(keys):
                return n
            if current == table and table_line is None:
                table_line = n
            continue
        m = re.match(r"^([A-Za-z0-9_\-\.\"]+)\s*=", line)
        if not m:
            continue
        full = ".".join(x for x in (current, m.group(1).strip('"')) if x)
        if full == ".".join(keys) or (current == table and m.group(1) == key):
            return n
        if keys[-1] == m.group(1) and ".".join(keys[:-1]).startswith(current) and current:
            return n
    if table_line is None and not table:
        # a table only present through its sub-tables, e.g. [[validate.modes]] for 'validate'
        for n, raw in enumerate(text.splitlines(), 1):
            if re.match(rf"^\[\[?\s*{re.escape(key)}[.\]]", raw.strip()):
                return n
    return table_line
