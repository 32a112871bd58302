"""One convention for the numbers hubpub shows: sizes in decimal SI units (1 MB = 10^6 bytes,
as the Hub shows file sizes), durations in s / min / h, percentages with a sign for changes."""

from __future__ import annotations

BYTES_CONVENTION = "1 MB = 10^6 bytes"
_UNITS = (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def human_bytes(n: float | None, *, digits: int = 1) -> str:
    """269_100_000 -> '269.1 MB'; None -> '-'."""
    if n is None:
        return "-"
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit, size in _UNITS:
        if n >= size:
            return f"{sign}{n / size:.{digits}f} {unit}"
    return f"{sign}{int(n)} B"


def bytes_scale(n: float) -> tuple[str, float]:
    """The unit human_bytes would use for n, and its size (for axes of plots)."""
    for unit, size in _UNITS:
        if abs(n) >= size:
            return unit, size
    return "B", 1.0


def human_duration(seconds: float | None) -> str:
    """0.42 -> '0.42 s'; 75 -> '1 min 15 s'; 3700 -> '1 h 2 min'."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def percent(value: float | None, *, digits: int = 1) -> str:
    """0.981 -> '98.1 %'."""
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def relative_change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None or before == 0:
        return None
    return (after - before) / abs(before)


def signed_percent(change: float | None, *, digits: int = 1) -> str:
    """0.145 -> '+14.5 %'; -0.576 -> '-57.6 %'."""
    return "-" if change is None else f"{change * 100:+.{digits}f} %"
