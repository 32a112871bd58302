"""The tables of a validate run as plain data (title, columns, rows); hubpub/cli renders them.

Modes (mode, model, ok, expected, got), base vs quantized numbers, evals, gates. Numbers use
hubpub/units.py, the same convention as the card.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..artifacts import GateResult, Metrics
from ..units import human_bytes, human_duration, percent, signed_percent


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    failed_rows: list[int] = field(default_factory=list)  # indices of rows that show a failure


def _num(v: float | None, fmt: str = "{:.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def gate_value(g: GateResult, value: float | None) -> str:
    if value is None:
        return "-"
    if g.unit == "relative":
        return signed_percent(value)
    if g.unit == "%":
        return percent(value)
    return f"{value:.4g}"


def report_tables(metrics: Metrics, only_failures: bool = False) -> list[Table]:
    tables = []
    modes = Table("Generation modes", ["mode", "model", "ok", "expected", "got"])
    for m in metrics.modes:
        if only_failures and m.ok:
            continue
        got = (m.problem + ": " if m.problem else "") + repr(m.output[:80])
        modes.rows.append([m.mode, m.model, "yes" if m.ok else "NO", m.expected, got])
        if not m.ok:
            modes.failed_rows.append(len(modes.rows) - 1)
    if modes.rows:
        tables.append(modes)
    if not only_failures:
        numbers = Table("Base vs quantized", ["", "base", "quantized"])
        b, q = metrics.base, metrics.quantized
        numbers.rows = [
            ["weights on disk", human_bytes(b.weight_bytes if b else None), human_bytes(q.weight_bytes)],
            ["resident after load", human_bytes(b.resident_bytes if b else None), human_bytes(q.resident_bytes)],
            [f"peak while generating ({q.memory_kind})", human_bytes(b.peak_memory_bytes if b else None), human_bytes(q.peak_memory_bytes)],
            ["load", human_duration(b.load_s if b else None), human_duration(q.load_s)],
            ["latency per call (median)", human_duration(b.latency_s if b else None), human_duration(q.latency_s)],
            ["tokens/s", _num(b.tokens_per_s if b else None, "{:.1f}"), _num(q.tokens_per_s, "{:.1f}")],
            ["output validity", percent(b.validity if b else None, digits=0), percent(q.validity, digits=0)],
        ]
        tables.append(numbers)
        if metrics.evals:
            evals = Table("Evals", ["eval", "metric", "base", "quantized"])
            for ev in metrics.evals:
                for name, values in ev.metrics.items():
                    evals.rows.append([ev.name, name, _num(values.get("base")), _num(values.get("quantized"))])
            tables.append(evals)
    gates = [g for g in metrics.gates if not (only_failures and g.passed)]
    if gates:
        table = Table("Gates", ["gate", "threshold", "value", "ok", "note"])
        for g in gates:
            note = "cannot fail at this limit" if g.vacuous else g.note
            table.rows.append([g.name, gate_value(g, g.threshold), gate_value(g, g.value), "yes" if g.passed else "NO", note])
            if not g.passed:
                table.failed_rows.append(len(table.rows) - 1)
        tables.append(table)
    return tables


def print_report(metrics: Metrics, console: object, only_failures: bool = False) -> None:
    """Render :func:`report_tables` with rich on ``console`` (for hubpub/cli; the library never calls it)."""
    from rich.table import Table as RichTable

    for t in report_tables(metrics, only_failures):
        table = RichTable(title=t.title)
        for col in t.columns:
            table.add_column(col, overflow="fold")
        for i, row in enumerate(t.rows):
            style = "red" if i in t.failed_rows else None
            table.add_row(*row, style=style)
        console.print(table)  # type: ignore[attr-defined]
