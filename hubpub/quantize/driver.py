"""Compatibility names: the AutoRound driver moved onto the backend registry.

``hubpub.quantize.backends`` holds the backends (rtn, autoround, awq, awq+autoround, plugins),
``hubpub.quantize.backends._autoround`` the auto-round engine, ``hubpub.quantize.targets``
the plan of what is quantized, ``hubpub.quantize.formats`` the export formats.
"""

from __future__ import annotations

from ..errors import QuantizeError
from .backends._autoround import pick_device
from .targets import check_group_size, matches


def check_format_available(fmt: str) -> None:
    from .formats import formats

    missing = formats.get(fmt).missing_requirement()
    if missing:
        raise QuantizeError(f"quantize.format: {missing}")


__all__ = ["check_format_available", "check_group_size", "matches", "pick_device"]
