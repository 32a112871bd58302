"""How much calibration data reached each quantized linear while the backend ran.

Forward hooks on the plan's quantized linears count the input rows (tokens) that are not all
zero. AutoRound's first calls into a block's linears are its pass over the whole calibration
set (``ceil(nsamples / batch_size)`` batches) before tuning; later calls re-run the same data,
so only those first calls are counted as tokens, every call as ``calls``. A linear that is never
called, or only with empty or all-zero input (e.g. a generation-path expert that text never
routes to), saw no calibration data: its quantization is plain RTN, which the caller reports.
"""

from __future__ import annotations

from typing import Any, Callable


class CoverageCounter:
    """``with CoverageCounter(model, names, first_calls) as cov: ...``; then ``cov.report(...)``."""

    def __init__(self, model: Any, names: list[str], first_calls: int) -> None:
        self.model = model
        self.names = list(names)
        self.first_calls = max(1, first_calls)
        self.calls: dict[str, int] = dict.fromkeys(self.names, 0)
        self.tokens: dict[str, int] = dict.fromkeys(self.names, 0)
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def count(module: Any, args: tuple[Any, ...], output: Any) -> None:
            self.calls[name] += 1
            if self.calls[name] > self.first_calls or not args or not hasattr(args[0], "reshape"):
                return
            x = args[0]
            if x.numel() == 0:
                return
            rows = x.detach().reshape(-1, x.shape[-1])
            self.tokens[name] += int((rows != 0).any(dim=-1).sum())

        return count

    def __enter__(self) -> "CoverageCounter":
        for name in self.names:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                continue
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def unreached(self) -> list[str]:
        return [n for n in self.names if self.tokens[n] == 0]

    def report(self, to_full: Callable[[str], str] = lambda n: n) -> dict[str, Any]:
        """{"groups": {pattern: {linears, reached, tokens (min / max over its linears), calls}}, "unreached": [...]}."""
        from ..quantize.targets import group_pattern

        groups: dict[str, dict[str, Any]] = {}
        for name in self.names:
            g = groups.setdefault(group_pattern(to_full(name)), {"linears": 0, "reached": 0, "tokens_min": None, "tokens_max": 0, "calls": 0})
            g["linears"] += 1
            g["reached"] += self.tokens[name] > 0
            g["tokens_min"] = self.tokens[name] if g["tokens_min"] is None else min(g["tokens_min"], self.tokens[name])
            g["tokens_max"] = max(g["tokens_max"], self.tokens[name])
            g["calls"] += self.calls[name]
        return {"groups": dict(sorted(groups.items())), "unreached": [to_full(n) for n in self.unreached()]}


def unreached_notice(unreached: list[str]) -> str:
    shown = ", ".join(unreached[:3]) + (f", ... ({len(unreached)} in all)" if len(unreached) > 3 else "")
    return (f"{len(unreached)} quantized linear(s) saw no calibration data (quantized as plain RTN): {shown};"
            " feed their path with calibration data or keep them BF16 (keep_bf16)")
