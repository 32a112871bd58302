"""The plan: which Linear layers are quantized, which stay BF16, and why, decided before tuning.

Defaults reproduce what AutoRound does by itself: every ``nn.Linear`` inside the decoder blocks
it detects (the ``ModuleList``s of the model) is quantized, everything else stays BF16.
``[quantize] targets`` narrows or widens that with glob patterns over module names,
``blocks`` names the block lists explicitly (AutoRound's ``to_quant_block_names``), and
``keep_bf16`` keeps any module BF16. A pattern that matches nothing is an error naming its field.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import QuantizeError


def matches(patterns: list[str], *names: str) -> bool:
    """Glob match of any name (or name + '.weight') against any pattern."""
    return any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(n + ".weight", p) for p in patterns for n in names)


def group_pattern(name: str) -> str:
    """model.layers.3.mlp.up_proj -> model.layers.*.mlp.up_proj (one manifest / plan line per pattern)."""
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


@dataclass
class Plan:
    """Which linears are quantized (decoder names), grouped by name pattern."""

    blocks: list[str]  # block list names, e.g. ["model.layers"]
    quantized: list[str]
    kept: list[str]  # linears inside the blocks that stay BF16 (keep_bf16 / not a target)
    in_features: dict[str, int] = field(default_factory=dict)

    def layer_config(self) -> dict[str, dict[str, int]]:
        """AutoRound's per-layer overrides: the kept block linears at 16 bits."""
        return {n: {"bits": 16} for n in self.kept}

    def groups(self, to_full: Callable[[str], str] = lambda n: n) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for action, names in (("quantized", self.quantized), ("kept", self.kept)):
            for n in names:
                entry = out.setdefault(group_pattern(to_full(n)), {"quantized": 0, "kept": 0})
                entry[action] += 1
        return dict(sorted(out.items()))

    def summary(self, to_full: Callable[[str], str] = lambda n: n) -> str:
        parts = []
        for pattern, counts in self.groups(to_full).items():
            bits = [f"{counts['quantized']} quantized"] if counts["quantized"] else []
            bits += [f"{counts['kept']} BF16"] if counts["kept"] else []
            parts.append(f"  {pattern}: {', '.join(bits)}")
        return "\n".join([f"plan: {len(self.quantized)} linears quantized, {len(self.kept)} kept BF16 in {', '.join(self.blocks)}:",
                          *parts])

    def as_dict(self, to_full: Callable[[str], str] = lambda n: n) -> dict[str, Any]:
        return {"blocks": [to_full(b) if b.startswith("model.") else b for b in self.blocks],
                "groups": self.groups(to_full), "quantized": len(self.quantized), "kept": [to_full(n) for n in self.kept]}


def detect_blocks(model: Any) -> list[str]:
    """The block lists AutoRound would quantize: ModuleLists of the model, e.g. ['model.layers']."""
    from auto_round.utils import get_block_names

    found = []
    for group in get_block_names(model):
        if group:
            found.append(group[0].rsplit(".", 1)[0])
    return found


def plan_targets(model: Any, *, targets: list[str], blocks: list[str], keep_bf16: list[str],
                 to_full: Callable[[str], str] = lambda n: n, field_prefix: str = "quantize",
                 other_names: frozenset[str] = frozenset()) -> Plan:
    """Decide what is quantized. Raises QuantizeError naming the field whose pattern matches nothing.

    ``other_names``: module names of the full checkpoint outside this model (split: the vision
    tower), which keep_bf16 patterns may name too.
    """
    import torch

    linears = {n: m.in_features for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    modules = {n for n, _ in model.named_modules()}
    if blocks:
        for b in blocks:
            if b not in modules:
                near = sorted(n for n, m in model.named_modules() if type(m).__name__ == "ModuleList")
                raise QuantizeError(f"{field_prefix}.blocks: {b!r} is not a module of the model; module lists found: {', '.join(near) or 'none'}")
        block_lists = list(blocks)
    else:
        block_lists = detect_blocks(model)
    inside = {n for n in linears if any(n.startswith(b + ".") for b in block_lists)}
    for fld, patterns in (("targets", targets), ("keep_bf16", keep_bf16)):
        for p in patterns:
            if not any(matches([p], n, to_full(n)) for n in modules) and not (fld == "keep_bf16" and matches([p], *other_names)):
                raise QuantizeError(f"{field_prefix}.{fld}: pattern {p!r} matches no module of the model; module names look like {_examples(linears)}")
    if targets:
        wanted = {n for n in linears if matches(targets, n, to_full(n))}
        outside = sorted(wanted - inside)
        if outside:
            raise QuantizeError(
                f"{field_prefix}.targets: {len(outside)} matched linear(s) lie outside the quantized blocks"
                f" {', '.join(block_lists) or '(none detected)'} (e.g. {outside[0]}); add their module list to quantize.blocks"
            )
    else:
        wanted = set(inside)
    kept_by_pattern = {n for n in linears if n in wanted and keep_bf16 and _kept(keep_bf16, n, to_full)}
    quantized = [n for n in linears if n in wanted and n not in kept_by_pattern]
    kept = [n for n in linears if n in inside and n not in quantized]
    if not quantized:
        raise QuantizeError(f"{field_prefix}.targets: nothing left to quantize (every linear is kept or outside the blocks); loosen keep_bf16 or targets")
    return Plan(blocks=block_lists, quantized=quantized, kept=kept, in_features={n: linears[n] for n in quantized})


def _kept(patterns: list[str], name: str, to_full: Callable[[str], str]) -> bool:
    """keep_bf16 applies to a linear or any module above it."""
    parts = name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(matches(patterns, p, to_full(p)) for p in prefixes)


def _examples(linears: dict[str, int]) -> str:
    names = list(linears)
    return ", ".join(names[:2] + ([names[-1]] if len(names) > 2 else [])) or "(no linears)"


def check_group_size(linears: dict[str, int], group_size: int) -> None:
    if group_size <= 0:
        return
    bad = {n: k for n, k in linears.items() if k % group_size}
    if bad:
        fits = [g for g in (128, 64, 32, 16) if g < group_size and all(k % g == 0 for k in linears.values())]
        shown = ", ".join(f"{n}: {k}" for n, k in list(bad.items())[:3]) + (", ..." if len(bad) > 3 else "")
        hint = f"use {' or '.join(str(g) for g in fits[:2])}" if fits else "use group_size = -1 (per channel)"
        raise QuantizeError(f"quantize.group_size: {group_size} does not divide the input size of {len(bad)} linear layers ({shown}); {hint}")
