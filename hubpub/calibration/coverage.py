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


class UnreachedLinears(Exception):
    """Raised (strict mode) from a block's forward hook once its first pass left linears without data."""

    def __init__(self, block: str, names: list[str]) -> None:
        super().__init__(block, names)
        self.block, self.names = block, names

    def message(self, to_full: Callable[[str], str] = lambda n: n) -> str:
        return ("quantize: " + unreached_notice([to_full(n) for n in self.names]).replace(" (quantized as plain RTN)", "")
                + f"; stopped before tuning {to_full(self.block)} (--strict)")


class CoverageCounter:
    """``with CoverageCounter(model, names, first_calls) as cov: ...``; then ``cov.report(...)``.

    ``blocks`` (module lists, e.g. ["model.layers"]): tokens are counted during each block's first
    ``first_calls`` calls (AutoRound's pass over the calibration set before it tunes that block).
    ``strict``: after that pass, a quantized linear of the block that saw no data raises
    :class:`UnreachedLinears`.
    """

    def __init__(self, model: Any, names: list[str], first_calls: int, blocks: list[str] | None = None,
                 strict: bool = False) -> None:
        self.model = model
        self.names = list(names)
        self.first_calls = max(1, first_calls)
        self.calls: dict[str, int] = dict.fromkeys(self.names, 0)
        self.tokens: dict[str, int] = dict.fromkeys(self.names, 0)
        self.blocks = blocks
        self.strict = strict
        self._block_calls: dict[str, int] = {}
        self._block_of: dict[str, str] = {}
        self._handles: list[Any] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def count(module: Any, args: tuple[Any, ...], output: Any) -> None:
            self.calls[name] += 1
            block = self._block_of.get(name)
            # tokens count in the first pass only: its block's first calls when blocks are known (a routed
            # linear may sit out a batch), else its own first calls
            first_pass = self._block_calls.get(block, 0) < self.first_calls if block else self.calls[name] <= self.first_calls
            if not first_pass or not args or not hasattr(args[0], "reshape"):
                return
            x = args[0]
            if x.numel() == 0:
                return
            rows = x.detach().reshape(-1, x.shape[-1])
            self.tokens[name] += int((rows != 0).any(dim=-1).sum())

        return count

    def _block_hook(self, block: str) -> Callable[..., None]:
        inside = [n for n in self.names if n.startswith(block + ".")]

        def check(module: Any, args: tuple[Any, ...], output: Any) -> None:
            self._block_calls[block] = self._block_calls.get(block, 0) + 1
            if self._block_calls[block] == self.first_calls and self.strict:
                empty = [n for n in inside if self.tokens[n] == 0]
                if empty:
                    raise UnreachedLinears(block, empty)

        return check

    def __enter__(self) -> "CoverageCounter":
        for name in self.names:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                continue
            self._handles.append(module.register_forward_hook(self._hook(name)))
        for block_list in self.blocks or []:
            for i, block in enumerate(self.model.get_submodule(block_list)):
                name = f"{block_list}.{i}"
                inside = [n for n in self.names if n.startswith(name + ".")]
                if inside:
                    self._block_of.update(dict.fromkeys(inside, name))
                    self._handles.append(block.register_forward_hook(self._block_hook(name)))
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
            " feed their path with calibration data (quantize.calibration_hook) or keep them BF16 (keep_bf16)")
