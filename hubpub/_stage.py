"""Let a stage's package be called like its function.

``hubpub.quantize`` is both a package (hubpub/quantize/) and, in the public API, the function
``quantize(recipe)``. Python rebinds ``hubpub.quantize`` to the package whenever it is imported,
so instead of fighting that, the package itself forwards calls to the stage function.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    class StageModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return function(*args, **kwargs)

    StageModule.__call__.__doc__ = function.__doc__
    sys.modules[module_name].__class__ = StageModule
