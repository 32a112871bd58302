"""Human-friendly numbers and base-vs-quantized comparison rows.

One row type serves the TL;DR table (base vs quantized), the plots and the version history
(previous release vs this one), so every table formats and computes deltas the same way:
relative % for sizes, times and throughput, absolute for ratios, "pts" for percentages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..artifacts import Metrics, ModelMetrics

Kind = Literal["bytes", "seconds", "rate", "percent", "ratio"]
DASH = "—"

# Eval metric names whose values are fractions shown as percentages (delta in "pts").
_PERCENT_NAMES = ("acc", "agreement", "validity", "rate", "@", "exact", "recall", "precision", "pass")
_LABELS = {
    "perplexity": "Perplexity",
    "kl": "KL divergence",
    "mean_kl": "KL divergence",
    "top1_agreement": "Top-1 agreement",
    "similarity": "Output similarity",
    "mean_iou": "Mean IoU",
    "iou@0.5": "IoU@0.5",
}
_DIGITS = {"perplexity": 2, "kl": 4, "mean_kl": 4}


def human_bytes(n: float | None) -> str:
    if n is None:
        return DASH
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if unit == "GB" else f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float | None) -> str:
    if s is None:
        return DASH
    if abs(s) >= 100:
        return f"{s:.0f} s"
    if abs(s) >= 10:
        return f"{s:.1f} s"
    if abs(s) >= 1:
        return f"{s:.2f} s"
    return f"{s:.3f} s"


def metric_kind(name: str) -> Kind:
    lowered = name.lower()
    return "percent" if any(part in lowered for part in _PERCENT_NAMES) else "ratio"


def metric_label(name: str) -> str:
    return _LABELS.get(name, name.replace("_", " ").capitalize())


def format_value(value: float | None, kind: Kind, digits: int = 3) -> str:
    if value is None:
        return DASH
    if kind == "bytes":
        return human_bytes(value)
    if kind == "seconds":
        return human_seconds(value)
    if kind == "rate":
        return f"{value:.1f} tok/s"
    if kind == "percent":
        return f"{value * 100:.1f} %"
    return f"{value:.{digits}f}"


def format_delta(left: float | None, right: float | None, kind: Kind, digits: int = 3) -> str:
    if left is None or right is None:
        return DASH
    if kind in ("bytes", "seconds", "rate"):
        if left == 0:
            return DASH
        return f"{(right - left) / left * 100:+.1f} %"
    if kind == "percent":
        return f"{(right - left) * 100:+.1f} pts"
    return f"{right - left:+.{digits}f}"


@dataclass(frozen=True)
class Row:
    """One compared quantity: ``left`` is the base (or previous release), ``right`` this model."""

    key: str
    label: str
    kind: Kind
    left: float | None
    right: float | None
    digits: int = 3

    @property
    def left_text(self) -> str:
        return format_value(self.left, self.kind, self.digits)

    @property
    def right_text(self) -> str:
        return format_value(self.right, self.kind, self.digits)

    @property
    def delta_text(self) -> str:
        return format_delta(self.left, self.right, self.kind, self.digits)

    @property
    def relative(self) -> float | None:
        """(right - left) / left, for sentences like "62 % smaller"."""
        if self.left in (None, 0) or self.right is None:
            return None
        return (self.right - self.left) / self.left


def memory_label(kind: str) -> str:
    return "Runtime VRAM (peak)" if kind.startswith("cuda") else "Runtime RAM (peak)"


def model_rows(left: ModelMetrics | None, right: ModelMetrics | None, left_weight_bytes: int | None = None) -> list[Row]:
    """Size, memory, load time, latency, throughput and validity of two models."""

    def get(m: ModelMetrics | None, attr: str) -> float | None:
        return getattr(m, attr) if m is not None else None

    memory_kind = (right or left).memory_kind if (right or left) is not None else "peak_rss"
    rows = [
        Row("weight_bytes", "Disk size (weights)", "bytes", get(left, "weight_bytes") or left_weight_bytes, get(right, "weight_bytes")),
        Row("peak_memory_bytes", memory_label(memory_kind), "bytes", get(left, "peak_memory_bytes"), get(right, "peak_memory_bytes")),
        Row("load_s", "Load time", "seconds", get(left, "load_s"), get(right, "load_s")),
        Row("latency_s", "Latency (median per call)", "seconds", get(left, "latency_s"), get(right, "latency_s")),
        Row("tokens_per_s", "Throughput", "rate", get(left, "tokens_per_s"), get(right, "tokens_per_s")),
        Row("validity", "Output validity", "percent", get(left, "validity"), get(right, "validity")),
    ]
    return [row for row in rows if row.left is not None or row.right is not None]


def eval_rows(metrics: Metrics, left_side: str = "base", right_side: str = "quantized") -> list[Row]:
    """One row per headline eval metric, sides picked from each metric's {"base", "quantized"}."""
    rows = []
    several = len(metrics.evals) > 1
    for ev in metrics.evals:
        for name in ev.metrics:  # validate's order: headline metric first
            sides = ev.metrics[name]
            label = metric_label(name) + (f" ({ev.name})" if several else "")
            rows.append(
                Row(f"eval:{ev.name}:{name}", label, metric_kind(name), sides.get(left_side), sides.get(right_side), _DIGITS.get(name, 3))
            )
    return rows


def tldr_rows(metrics: Metrics, base_weight_bytes: int | None) -> list[Row]:
    model = model_rows(metrics.base, metrics.quantized, base_weight_bytes)
    # the seed cards' order: size, memory, accuracy, validity, speed
    head = [r for r in model if r.key in ("weight_bytes", "peak_memory_bytes")]
    tail = [r for r in model if r.key not in ("weight_bytes", "peak_memory_bytes")]
    return head + eval_rows(metrics) + tail


def release_rows(previous: Metrics, current: Metrics) -> list[Row]:
    """This release's quantized model against the previous release's quantized model."""
    rows = model_rows(previous.quantized, current.quantized)
    prev_evals = {r.key: r for r in eval_rows(previous, "quantized", "quantized")}
    for row in eval_rows(current, "quantized", "quantized"):
        before = prev_evals.get(row.key)
        rows.append(Row(row.key, row.label, row.kind, before.right if before else None, row.right, row.digits))
    return rows
