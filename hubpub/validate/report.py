"""Rich tables of a validate run: modes (mode, model, expected, got), numbers, evals, gates."""

from __future__ import annotations

from typing import Any

from ..artifacts import Metrics


def _gb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e9:.3f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _num(v: Any, fmt: str = "{:.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def print_report(metrics: Metrics, console: Any, only_failures: bool = False) -> None:
    from rich.table import Table

    modes = Table(title="Generation modes", show_lines=False)
    for col in ("mode", "model", "ok", "expected", "got"):
        modes.add_column(col, overflow="fold")
    for m in metrics.modes:
        if only_failures and m.ok:
            continue
        got = m.problem + ": " if m.problem else ""
        got += repr(m.output[:80])
        modes.add_row(m.mode, m.model, "[green]yes[/]" if m.ok else "[red]NO[/]", m.expected, got)
    if modes.rows:
        console.print(modes)

    if not only_failures:
        numbers = Table(title="Base vs quantized")
        for col in ("", "base", "quantized"):
            numbers.add_column(col)
        b, q = metrics.base, metrics.quantized
        rows = [
            ("weights on disk", _gb(b.weight_bytes if b else None), _gb(q.weight_bytes)),
            (f"peak memory ({q.memory_kind})", _gb(b.peak_memory_bytes if b else None), _gb(q.peak_memory_bytes)),
            ("load s", _num(b.load_s if b else None, "{:.2f}"), _num(q.load_s, "{:.2f}")),
            ("latency s/call", _num(b.latency_s if b else None, "{:.3f}"), _num(q.latency_s, "{:.3f}")),
            ("tokens/s", _num(b.tokens_per_s if b else None, "{:.1f}"), _num(q.tokens_per_s, "{:.1f}")),
            ("output validity", _num(b.validity if b else None, "{:.0%}"), _num(q.validity, "{:.0%}")),
        ]
        for row in rows:
            numbers.add_row(*row)
        console.print(numbers)
        if metrics.evals:
            evals = Table(title="Evals")
            for col in ("eval", "metric", "base", "quantized"):
                evals.add_column(col)
            for ev in metrics.evals:
                for name, values in ev.metrics.items():
                    evals.add_row(ev.name, name, _num(values.get("base")), _num(values.get("quantized")))
            console.print(evals)

    gates = [g for g in metrics.gates if not (only_failures and g.passed)]
    if gates:
        table = Table(title="Gates")
        for col in ("gate", "threshold", "value", "ok"):
            table.add_column(col)
        for g in gates:
            table.add_row(g.name, f"{g.threshold:g}", _num(g.value), "[green]yes[/]" if g.passed else "[red]NO[/]")
        console.print(table)
