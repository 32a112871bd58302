"""Export formats: how a quantized model is written, what can write it, and how it loads back.

One module per format registers an :class:`ExportFormat`. The recipe's ``[quantize] format`` is
checked against this registry; :meth:`ExportFormat.refuse` decides, before anything heavy runs,
whether a (backend, bits, sym, device) combination can be written AND loaded back here, and
says why not and what works instead. The card reads ``display_name`` / ``install_line``;
validate's loader (hubpub.loading) asks the format for its ``load_kwargs``.

Third-party formats plug in through the ``hubpub.formats`` entry-point group.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ...registry import Registry


@runtime_checkable
class ExportFormat(Protocol):
    name: str  # the recipe's value, e.g. "auto_gptq"
    display_name: str  # for the card, e.g. "GPTQ (auto_gptq)"
    reference_url: str
    quant_method: str  # what config.json's quantization_config.quant_method says
    install_line: str  # what a user pip-installs to load it with transformers
    backends: tuple[str, ...] | None  # backends that can write it (None: any)

    def refuse(self, *, backend: str, bits: int, sym: bool, device: str) -> str | None:
        """None if this combination can be written and loaded back; else 'why; what works instead'."""

    def missing_requirement(self, *, bits: int = 4, sym: bool = True) -> str | None:
        """None if everything needed to write and load it here is installed; else "'name' needs X; pip install X, or ..."."""

    def write(self, rounder: Any, out_dir: str, *, bits: int = 4, sym: bool = True) -> None:
        """Export a quantized AutoRound compressor into out_dir."""

    def load_kwargs(self, qconfig: dict[str, Any]) -> dict[str, Any]:
        """Extra from_pretrained() arguments that make transformers load this format on CPU."""


@dataclass
class AutoRoundExport:
    """A format AutoRound writes with ``save_quantized(format=...)``: the common base of the built-ins."""

    name: str
    display_name: str
    quant_method: str
    install_line: str
    reference_url: str = "https://github.com/intel/auto-round"
    cpu_kernels: str = ""  # the package with fast CPU kernels for it (the card names it), if any
    autoround_format: str = ""  # AutoRound's name for it (default: name)
    autoround_format_for: dict[tuple[int, bool], str] = field(default_factory=dict)  # ... for some (bits, sym)
    bits: tuple[int, ...] = (2, 3, 4, 8)
    sym: tuple[bool, ...] = (True, False)
    devices: tuple[str, ...] = ("cpu", "cuda")
    backends: tuple[str, ...] | None = None
    # (python module, pip name): needed to write or load the format in this environment
    requires: tuple[tuple[str, str], ...] = ()
    requires_asym: tuple[tuple[str, str], ...] = ()  # needed only for sym = false
    # why a scheme is refused, keyed by (bits, sym); checked before bits / sym
    refused: dict[tuple[int, bool], str] = field(default_factory=dict)

    def refuse(self, *, backend: str, bits: int, sym: bool, device: str) -> str | None:
        if self.backends is not None and backend not in self.backends:
            return f"format {self.name!r} is written by method {' / '.join(map(repr, self.backends))} only; pick one of them or format 'auto_round'"
        reason = self.refused.get((bits, sym))
        if reason:
            return reason
        if bits not in self.bits:
            return f"format {self.name!r} supports bits = {' or '.join(map(str, self.bits))} only; {alternative(self.name, backend, bits, sym, device)}"
        if sym not in self.sym:
            need = "sym = true" if True in self.sym else "sym = false"
            what = "symmetric" if sym else "asymmetric (zero points)"
            return f"format {self.name!r} cannot store {what} weights: set {need}, or {alternative(self.name, backend, bits, sym, device)}"
        if device not in self.devices and device != "auto":
            return f"format {self.name!r} cannot be quantized on {device}; use device = 'auto'"
        return None

    def missing_requirement(self, *, bits: int = 4, sym: bool = True) -> str | None:
        for module, pip_name in self.requires + (() if sym else self.requires_asym):
            if importlib.util.find_spec(module) is None:
                return f"{self.name!r} needs the {pip_name} package; pip install {pip_name}, or use format 'auto_round'"
        return None

    def write(self, rounder: Any, out_dir: str, *, bits: int = 4, sym: bool = True) -> None:
        rounder.save_quantized(out_dir, format=self.autoround_format_for.get((bits, sym)) or self.autoround_format or self.name)

    def load_kwargs(self, qconfig: dict[str, Any]) -> dict[str, Any]:
        return {}


def alternative(current: str, backend: str, bits: int, sym: bool, device: str) -> str:
    """'use format X' for the first other format that takes this scheme, else a scheme change."""
    if _searching:  # a format's refuse() asked while we ask it: only "does it fit" matters here
        return ""
    _searching.append(current)
    try:
        ordered = sorted(formats, key=lambda f: (f.name != "auto_round", f.name))
        for fmt in ordered:
            if fmt.name != current and fmt.refuse(backend=backend, bits=bits, sym=sym, device=device) is None:
                return f"use format {fmt.name!r}"
    finally:
        _searching.pop()
    return "use bits = 4 with sym = true"


_searching: list[str] = []


formats: Registry[ExportFormat] = Registry(
    kind="format",
    group="hubpub.formats",
    builtin=(
        "hubpub.quantize.formats.auto_round",
        "hubpub.quantize.formats.auto_gptq",
        "hubpub.quantize.formats.auto_awq",
        "hubpub.quantize.formats.llm_compressor",
        "hubpub.quantize.formats.gguf",  # gguf:q4_0, gguf:q4_k_m, gguf:q8_0, ... (one llama.cpp file)
    ),
    required=("name", "display_name", "quant_method", "install_line", "refuse", "missing_requirement", "write", "load_kwargs"),
)


def format_of(qconfig: dict[str, Any]) -> ExportFormat | None:
    """The registered format that wrote a checkpoint, from its quantization_config."""
    method = qconfig.get("quant_method")
    for fmt in formats:
        if fmt.quant_method == method:
            return fmt
    return None


__all__ = ["AutoRoundExport", "ExportFormat", "alternative", "format_of", "formats"]
