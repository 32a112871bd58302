"""The family's size-vs-quality plot (PNG bytes): file size (x) vs the main quality metric (y),
one point per variant, the Pareto front (hubpub.sweep.pareto) joined by a line, the recommended
variant ringed. Deterministic like plots.py (Agg, fixed size, no "Software" metadata), so the same
numbers give the same bytes and a re-render makes no new commit.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FamilyPlot:
    metric: str  # the row key on the y axis
    label: str  # the y axis label
    higher_is_better: bool
    points: list[tuple[str, float, float]]  # (variant name, size MB, metric)
    front: list[str]  # names on the Pareto front
    recommended: str | None


def plan_family_plot(rows: list[dict[str, Any]], metric: str, higher: bool, recommended: str | None,
                     label: str | None = None) -> FamilyPlot | None:
    """What to draw, or None when fewer than two variants have both a size and the metric."""
    from ..sweep import pareto

    usable = [r for r in rows if r.get("size_mb") is not None and r.get(metric) is not None]
    if len(usable) < 2:
        return None
    front = [usable[i]["name"] for i in pareto(usable, metric, higher)]
    points = [(r["name"], float(r["size_mb"]), float(r[metric])) for r in usable]
    shown = label or ("gates met (1 = yes)" if metric == "passed" else metric.replace("_", " "))
    return FamilyPlot(metric, shown, higher, points, front, recommended)


def render_family_png(plot: FamilyPlot) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 9, "svg.hashsalt": "hubpub"}):
        fig = Figure(figsize=(5.0, 3.2), dpi=100)
        ax = fig.add_subplot()
        on = [p for p in plot.points if p[0] in plot.front]
        off = [p for p in plot.points if p[0] not in plot.front]
        if off:
            ax.scatter([p[1] for p in off], [p[2] for p in off], color="#9aa5b1", s=30, zorder=3, label="variant")
        line = sorted(on, key=lambda p: (p[1], p[2]))
        ax.plot([p[1] for p in line], [p[2] for p in line], color="#e8743b", marker="o", markersize=6, zorder=4,
                label="Pareto front")
        for name, x, y in plot.points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            if name == plot.recommended:
                ax.scatter([x], [y], s=160, facecolors="none", edgecolors="#2b8a3e", linewidths=1.5, zorder=5,
                           label="recommended")
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(plot.label + (" (higher is better)" if plot.higher_is_better else " (lower is better)"))
        ax.set_title("Size vs quality")
        xs = [p[1] for p in plot.points]
        pad = (max(xs) - min(xs)) * 0.15 or max(xs) * 0.05 or 1.0
        ax.set_xlim(min(xs) - pad, max(xs) + pad * 2)
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(loc="best", fontsize=8, frameon=False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
