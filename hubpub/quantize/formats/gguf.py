"""``gguf:<type>``: one llama.cpp GGUF file (``gguf:q4_0``, ``gguf:q4_k_m``, ``gguf:q8_0``, ...),
written by auto-round's GGUF export (its bundled copy of llama.cpp's converter).

The release of a GGUF format is the ``.gguf`` file itself (named ``<model>-<TYPE>.gguf``, as
GGUF repos on the Hub name them) beside hubpub's manifest and recipe: no config.json, no
safetensors. Validate loads that file with transformers (``from_pretrained(folder,
gguf_file=...)``, which dequantizes it), so every mode and eval describes the shipped file;
:func:`run_llama_cpp_modes` runs the modes through llama.cpp itself when ``llama-cpp-python`` is
importable.

The GGUF type fixes the scheme: a recipe says ``bits`` / ``group_size`` / ``sym`` to match it
(checked by ``hubpub check``), so the numbers the card shows are the file's. K-quants
(``*_k_*``) are quantized on AutoRound's own GGUF grid (scheme ``GGUF:Q4_K_M``: 6-bit scales in
super-blocks of 256), which the quantize backend must pass to AutoRound: a backend that does so
declares ``honours_autoround_scheme = True``; with others k-quants are refused (a plain W4 run
exported as "q4_k_m" writes Q4_0 tensors).

Compatibility shims, each applied only where needed and documented here:

* auto-round 0.16.1's converter references enum members newer than the newest ``gguf`` on PyPI
  (0.19.0), e.g. ``gguf.MODEL_ARCH.DFLASH`` in a class body of the Qwen module: Qwen2 / Llama
  cannot even be imported. :func:`apply_gguf_shim` adds a placeholder attribute for each member
  the bundled converter names and the installed ``gguf`` lacks (scanned from its sources, so
  a newer ``gguf`` needs none). The placeholders are only ever *used* by the architectures that
  need them (DFlash, DeepSeek-V4, ...), which hubpub does not export.
* The converter recognises a BPE tokenizer by the hash of its pre-tokenizer output; one it does
  not know is a QuantizeError saying so (never silently mapped to another pre-tokenizer).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import QuantizeError
from . import formats

SUFFIX = ".gguf"


@dataclass(frozen=True)
class GGUFType:
    """One llama.cpp file type: what its main tensors hold."""

    name: str  # "q4_k_m" (llama.cpp's ftype name, lower case)
    bits: int
    group_size: int  # weights per scale
    sym: bool
    bpw: float  # nominal bits per weight of its main tensor type (ggml block bytes * 8 / block weights)
    ggml_type: str  # the ggml tensor type most linears get ("Q4_K")
    super_block: int = 0  # k-quants: weights per super-block (256), else 0

    @property
    def label(self) -> str:  # "Q4_K_M": the file-name / Ollama tag spelling
        return self.name.upper()

    @property
    def kquant(self) -> bool:
        return self.super_block > 0


def _bpw(weights: int, nbytes: int) -> float:
    return nbytes * 8 / weights


# bits 2 / 3 / 4 / 8 only: the recipe's bits field takes those (q5_* / q6_k would need bits = 5 / 6).
# Block sizes from auto_round/export/export_to_gguf/config.py (GGML_QUANT_SIZES), the same as ggml's.
TYPES: dict[str, GGUFType] = {t.name: t for t in (
    GGUFType("q4_0", 4, 32, True, _bpw(32, 18), "Q4_0"),
    GGUFType("q4_1", 4, 32, False, _bpw(32, 20), "Q4_1"),
    GGUFType("q8_0", 8, 32, True, _bpw(32, 34), "Q8_0"),
    GGUFType("q2_k_s", 2, 16, False, _bpw(256, 84), "Q2_K", 256),
    GGUFType("q3_k_s", 3, 16, True, _bpw(256, 110), "Q3_K", 256),
    GGUFType("q3_k_m", 3, 16, True, _bpw(256, 110), "Q3_K", 256),
    GGUFType("q3_k_l", 3, 16, True, _bpw(256, 110), "Q3_K", 256),
    GGUFType("q4_k_s", 4, 32, False, _bpw(256, 144), "Q4_K", 256),
    GGUFType("q4_k_m", 4, 32, False, _bpw(256, 144), "Q4_K", 256),
)}


def unknown_type(value: str) -> str:
    """The one-line error for ``format = "gguf:<something hubpub does not export>"``."""
    wanted = value.split(":", 1)[1] if ":" in value else value
    import difflib

    close = difflib.get_close_matches(wanted.lower(), list(TYPES), n=1, cutoff=0.6)
    hint = f"; did you mean 'gguf:{close[0]}'?" if close else ""
    return f"unknown GGUF type {wanted!r}{hint} (hubpub exports {', '.join('gguf:' + t for t in TYPES)})"


def unknown_format(value: str, names: list[str]) -> str:
    """The registry's "unknown format" line, with the GGUF types folded into one "gguf:<type>"."""
    import difflib

    others = [n for n in names if not n.startswith("gguf:")]
    shown = sorted(others + (["gguf:<type>"] if len(others) < len(names) else []))
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown format {value!r}{hint} (installed: {', '.join(shown)})"


# ----------------------------------------------------------------------------- the converter
def _converter_dir() -> Path | None:
    """auto-round's bundled llama.cpp converter (found without importing auto_round)."""
    spec = importlib.util.find_spec("auto_round")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "export" / "export_to_gguf" / "conversion"
    return path if (path / "__init__.py").is_file() else None


_ARCHS: dict[str, str] | None = None


def converter_architectures() -> dict[str, str]:
    """{HF architecture: converter module} of the text models the bundled converter writes
    (its ``TEXT_MODEL_MAP``, read with ast: nothing is imported)."""
    global _ARCHS
    if _ARCHS is None:
        found: dict[str, str] = {}
        root = _converter_dir()
        if root is not None:
            tree = ast.parse((root / "__init__.py").read_text(encoding="utf-8"))
            for node in tree.body:
                target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
                if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
                    found = ast.literal_eval(node.value)
        _ARCHS = found
    return _ARCHS


_SHIMMED: list[str] | None = None


def apply_gguf_shim() -> list[str]:
    """Add placeholders for the ``gguf`` enum members the bundled converter names and the installed
    ``gguf`` lacks (see the module doc); returns their names. Idempotent."""
    global _SHIMMED
    if _SHIMMED is not None:
        return _SHIMMED
    import gguf

    added: list[str] = []
    root = _converter_dir()
    for path in sorted(root.glob("*.py")) if root else []:
        refs = set(re.findall(r"\bgguf\.([A-Z][A-Za-z_]+)\.([A-Z][A-Z0-9_]+)\b", path.read_text(encoding="utf-8")))
        for enum_name, member in sorted(refs):
            cls = getattr(gguf, enum_name, None)
            if cls is None or hasattr(cls, member):
                continue
            setattr(cls, member, f"<gguf.{enum_name}.{member}: not in gguf {_version('gguf')}>")
            added.append(f"{enum_name}.{member}")
    _SHIMMED = added
    return added


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"


def gguf_tensor_types(path: Path) -> dict[str, str]:
    """{GGUF tensor name: ggml type name} of a .gguf file (reads the header only)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors}


def gguf_tensors(path: Path) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """(name, ggml type, bytes, shape) of every tensor of a .gguf file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return [(t.name, t.tensor_type.name, int(t.n_bytes), tuple(int(x) for x in t.shape)) for t in reader.tensors]


# ----------------------------------------------------------------------------- the format
@dataclass
class GGUFExport:
    """``gguf:<type>``: see the module doc."""

    type: GGUFType
    reference_url: str = "https://github.com/ggml-org/llama.cpp"
    install_line: str = "gguf"  # transformers reads .gguf files with the gguf package
    cpu_kernels: str = ""  # llama.cpp is the runtime; transformers dequantizes
    backends: tuple[str, ...] | None = None
    quant_method: str = "gguf"  # no quantization_config is written: nothing maps back by it
    single_file: bool = True  # quantize ships the .gguf as the release's weights

    @property
    def name(self) -> str:
        return f"gguf:{self.type.name}"

    @property
    def display_name(self) -> str:
        return f"GGUF {self.type.label}"

    @property
    def autoround_format(self) -> str:
        return self.name

    @property
    def needs_autoround_scheme(self) -> bool:
        """k-quants: AutoRound must quantize on the type's own scheme (super-blocks), not bits/group_size."""
        return self.type.kquant

    @property
    def autoround_scheme(self) -> str:
        """The scheme AutoRound quantizes on for this type (AutoRound(scheme=...))."""
        return f"GGUF:{self.type.label}"

    def file_name(self, model_name: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-.") or "model"
        return f"{stem}-{self.type.label}{SUFFIX}"

    # -- before anything runs ------------------------------------------------------------
    def refuse(self, *, backend: str, bits: int, sym: bool, device: str) -> str | None:
        t = self.type
        if t.kquant and not _honours_scheme(backend):
            plain = ", ".join(f"'gguf:{n}'" for n, x in TYPES.items() if not x.kquant)
            return (f"format {self.name!r} needs AutoRound's {self.autoround_scheme} scheme (k-quant super-blocks), which"
                    f" method {backend!r} does not pass to AutoRound yet; use {plain}")
        if bits != t.bits or sym != t.sym:
            return f"format {self.name!r} stores {self.scheme_text()}: set {self.scheme_fix()}"
        return None

    def refuse_group_size(self, group_size: int) -> str | None:
        if group_size != self.type.group_size:
            return f"format {self.name!r} stores {self.scheme_text()}: set {self.scheme_fix()}"
        return None

    def scheme_text(self) -> str:
        t = self.type
        kind = "symmetric" if t.sym else "asymmetric"
        sup = f" in super-blocks of {t.super_block}" if t.kquant else ""
        return f"{t.bits}-bit {kind} weights in groups of {t.group_size}{sup}"

    def scheme_fix(self) -> str:
        t = self.type
        return f"bits = {t.bits}, group_size = {t.group_size}, sym = {'true' if t.sym else 'false'}"

    def refuse_model(self, config: dict[str, Any], *, split: bool = False) -> str | None:
        """Why this model cannot be exported to this GGUF type (from config.json), or None."""
        if split:
            return (f"format {self.name!r} exports a whole text model; a [quantize.split] decoder beside a vision tower"
                    " is not a GGUF text model: use a safetensors format such as 'auto_round'")
        archs = converter_architectures()
        arch = (config.get("architectures") or [None])[0]
        if archs and arch not in archs:
            return (f"format {self.name!r}: auto-round {_version('auto-round')}'s llama.cpp converter has no text model"
                    f" {arch!r} (it writes e.g. LlamaForCausalLM, Qwen2ForCausalLM, ...); use a safetensors format such as 'auto_round'")
        return None

    def missing_requirement(self, *, bits: int = 4, sym: bool = True) -> str | None:
        for module, pip_name in (("gguf", "gguf"), ("sentencepiece", "sentencepiece")):
            if importlib.util.find_spec(module) is None:
                return f"{self.name!r} needs the {pip_name} package; pip install -c constraints.txt {pip_name}"
        return None

    # -- writing ---------------------------------------------------------------------------
    def write(self, rounder: Any, out_dir: str, *, bits: int = 4, sym: bool = True) -> None:
        apply_gguf_shim()
        try:
            rounder.save_quantized(out_dir, format=self.autoround_format)
        except NotImplementedError as exc:
            first = (str(exc).splitlines() or ["not supported"])[0]
            if "pre-tokenizer" in first:
                raise QuantizeError(
                    f"quantize.format: llama.cpp's converter (auto-round {_version('auto-round')}) does not recognise this"
                    f" tokenizer's BPE pre-tokenizer ({first}); a GGUF of it would tokenize wrongly in llama.cpp: use a"
                    " safetensors format such as 'auto_round'") from None
            raise QuantizeError(f"quantize.format: {self.name!r} cannot export this model: {first}") from None
        except SystemExit:  # the converter sys.exit(1)s on an architecture it lacks (refuse_model checks it first)
            raise QuantizeError(f"quantize.format: auto-round's llama.cpp converter cannot export this architecture to {self.name!r}") from None
        files = sorted(Path(out_dir).glob(f"*{SUFFIX}"))
        if len(files) != 1:
            raise QuantizeError(f"quantize: auto-round wrote {len(files)} .gguf files for {self.name!r} (expected 1); report this as a hubpub bug")
        self.check_file(files[0])

    def check_file(self, path: Path) -> None:
        """The file holds this type's tensors: a W4 run exported as "q4_k_m" writes Q4_0 ones."""
        types = set(gguf_tensor_types(path).values())
        if self.type.ggml_type not in types:
            raise QuantizeError(
                f"quantize: the exported {path.name} has no {self.type.ggml_type} tensors (it has {', '.join(sorted(types))}):"
                f" the backend did not quantize on AutoRound's {self.autoround_scheme} scheme; report this as a hubpub bug")

    def load_kwargs(self, qconfig: dict[str, Any]) -> dict[str, Any]:
        return {}


def _honours_scheme(backend: str) -> bool:
    from ..backends import backends

    return backend in backends and bool(getattr(backends.get(backend), "honours_autoround_scheme", False))


def is_gguf(fmt: Any) -> bool:
    return bool(getattr(fmt, "single_file", False)) and str(getattr(fmt, "name", "")).startswith("gguf:")


# ----------------------------------------------------------------------------- llama.cpp
def llama_cpp_version() -> str | None:
    """llama-cpp-python's version when it is importable, else None (it is not a dependency)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return None
    return _version("llama-cpp-python")


def run_llama_cpp_modes(path: Path, modes: list[Any], *, n_threads: int | None = None) -> dict[str, Any]:
    """Run generation modes (validate's ModeJob) through llama.cpp on the .gguf itself.

    Returns ``{"runtime": "llama.cpp", "version": ..., "modes": [{"name", "outputs", "latency_s",
    "new_tokens", "error"}]}``; only called when :func:`llama_cpp_version` is not None. Greedy
    settings map to temperature 0; batch modes run prompt by prompt (llama.cpp's Python API has
    no batched generate); beam search and streaming are run as plain greedy calls.
    """
    from llama_cpp import Llama  # type: ignore[import-not-found]

    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=n_threads, verbose=False, seed=0)
    results = []
    for mode in modes:
        gen = mode.generate.kwargs() if hasattr(mode.generate, "kwargs") else dict(mode.generate or {})
        max_tokens = int(gen.get("max_new_tokens", 24))
        sample = bool(gen.get("do_sample", False))
        args = dict(max_tokens=max_tokens, temperature=float(gen.get("temperature", 1.0)) if sample else 0.0,
                    top_k=int(gen.get("top_k", 40)) if sample else 1, top_p=float(gen.get("top_p", 1.0)),
                    repeat_penalty=float(gen.get("repetition_penalty", 1.0)))
        if gen.get("seed") is not None:
            args["seed"] = int(gen["seed"])
        outputs: list[str] = []
        tokens = 0
        error = ""
        started = time.perf_counter()
        try:
            prompt = mode.prompt
            if isinstance(prompt, list):  # chat messages: llama.cpp applies the file's chat template
                out = llm.create_chat_completion(messages=[m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in prompt], **args)
                outputs.append(out["choices"][0]["message"]["content"] or "")
                tokens += int(out["usage"]["completion_tokens"])
            else:
                for text in (mode.prompts or [prompt]):
                    out = llm.create_completion(prompt=text, **args)
                    outputs.append(out["choices"][0]["text"])
                    tokens += int(out["usage"]["completion_tokens"])
        except Exception as exc:  # a mode that fails in llama.cpp is a result, not a crash
            error = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
        results.append({"name": mode.name, "outputs": outputs, "latency_s": time.perf_counter() - started,
                        "new_tokens": tokens, "error": error})
    return {"runtime": "llama.cpp", "version": llama_cpp_version(), "modes": results}


for _t in TYPES.values():
    formats.register(GGUFExport(type=_t))

__all__ = ["GGUFExport", "GGUFType", "TYPES", "apply_gguf_shim", "converter_architectures", "gguf_tensors",
           "gguf_tensor_types", "is_gguf", "llama_cpp_version", "run_llama_cpp_modes", "unknown_type"]
