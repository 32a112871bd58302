"""``rtn``: plain round-to-nearest (no calibration data, no tuning)."""

from __future__ import annotations

from . import backends
from ._autoround import AutoRoundBackend

backends.register(AutoRoundBackend(
    name="rtn",
    display_name="RTN",
    algorithms=("rtn",),
    reference_url="https://github.com/intel/auto-round",
    summary="round-to-nearest, data-free",
))
