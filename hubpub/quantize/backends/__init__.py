"""Quantize backends: the algorithms that turn a BF16 model into quantized weights.

One module per backend registers an object satisfying :class:`QuantizeBackend`. The recipe's
``[quantize] method`` names one (an unknown name is a one-line error listing the installed
choices); keys of ``[quantize]`` that only this backend reads are validated by its
``settings_model`` (pydantic, extra keys forbidden), with the same field-path errors as the rest
of the recipe. Built-ins: ``rtn``, ``autoround``, ``awq``, ``awq+autoround`` (all through
auto-round, hubpub/quantize/backends/_autoround.py).

Third-party backends plug in through the ``hubpub.backends`` entry-point group; a minimal one
is tests/plugins/hubpub_plugin_demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from ...registry import Registry

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ...events import EventSink
    from ...recipe import Recipe
    from ..formats import ExportFormat
    from ..targets import Plan


@dataclass
class BackendJob:
    """What a backend is asked to do: quantize the model in ``model_dir`` and export it into ``out_dir``."""

    recipe: "Recipe"
    model_dir: Path  # a standalone checkpoint folder (the base, or the extracted decoder)
    out_dir: Path  # where the export goes (config.json with quantization_config + weights)
    export: "ExportFormat"
    settings: "BaseModel | None"  # the backend's settings_model instance (None when it has none)
    device: str  # "cpu" | "cuda" (resolved)
    trust_remote_code: bool
    to_full: Callable[[str], str]  # decoder name -> name in the full checkpoint
    events: "EventSink | None" = None
    plan: "Plan | None" = None  # which linears are quantized (computed by the backend when None)
    strict: bool = False  # a quantized linear that no calibration data reaches is an error, not a warning


@dataclass
class BackendResult:
    timings: dict[str, float]  # seconds: load, calibration, quantize, export
    device: str
    nsamples_used: int  # calibration samples the backend used (0: data-free)
    kept_linears: list[str]  # names of block linears kept in BF16 (keep_bf16)
    iters: int = 0  # tuning steps per block (0: untuned)
    algorithms: list[str] = field(default_factory=list)  # e.g. ["awq", "sign_round"]
    plan: "Plan | None" = None
    coverage: dict[str, Any] = field(default_factory=dict)  # calibration coverage per target group
    calibration_sources: list[dict[str, Any]] = field(default_factory=list)  # what each calibration source gave


@runtime_checkable
class QuantizeBackend(Protocol):
    name: str  # the recipe's method value
    display_name: str  # for the card, e.g. "AutoRound"
    reference_url: str
    settings_model: "type[BaseModel] | None"  # backend-only [quantize] keys
    formats: tuple[str, ...] | None  # formats it can write (None: every registered one)
    devices: tuple[str, ...]  # "cpu", "cuda"
    needs_calibration: bool

    def quantize(self, job: BackendJob) -> BackendResult: ...

    def versions(self) -> dict[str, str]:
        """Versions of what it ran on, for the manifest (e.g. {"auto_round": "0.16.1"})."""
        ...


backends: Registry[QuantizeBackend] = Registry(
    kind="quantize backend",
    group="hubpub.backends",
    builtin=(
        "hubpub.quantize.backends.rtn",
        "hubpub.quantize.backends.autoround",
        "hubpub.quantize.backends.awq",
    ),
    required=("name", "display_name", "reference_url", "settings_model", "formats", "devices", "needs_calibration",
              "quantize", "versions"),
)


def validate_settings(backend: QuantizeBackend, data: dict[str, Any]) -> "BaseModel | None":
    """The backend's settings from the recipe keys it owns (raises pydantic's ValidationError)."""
    if backend.settings_model is None:
        return None
    return backend.settings_model.model_validate(data)


def setting_names(backend: QuantizeBackend) -> list[str]:
    model = backend.settings_model
    return [] if model is None else [f.alias or n for n, f in model.model_fields.items()]


def dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"


__all__ = ["BackendJob", "BackendResult", "QuantizeBackend", "backends", "dist_version", "setting_names", "validate_settings"]
