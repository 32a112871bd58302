"""hubpub: quantize -> validate -> card -> push, from one TOML recipe.

The public API is imported lazily so that ``import hubpub`` (and ``hubpub --help``) never pulls
in torch, transformers or auto_round.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load_recipe": "hubpub.recipe",
    "Recipe": "hubpub.recipe",
    "quantize": "hubpub.quantize",
    "QuantizeResult": "hubpub.quantize",
    "validate": "hubpub.validate",
    "ValidateResult": "hubpub.validate",
    "render_card": "hubpub.card",
    "CardResult": "hubpub.card",
    "push": "hubpub.hub",
    "PushResult": "hubpub.hub",
    "release": "hubpub.release",
    "ReleaseResult": "hubpub.release",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        module = importlib.import_module(_API[name])
        # quantize/validate/release are also package names: their packages are callable stage
        # functions (hubpub/_stage.py), so either binding works
        return module if name == module.__name__.rsplit(".", 1)[-1] else getattr(module, name)
    raise AttributeError(f"module 'hubpub' has no attribute {name!r}")
