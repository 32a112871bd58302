"""Preflight: everything about a recipe that can be known without loading the model's weights.

Three layers, cheapest first, each returning :class:`~hubpub.recipe.Problem` objects (file,
line, field path, message with the fix) instead of stopping at the first:

* :func:`value_problems` - rules over the raw TOML data that field types cannot say (``generate``
  arguments typed and ranged, built-in corpus names). ``load_recipe`` applies them, so every
  stage gets them for free.
* :func:`path_problems` - the files and folders a recipe names exist and have the right kind
  (model source, calibration, eval files, mode images, template_dir, card.previous, output_dir).
* :func:`config_problems` - what the model's ``config.json`` tells before any weight is read:
  custom code without ``trust_remote_code``, an architecture transformers does not know, the
  quantize plan (``keep_bf16`` / targets patterns that match nothing, ``group_size`` that does
  not divide a layer's input size), built on the meta device (no memory, no weights).

``check_recipe(path)`` runs all three for `hubpub check`; ``preflight(recipe)`` runs the last two
at the start of a stage and raises one :class:`~hubpub.errors.RecipeError` (the first problem
and how many more). Heavy imports (torch, transformers) happen only inside config_problems.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import RecipeError

if TYPE_CHECKING:
    from .recipe import Problem, Recipe

Loc = tuple[Any, ...]

SEED_LIMIT = 2**32  # numpy, torch and random all take 0 <= seed < 2**32
MAX_NEW_TOKENS = 65536
SECTIONS = ("output_dir", "model", "quantize", "validate", "eval", "card", "push", "jobs")


# ----------------------------------------------------------------------------- raw-data rules
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(lo: int, hi: int) -> Callable[[Any], str | None]:
    def rule(v: Any) -> str | None:
        if not _is_int(v):
            return f"must be a whole number from {lo} to {hi:,} (got {v!r})"
        if not lo <= v <= hi:
            return f"must be from {lo} to {hi:,} (got {v!r})"
        return None

    return rule


def _number(*, gt: float | None = None, le: float | None = None, what: str = "") -> Callable[[Any], str | None]:
    bounds = " and ".join(x for x in (f"> {gt:g}" if gt is not None else "", f"<= {le:g}" if le is not None else "") if x)
    shown = f"a number {bounds}" if bounds else "a finite number"

    def rule(v: Any) -> str | None:
        if not _is_number(v) or not math.isfinite(v):
            return f"must be {shown}{what} (got {v!r})"
        if (gt is not None and not v > gt) or (le is not None and not v <= le):
            return f"must be {shown}{what} (got {v!r})"
        return None

    return rule


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false (got {v!r})"


def _early_stopping(v: Any) -> str | None:
    return None if isinstance(v, bool) or v == "never" else f"must be true, false or \"never\" (got {v!r})"


# generate() arguments a [[validate.modes]] entry may set: type and range transformers accepts
GENERATE_RULES: dict[str, Callable[[Any], str | None]] = {
    "max_new_tokens": _int_in(1, MAX_NEW_TOKENS),
    "min_new_tokens": _int_in(0, MAX_NEW_TOKENS),
    "do_sample": _boolean,
    "temperature": _number(gt=0, le=100, what=" (set do_sample = false for greedy decoding)"),
    "top_k": _int_in(0, 1_000_000),
    "top_p": _number(gt=0, le=1),
    "num_beams": _int_in(1, 64),
    "num_return_sequences": _int_in(1, 64),
    "repetition_penalty": _number(gt=0, le=100),
    "no_repeat_ngram_size": _int_in(0, 1024),
    "length_penalty": _number(),
    "early_stopping": _early_stopping,
    "seed": _int_in(0, SEED_LIMIT - 1),
}


# integers bounded to what the libraries accept (and what finishes): (section, key) -> (lo, hi)
BOUNDS: dict[tuple[str, str], tuple[int, int]] = {
    ("quantize", "iters"): (0, 100_000),
    ("quantize", "nsamples"): (1, 100_000),
    ("quantize", "seqlen"): (8, 131_072),
    ("quantize", "batch_size"): (1, 4096),
    ("quantize", "seed"): (0, SEED_LIMIT - 1),
    ("validate", "max_new_tokens"): (1, MAX_NEW_TOKENS),
    ("validate", "warmup_runs"): (0, 1000),
    ("validate", "latency_runs"): (1, 1000),
}
# the same for any [[eval]] entry that has the key (the eval kinds define their own fields)
EVAL_BOUNDS: dict[str, tuple[int, int]] = {
    "seqlen": (8, 131_072),
    "max_samples": (1, 100_000),
    "max_new_tokens": (1, MAX_NEW_TOKENS),
    "images": (1, 10_000),
    "image_size": (32, 8192),
    "seed": (0, SEED_LIMIT - 1),
    "limit": (1, 10_000_000),
    "num_fewshot": (0, 1000),
    "batch_size": (1, 4096),
}


def _bounded(value: Any, lo: int, hi: int) -> str | None:
    """Out of [lo, hi] for a whole number (wrong types are pydantic's to report)."""
    if _is_int(value) and not lo <= value <= hi:
        extra = " (seeds are 0 <= seed < 2**32)" if hi == SEED_LIMIT - 1 else ""
        return f"must be from {lo:,} to {hi:,}{extra} (got {value!r})"
    return None


def value_problems(data: Any) -> list[tuple[Loc, str]]:
    """Rules over the raw TOML data (any shape: never raises). [(location, message)]."""
    from .recipe import BUILTIN_CORPORA

    out: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        return out
    for (section, key), (lo, hi) in BOUNDS.items():
        table = data.get(section)
        msg = _bounded(table.get(key), lo, hi) if isinstance(table, dict) else None
        if msg:
            out.append(((section, key), msg))
    validate = data.get("validate")
    modes = validate.get("modes") if isinstance(validate, dict) else None
    for i, mode in enumerate(modes if isinstance(modes, list) else []):
        gen = mode.get("generate") if isinstance(mode, dict) else None
        if not isinstance(gen, dict):
            continue
        loc: Loc = ("validate", "modes", i, "generate")
        for key, value in gen.items():
            rule = GENERATE_RULES.get(key)
            msg = rule(value) if rule else None
            if msg:
                out.append((loc + (key,), msg))
        low, high = gen.get("min_new_tokens"), gen.get("max_new_tokens")
        if _is_int(low) and _is_int(high) and low > high:
            out.append((loc + ("min_new_tokens",), f"must be <= max_new_tokens = {high} (got {low})"))
        beams, returned = gen.get("num_beams", 1), gen.get("num_return_sequences")
        if _is_int(beams) and _is_int(returned) and gen.get("do_sample") is not True and returned > beams:
            out.append((loc + ("num_return_sequences",),
                        f"{returned} sequences need num_beams >= {returned} (got {beams}) or do_sample = true"))
    evals = data.get("eval")
    for i, entry in enumerate(evals if isinstance(evals, list) else []):
        if not isinstance(entry, dict):
            continue
        for key, (lo, hi) in EVAL_BOUNDS.items():
            msg = _bounded(entry.get(key), lo, hi)
            if msg:
                out.append((("eval", i, key), msg))
        file = entry.get("file")
        if isinstance(file, str) and file.startswith("builtin:") and file not in BUILTIN_CORPORA:
            out.append((("eval", i, "file"), f"unknown built-in corpus {file!r}; the built-ins are {', '.join(BUILTIN_CORPORA)}"))
    return out


# ----------------------------------------------------------------------------- paths
def _field_of(message: str, default: str) -> tuple[str, str]:
    """'quantize.group_size: 128 does not ...' -> ('quantize.group_size', '128 does not ...')."""
    m = re.match(r"^([A-Za-z_][\w\-]*(?:\[\d+\])*(?:\.[A-Za-z_][\w\-]*(?:\[\d+\])*)*): (.+)$", message)
    if m and m.group(1).split(".")[0].split("[")[0] in SECTIONS:
        return m.group(1), m.group(2)
    return default, message


class _Collector:
    def __init__(self, recipe: "Recipe") -> None:
        from .recipe import _lookup_line, _line_index

        self.recipe = recipe
        self.index = _line_index(recipe.text)
        self._lookup = _lookup_line
        self.problems: list["Problem"] = []

    def add(self, field: str, message: str) -> None:
        from .recipe import Problem, _parse_field_path

        if any(p.field == field and p.message == message for p in self.problems):
            return
        self.problems.append(Problem(str(self.recipe.path), self._lookup(self.index, _parse_field_path(field)), field, message))

    def error(self, exc: BaseException, default: str) -> None:
        text = (str(exc).splitlines() or [type(exc).__name__])[0]
        self.add(*_field_of(text, default))


def _path_kind_problem(path: Path, want: str, what: str) -> str | None:
    """None when path is a `want` ('file' / 'folder'); else what is wrong and how to fix it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} not found; fix the path (relative paths start at the recipe's folder)"
    except OSError as exc:
        return f"{path}: {exc.strerror or type(exc).__name__}; fix the path or its permissions"
    if want == "folder":
        if not stat.S_ISDIR(st.st_mode):
            return f"{path} is not a folder; give the {what} folder"
        if not os.access(path, os.R_OK | os.X_OK):
            return f"{path}: permission denied; make the folder readable"
        return None
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a folder; give the {what} file itself"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (a pipe or device); give the {what} file"
    if st.st_size == 0:
        return f"{path} is empty; give a {what} file with content"
    if not os.access(path, os.R_OK):
        return f"{path}: permission denied; make the file readable"
    return None


def path_problems(recipe: "Recipe") -> list["Problem"]:
    """The files and folders the recipe names exist and have the right kind."""
    from .errors import SourceError

    c = _Collector(recipe)
    out = recipe.output_path
    if out.exists() and not out.is_dir():
        c.add("output_dir", f"{out} is a file; point output_dir at a folder (it is created when missing)")

    model = recipe.model
    kind = model.source_kind(recipe.base_dir)
    if kind != "hub":
        from .source import locate_source

        try:
            locate_source(recipe)
        except SourceError as exc:
            c.error(exc, "model.source")
        except OSError as exc:
            c.add("model.source", f"{recipe.resolve(model.source)}: {exc.strerror or exc}; fix the path or its permissions")
    if model.gguf_file and kind in ("hub", "gguf", "folder"):
        c.add("model.gguf_file", f"only read for package:NAME sources (model.source is a {kind}); "
              "point model.source at the .gguf file itself and remove gguf_file")

    q = recipe.quantize
    if q.method != "rtn":  # every calibration source (hubpub/calibration/sources.py): paths, columns, offline Hub datasets
        from .calibration import path_problems as calibration_problems

        for field, bad in calibration_problems(recipe):
            c.add(field, bad)
    from .calibration.hook import hook_problems  # the hook's module and function (imported only with trust_remote_code)

    for field, bad in hook_problems(recipe):
        c.add(field, bad)

    for i, entry in enumerate(recipe.evals):
        files = entry.input_files() if hasattr(entry, "input_files") else []
        for f in files:
            name = next((k for k, v in entry if v == f), "file")
            bad = _path_kind_problem(recipe.resolve(f), "file", "eval text (.txt or .jsonl)")
            if bad:
                c.add(f"eval[{i}].{name}", bad)

    for i, mode in enumerate(recipe.validate.modes):
        for j, image in enumerate(mode.images):
            if image.startswith("builtin:"):  # builtin:scene: validate draws it
                continue
            bad = _path_kind_problem(recipe.resolve(image), "file", "image")
            if bad:
                c.add(f"validate.modes[{i}].images[{j}]", bad)

    card = recipe.card
    if card.template_dir:
        folder = recipe.resolve(card.template_dir)
        bad = _path_kind_problem(folder, "folder", "template")
        if bad:
            c.add("card.template_dir", bad + (", or start one with `hubpub templates export DIR`" if "not found" in bad else ""))
        elif not (folder / card.template).is_file() and not _builtin_template(card.template):
            c.add("card.template", f"{card.template!r} is neither in {folder} nor a built-in template; "
                  "add it to template_dir or use 'README.md.j2'")
    elif not _builtin_template(card.template):
        c.add("card.template", f"{card.template!r} is not a built-in template; set card.template_dir to the folder "
              "holding it, or use 'README.md.j2'")
    if card.previous:
        bad = _path_kind_problem(recipe.resolve(card.previous), "folder", "previous release")
        if bad:
            c.add("card.previous", bad)
    if recipe.variants:  # [push] layout: no two variants published on the same path (hubpub.variants)
        from .variants import layout_problems

        for field, bad in layout_problems(recipe):
            c.add(field, bad)
    return c.problems


def _builtin_template(name: str) -> bool:
    from importlib import resources

    try:
        return resources.files("hubpub").joinpath("templates", name).is_file()
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------- config.json
def _source_config(recipe: "Recipe") -> tuple[dict[str, Any], Path | None, Any] | None:
    """(config.json as a dict, the folder it came from or None, a transformers config or None);
    None when it cannot be read without downloading (a Hub source not in the cache)."""
    model = recipe.model
    kind = model.source_kind(recipe.base_dir)
    if kind == "folder":
        folder = recipe.resolve(model.source)
        return json.loads((folder / "config.json").read_text(encoding="utf-8")), folder, None
    if kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model.source, "config.json", revision=model.revision)
        if not isinstance(found, str):
            return None
        return json.loads(Path(found).read_text(encoding="utf-8")), Path(found).parent, None
    # gguf / package: the converted base when it is current, else the GGUF's own metadata
    from .source import GGUF_FINGERPRINT, locate_source

    source = locate_source(recipe)
    base = recipe.work_path / "base"
    try:
        if json.loads((base / GGUF_FINGERPRINT).read_text())["fingerprint"] == source.fingerprint:
            return json.loads((base / "config.json").read_text(encoding="utf-8")), base, None
    except (OSError, ValueError, KeyError):
        pass
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(source.path.parent), gguf_file=source.path.name)
    return config.to_dict(), None, config


def config_problems(recipe: "Recipe") -> list["Problem"]:
    """What config.json says about the recipe, before any weight is read."""
    from .errors import QuantizeError, SourceError

    c = _Collector(recipe)
    model = recipe.model
    try:
        found = _source_config(recipe)
    except (SourceError, QuantizeError) as exc:
        c.error(exc, "model.source")
        return c.problems
    except (OSError, ValueError) as exc:
        c.add("model.source", f"cannot read the model's config: {(str(exc).splitlines() or [type(exc).__name__])[0]}; "
              "check that model.source is a transformers model")
        return c.problems
    if found is None:
        return c.problems  # a Hub model not downloaded yet: the stage checks after the download
    config, folder, hf_config = found
    if config.get("auto_map") and not model.trust_remote_code:
        c.add("model.trust_remote_code",
              f"the model ships its own code (auto_map in config.json: {', '.join(sorted(config['auto_map']))}) and "
              "trust_remote_code is false; review its .py files, then set model.trust_remote_code = true")
        return c.problems
    _mode_problems(c, recipe, config, folder)
    q = recipe.quantize
    try:
        decoder_config, hf_config, trust = _decoder_config(recipe, config, folder, hf_config)
    except QuantizeError as exc:
        c.error(exc, "quantize.split")
        return c.problems
    except (ValueError, KeyError, OSError, ImportError, AttributeError, TypeError) as exc:
        c.add("model.source", _config_error(config, exc))
        return c.problems
    from .quantize.formats import formats

    refuse_model = getattr(formats.get(q.format), "refuse_model", None) if q.format in formats else None
    unexportable = refuse_model(decoder_config, split=bool(q.split)) if refuse_model else None  # e.g. gguf:* of an architecture its converter lacks
    if unexportable:
        c.add("quantize.format", unexportable)
    try:
        meta = _meta_model(hf_config, trust, decoder_config.get("auto_map") or {})
    except (ValueError, KeyError, OSError, ImportError, AttributeError, TypeError, RuntimeError, NotImplementedError) as exc:
        c.add("model.source", _config_error(decoder_config, exc))
        return c.problems
    try:
        plan = _plan(recipe, meta, folder)
    except (QuantizeError, RecipeError) as exc:
        c.error(exc, "quantize")
        try:  # still check group_size, against the default plan
            plan = _plan(recipe, meta, folder, default=True)
        except (QuantizeError, RecipeError):
            return c.problems
    if plan is not None:
        from .quantize.targets import check_group_size

        try:
            check_group_size(plan, q.group_size)
        except QuantizeError as exc:
            c.error(exc, "quantize.group_size")
    return c.problems


def mode_problems(recipe: "Recipe", folder: Path) -> list["Problem"]:
    """The custom_generate calls checked against the checkpoint in ``folder`` (the one validate
    loads), by importing its class only: validate runs this before any worker loads a weight."""
    c = _Collector(recipe)
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return c.problems
    _mode_problems(c, recipe, config, Path(folder))
    return c.problems


def _mode_class(recipe: "Recipe", config: dict[str, Any], folder: Path | None) -> Any:
    """The class validate will load (its own code with auto_map and trust_remote_code, else the
    transformers class config.json names), imported without reading a weight; None if unknown."""
    auto_map = config.get("auto_map") or {}
    try:
        if auto_map:
            ref = auto_map.get("AutoModelForCausalLM") or auto_map.get("AutoModel")
            if not (ref and folder is not None and recipe.model.trust_remote_code):
                return None
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            return get_class_from_dynamic_module(ref, str(folder))
        import transformers

        arch = (config.get("architectures") or [None])[0]
        return getattr(transformers, arch, None) if arch else None
    except Exception:  # the model's own code failed to import: the stage reports it when it loads
        return None


def _mode_problems(c: _Collector, recipe: "Recipe", config: dict[str, Any], folder: Path | None) -> None:
    """Each custom_generate mode's call against the model method's signature (README "Custom
    generation modes"): the method exists, every argument hubpub passes is a parameter (or the
    method takes **kwargs), and every required parameter is passed."""
    modes = [(i, m) for i, m in enumerate(recipe.validate.modes) if m.custom_generate]
    if not modes:
        return
    cls = _mode_class(recipe, config, folder)
    if cls is None:
        return
    import inspect

    from .recipe import CUSTOM_VALUES, DEFAULT_CUSTOM_CALL, _did_you_mean

    for i, mode in modes:
        name = mode.custom_generate or ""
        where = f"validate.modes[{i}]"
        method = getattr(cls, name, None)
        if not callable(method):
            import difflib

            public = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))]
            close = difflib.get_close_matches(name, public, n=1, cutoff=0.6)
            c.add(f"{where}.custom_generate", f"{cls.__name__} has no method {name!r}"
                  f"{f' (did you mean {close[0]!r}?)' if close else ''}; name a method of the model's class")
            continue
        try:
            sig = inspect.signature(method)
        except (TypeError, ValueError):
            continue
        params = list(sig.parameters.values())
        if not isinstance(inspect.getattr_static(cls, name), (staticmethod, classmethod)) and params:
            params = params[1:]  # self
        shown = f"{cls.__name__}.{name}({', '.join(str(p) for p in params)})"
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
        by_name = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if mode.arguments:
            passed = {k: f"{where}.arguments" for k in mode.arguments}
        else:
            default = {*DEFAULT_CUSTOM_CALL, "max_new_tokens", *(k for k in mode.generate if k != "seed")}
            passed = {k: f"{where}.custom_generate" for k in sorted(default)}
        passed.update({k: f"{where}.custom_kwargs" for k in mode.custom_kwargs})
        for param, field in passed.items():
            if param in by_name or var_kw:
                continue
            close = _did_you_mean(param, list(by_name))
            fix = ("; map the method's parameters with arguments = {param = \"value\"} (values: " + ", ".join(CUSTOM_VALUES) + ")"
                   if field.endswith("custom_generate") else close if "did you mean" in close
                   else f"; its parameters are {', '.join(by_name) or 'none'}")
            what = "hubpub's default call passes" if field.endswith("custom_generate") else "the mode passes"
            c.add(field, f"{shown} has no parameter {param!r} that {what}{fix}")
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty or p.name in passed:
                continue
            if p.kind is p.POSITIONAL_ONLY:
                c.add(f"{where}.custom_generate", f"{shown}: parameter {p.name!r} is positional-only, and hubpub passes"
                      " arguments by name; wrap the method in one that takes keywords")
                continue
            c.add(f"{where}.arguments", f"{shown} needs {p.name!r}, which the mode does not pass; map it in arguments,"
                  f" e.g. arguments = {{ {p.name} = \"{_guess_value(p.name, CUSTOM_VALUES)}\", ... }} (values: {', '.join(CUSTOM_VALUES)})")


def _guess_value(param: str, values: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(param, list(values), n=1, cutoff=0.5)
    return close[0] if close else "prompt"


def _config_error(config: dict[str, Any], exc: BaseException) -> str:
    import transformers

    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    model_type = config.get("model_type")
    if "does not recognize this architecture" in first or "Unrecognized model" in first or "model type" in first.lower():
        return (f"transformers {transformers.__version__} does not know model_type {model_type!r}; upgrade transformers, "
                "or if the model ships its own code set model.trust_remote_code = true")
    return f"cannot build the model from its config (model_type {model_type!r}): {first}; check model.source"


def _decoder_config(recipe: "Recipe", config: dict[str, Any], folder: Path | None, hf_config: Any) -> tuple[dict[str, Any], Any, bool]:
    """The config of what is quantized (the whole model, or the decoder [quantize.split] names)."""
    from transformers import AutoConfig

    q = recipe.quantize
    if q.split:
        from .quantize.split import sub_config

        remote = recipe.model.trust_remote_code
        decoder = sub_config(config, q.split.config_key, q.split.architecture, base_dir=folder, trust_remote_code=remote)
        with tempfile.TemporaryDirectory(prefix="hubpub-check-") as tmp:
            (Path(tmp) / "config.json").write_text(json.dumps(decoder), encoding="utf-8")
            custom = bool(decoder.get("auto_map"))
            if custom and folder is not None:  # the decoder class is the model's own code: it travels with it
                for code in folder.glob("*.py"):
                    shutil.copy2(code, Path(tmp) / code.name)
            hf = AutoConfig.from_pretrained(tmp, trust_remote_code=custom and remote)
        if custom and folder is not None:
            hf._name_or_path = str(folder)  # where its auto_map's code lives once the scratch folder is gone
        return decoder, hf, custom and remote
    if hf_config is None:
        assert folder is not None
        hf_config = AutoConfig.from_pretrained(str(folder), trust_remote_code=recipe.model.trust_remote_code)
    return config, hf_config, recipe.model.trust_remote_code


def _meta_model(hf_config: Any, trust_remote_code: bool, auto_map: dict[str, Any]) -> Any:
    """The model's module tree on the meta device: shapes, no memory, no weights. The class is
    the one quantize loads (hubpub.loading.causal_lm_class): the model's own AutoModel when its
    code has no causal-LM class."""
    import torch
    import transformers

    cls = transformers.AutoModelForCausalLM
    if trust_remote_code and auto_map and "AutoModelForCausalLM" not in auto_map:
        cls = transformers.AutoModel
    with torch.device("meta"):
        return cls.from_config(hf_config, trust_remote_code=trust_remote_code)


def _plan(recipe: "Recipe", meta: Any, folder: Path | None, *, default: bool = False) -> dict[str, int] | None:
    """{linear name: in_features} of what will be quantized, via the quantize stage's own planner."""
    q = recipe.quantize
    to_full: Callable[[str], str] = lambda n: n  # noqa: E731
    other: frozenset[str] = frozenset()
    if q.split and folder is not None:
        try:
            from .quantize.split import decoder_names
            from .quantize.tensors import tensor_refs

            refs = tensor_refs(folder)
        except (OSError, ValueError):
            refs = None
        if refs:
            names = decoder_names(refs, q.split.prefix)  # QuantizeError when the prefix matches nothing
            to_full = names.to_full
            other = frozenset(n.rsplit(".", 1)[0] for n in refs if not n.startswith(q.split.prefix))
    try:
        from .quantize import targets as planner
    except ImportError:  # pragma: no cover - the planner is part of hubpub
        return None
    plan = planner.plan_targets(
        meta, targets=[] if default else list(getattr(q, "targets", []) or []),
        blocks=[] if default else list(getattr(q, "blocks", []) or []),
        keep_bf16=[] if default else list(q.keep_bf16), to_full=to_full, other_names=other,
    )
    return dict(plan.in_features)


# ----------------------------------------------------------------------------- entry points
# which problems stop which stage: a push needs no model source on the machine that pushes
STAGE_FIELDS: dict[str, tuple[str, ...] | None] = {
    "quantize": ("output_dir", "model.", "quantize."),
    "validate": ("output_dir", "model.", "validate.", "eval["),
    "card": ("card.",),
    "push": ("output_dir",),
    "release": None,  # everything
    "check": None,
}
MODEL_STAGES = ("quantize", "validate", "release", "check")  # those that read the model's config.json


def recipe_problems(recipe: "Recipe", *, model: bool = True, stage: str = "check") -> list["Problem"]:
    """path_problems, then (when those pass and ``model``) config_problems; only the fields
    ``stage`` reads (see STAGE_FIELDS; unknown stage names get every problem)."""
    fields = STAGE_FIELDS.get(stage)
    problems = [p for p in path_problems(recipe) if fields is None or p.field.startswith(fields)]
    if model and not problems and (stage in MODEL_STAGES or stage not in STAGE_FIELDS):
        problems += config_problems(recipe)
    problems.sort(key=lambda p: p.line or 0)
    return problems


def check_recipe(path: str | os.PathLike[str], *, model: bool = True) -> list["Problem"]:
    """Every problem of one recipe file (an empty list: it is fine). Never raises for bad input."""
    from .recipe import read_recipe

    recipe, problems = read_recipe(path)
    if recipe is None:
        return problems
    return recipe_problems(recipe, model=model)


def preflight(recipe: "Recipe", *, stage: str = "release", model: bool = True) -> None:
    """Call at the start of a stage, before anything heavy: raises RecipeError naming the recipe
    file, line and field of the first problem (and how many more) when the recipe cannot work.

    ``stage`` limits the checks to the fields that stage reads (a push does not need the model
    source). ``model=False`` skips reading config.json (no torch / transformers import, < 10 ms):
    use it where a stage may turn out cached, and model=True once it will really run."""
    from .recipe import problems_error

    problems = recipe_problems(recipe, model=model, stage=stage)
    if problems:
        raise problems_error(problems)


__all__ = ["GENERATE_RULES", "check_recipe", "config_problems", "mode_problems", "path_problems", "preflight", "recipe_problems", "value_problems"]
