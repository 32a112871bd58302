"""Base-vs-quantized comparison rows, formatted with one convention (hubpub/units.py).

One row type serves the TL;DR table (base vs quantized), the evaluation tables, the plots and the
version history (previous release vs this one). Model rows (size, memory, time, throughput,
validity) know their kind; eval rows carry the :class:`~hubpub.artifacts.MetricInfo` their eval
kind declared (unit, higher-is-better, digits, relative or absolute delta): nothing is guessed
from a metric's name. A row with intervals can say whether a difference is real: "tied within
noise" only when the interval of the difference contains 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import units
from ..artifacts import Interval, MetricInfo, Metrics, ModelMetrics

Kind = Literal["bytes", "seconds", "rate", "percent", "ratio", "metric"]
DASH = "—"


def human_bytes(n: float | None) -> str:
    return DASH if n is None else units.human_bytes(n)


def human_seconds(s: float | None) -> str:
    return DASH if s is None else units.human_duration(s)


def metric_label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _info_for(kind: Kind, digits: int) -> MetricInfo:
    """The display of a model row (same formatting path as eval metrics)."""
    return {
        "percent": MetricInfo(label="", unit="%", digits=1, delta="points"),
        "ratio": MetricInfo(label="", unit="", digits=digits, delta="absolute"),
    }.get(kind, MetricInfo(label="", delta="relative"))


def format_value(value: float | None, kind: Kind, digits: int = 3, info: MetricInfo | None = None) -> str:
    if value is None:
        return DASH
    if kind == "bytes":
        return units.human_bytes(value)
    if kind == "seconds":
        return units.human_duration(value)
    if kind == "rate":
        return f"{value:.1f} tok/s"
    info = info or _info_for(kind, digits)
    if info.unit == "%":
        return units.percent(value, digits=info.digits)
    text = f"{value:.{info.digits}f}"
    return f"{text} {info.unit}" if info.unit else text


def delta_value(left: float | None, right: float | None, kind: Kind, info: MetricInfo | None = None) -> float | None:
    """The change in the row's delta unit: relative ((r - l) / l) or absolute (r - l)."""
    if left is None or right is None:
        return None
    mode = "relative" if kind in ("bytes", "seconds", "rate") else (info or _info_for(kind, 3)).delta
    if mode == "relative":
        return units.relative_change(left, right)
    return right - left


def format_delta_value(change: float | None, kind: Kind, digits: int = 3, info: MetricInfo | None = None) -> str:
    if change is None:
        return DASH
    mode = "relative" if kind in ("bytes", "seconds", "rate") else (info or _info_for(kind, digits)).delta
    if mode == "relative":
        return units.signed_percent(change)
    if mode == "points":
        return f"{change * 100:+.1f} pts"
    d = (info or _info_for(kind, digits)).digits
    return f"{change:+.{d}f}"


def format_delta(left: float | None, right: float | None, kind: Kind, digits: int = 3, info: MetricInfo | None = None) -> str:
    return format_delta_value(delta_value(left, right, kind, info), kind, digits, info)


@dataclass(frozen=True)
class Row:
    """One compared quantity: ``left`` is the base (or previous release), ``right`` this model."""

    key: str
    label: str
    kind: Kind
    left: float | None
    right: float | None
    digits: int = 3
    info: MetricInfo | None = None
    left_ci: Interval | None = None
    right_ci: Interval | None = None
    delta_ci: Interval | None = None  # interval of the difference, in the delta unit

    @property
    def left_text(self) -> str:
        return format_value(self.left, self.kind, self.digits, self.info)

    @property
    def right_text(self) -> str:
        return format_value(self.right, self.kind, self.digits, self.info)

    @property
    def delta_text(self) -> str:
        return format_delta(self.left, self.right, self.kind, self.digits, self.info)

    def _ci(self, ci: Interval | None) -> str:
        if ci is None:
            return ""
        return f"[{format_value(ci[0], self.kind, self.digits, self.info)}, {format_value(ci[1], self.kind, self.digits, self.info)}]"

    @property
    def left_ci_text(self) -> str:
        return self._ci(self.left_ci)

    @property
    def right_ci_text(self) -> str:
        return self._ci(self.right_ci)

    @property
    def delta_ci_text(self) -> str:
        if self.delta_ci is None:
            return ""
        lo, hi = (format_delta_value(v, self.kind, self.digits, self.info) for v in self.delta_ci)
        return f"[{lo}, {hi}]"

    @property
    def relative(self) -> float | None:
        """(right - left) / left, for sentences like "62 % smaller"."""
        return units.relative_change(self.left, self.right)

    @property
    def higher_is_better(self) -> bool:
        if self.info is not None:
            return self.info.higher_is_better
        return self.kind in ("rate", "percent")

    @property
    def verdict(self) -> str:
        """"better" / "worse" / "tied within noise" (the interval of the difference holds 0) /
        "" when no interval was measured (then no claim is made)."""
        if self.delta_ci is None or self.left is None or self.right is None:
            return ""
        lo, hi = self.delta_ci
        if lo <= 0 <= hi:
            return "tied within noise"
        up = lo > 0
        return "better" if up == self.higher_is_better else "worse"


def memory_label(kind: str, resident: bool = False) -> str:
    what = "VRAM" if kind.startswith("cuda") else "RAM"
    return f"Runtime {what} (resident after load)" if resident else f"Runtime {what} (peak while generating)"


def _latency_ci(left: ModelMetrics | None, right: ModelMetrics | None) -> Interval | None:
    """A relative-change 'interval' from the two models' latency intervals: None unless both were
    measured with enough runs; it contains 0 whenever the two intervals overlap (no claim then)."""
    if left is None or right is None or left.latency_interval is None or right.latency_interval is None or not left.latency_s:
        return None
    (l_lo, l_hi), (r_lo, r_hi) = left.latency_interval, right.latency_interval
    if r_lo <= l_hi and l_lo <= r_hi:
        low, high = min(r_lo - l_hi, 0.0), max(r_hi - l_lo, 0.0)
    else:
        low, high = r_lo - l_hi, r_hi - l_lo
    return (low / left.latency_s, high / left.latency_s)


def model_rows(left: ModelMetrics | None, right: ModelMetrics | None, left_weight_bytes: int | None = None) -> list[Row]:
    """Size, memory, load time, latency, throughput and validity of two models."""

    def get(m: ModelMetrics | None, attr: str) -> float | None:
        return getattr(m, attr, None) if m is not None else None

    memory_kind = (right or left).memory_kind if (right or left) is not None else "peak_rss"
    rows = [
        Row("weight_bytes", "Disk size (weights)", "bytes", get(left, "weight_bytes") or left_weight_bytes, get(right, "weight_bytes")),
        Row("resident_bytes", memory_label(memory_kind, resident=True), "bytes", get(left, "resident_bytes"), get(right, "resident_bytes")),
        Row("peak_memory_bytes", memory_label(memory_kind), "bytes", get(left, "peak_memory_bytes"), get(right, "peak_memory_bytes")),
        Row("load_s", "Load time", "seconds", get(left, "load_s"), get(right, "load_s")),
        Row("latency_s", "Latency (median per call)", "seconds", get(left, "latency_s"), get(right, "latency_s"),
            left_ci=get(left, "latency_interval"), right_ci=get(right, "latency_interval"), delta_ci=_latency_ci(left, right)),
        Row("tokens_per_s", "Throughput", "rate", get(left, "tokens_per_s"), get(right, "tokens_per_s")),
        Row("validity", "Output validity", "percent", get(left, "validity"), get(right, "validity")),
    ]
    return [row for row in rows if row.left is not None or row.right is not None]


def eval_rows(metrics: Metrics, left_side: str = "base", right_side: str = "quantized", *, headline_only: bool = False) -> list[Row]:
    """One row per eval metric, each metric once: a metric already shown by an earlier eval of the
    same name and kind is not repeated. Display from the eval kind (EvalResult.display)."""
    rows = []
    several = len(metrics.evals) > 1
    for ev in metrics.evals:
        for name in ev.metrics:  # validate's order: headline metric first
            info = ev.display.get(name) or MetricInfo(label=metric_label(name))
            if headline_only and not info.headline:
                continue
            sides = ev.metrics[name]
            ci = ev.intervals.get(name, {})
            label = info.label + (f" ({ev.name})" if several and ev.name != ev.kind else "")
            rows.append(Row(f"eval:{ev.name}:{name}", label, "metric", sides.get(left_side), sides.get(right_side), info.digits, info,
                            ci.get(left_side), ci.get(right_side), ci.get("delta") if left_side != right_side else None))
    return rows


def tldr_rows(metrics: Metrics, base_weight_bytes: int | None) -> list[Row]:
    model = model_rows(metrics.base, metrics.quantized, base_weight_bytes)
    # the seed cards' order: size, memory, accuracy, validity, speed
    head = [r for r in model if r.key in ("weight_bytes", "resident_bytes", "peak_memory_bytes")]
    tail = [r for r in model if r.key not in ("weight_bytes", "resident_bytes", "peak_memory_bytes")]
    return head + eval_rows(metrics, headline_only=True) + tail


def release_rows(previous: Metrics, current: Metrics) -> list[Row]:
    """This release's quantized model against the previous release's quantized model."""
    rows = model_rows(previous.quantized, current.quantized)
    prev_evals = {r.key: r for r in eval_rows(previous, "quantized", "quantized")}
    for row in eval_rows(current, "quantized", "quantized"):
        before = prev_evals.get(row.key)
        rows.append(Row(row.key, row.label, row.kind, before.right if before else None, row.right, row.digits, row.info))
    return rows
