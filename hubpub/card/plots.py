"""Bar charts base vs quantized (size, memory, latency) as PNG bytes.

Deterministic: Agg backend, fixed size/dpi/fonts, no "Software"/date metadata, so the same
numbers give the same bytes and re-rendering a card does not create a new Hub commit.
Rendering returns bytes; the caller writes them only once the whole card has rendered.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .numbers import Row

# row key -> (file name, chart title)
CHARTS = {
    "weight_bytes": ("size.png", "Disk size (weights)"),
    "resident_bytes": ("memory.png", "Memory after load"),
    "peak_memory_bytes": ("memory.png", "Peak memory"),
    "latency_s": ("latency.png", "Latency (median per call)"),
}


@dataclass(frozen=True)
class Plot:
    name: str  # file name under assets/
    title: str
    row: Row


def plan_plots(rows: list[Row]) -> list[Plot]:
    """The charts there is data for: both sides measured."""
    plots: list[Plot] = []
    for row in rows:
        if row.key in CHARTS and row.left is not None and row.right is not None:
            name, title = CHARTS[row.key]
            if any(p.name == name for p in plots):  # one memory chart: the resident footprint when measured
                continue
            plots.append(Plot(name, title, row))
    return plots


def _scaled(row: Row) -> tuple[float, float, str, float]:
    if row.kind == "bytes":
        from ..units import bytes_scale

        unit, size = bytes_scale(max(row.left or 0, row.right or 0))
        return (row.left or 0) / size, (row.right or 0) / size, unit, size
    return float(row.left or 0), float(row.right or 0), "s", 1.0


def render_png(plot: Plot, quantized_label: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    left, right, unit, size = _scaled(plot.row)
    errors = None
    if plot.row.left_ci is not None and plot.row.right_ci is not None:  # the measured spread, drawn: noise is visible
        errors = [[max(0.0, v - ci[0] / size) for v, ci in ((left, plot.row.left_ci), (right, plot.row.right_ci))],
                  [max(0.0, ci[1] / size - v) for v, ci in ((left, plot.row.left_ci), (right, plot.row.right_ci))]]
    with matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 10, "svg.hashsalt": "hubpub"}):
        fig = Figure(figsize=(4.0, 2.6), dpi=100)
        ax = fig.add_subplot()
        bars = ax.bar(["BF16 base", quantized_label], [left, right], color=["#9aa5b1", "#e8743b"], width=0.55,
                      yerr=errors, capsize=4 if errors else 0)
        labels = [plot.row.left_text, plot.row.right_text]
        ax.bar_label(bars, labels=labels, padding=2)
        ax.set_ylim(0, max(left, right) * 1.25 or 1)
        ax.set_ylabel(unit)
        verdict = ", within noise" if plot.row.verdict == "tied within noise" else ""
        ax.set_title(f"{plot.title} ({plot.row.delta_text}{verdict})")
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
