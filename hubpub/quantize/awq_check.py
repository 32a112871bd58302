"""Before AWQ tunes anything: does each of its scale mappings leave the model's function unchanged?

AWQ divides a "smooth" layer's output channels (a norm, or a linear) by per-channel scales and
multiplies the input channels of the "balance" linears it feeds by the same scales: an exact
equivalence only when the smooth layer's output reaches those linears and nothing else does.
auto-round picks the mappings by module-name regexes (``post_attention_layernorm$`` ->
``gate_proj$``, ...), which on a model it does not know can pair layers that are not connected:
on a mixture-of-transformers model ``gate_proj$`` also matches the generation expert
``mlp_moe_gen.gate_proj``, fed by ``post_attention_layernorm_moe_gen``; ``v_proj -> o_proj`` is
wrong there too, since attention mixes both paths' values. AWQ would then change the model
silently. So each mapping of the first quantized block is tested the way the algebra says: the
block (a float32 copy) run on captured calibration inputs, once as is and once with random
scales applied through auto-round's own folding; outputs that move mean the mapping is wrong,
and quantizing stops with the mapping named and the recipe key that fixes it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import QuantizeError

TOLERANCE = 1e-3  # relative change of the block output; exact math in float32 gives ~1e-6


@dataclass
class MappingCheck:
    smooth: str
    balance: list[str]
    change: float  # relative change of the block output under a test scaling

    @property
    def holds(self) -> bool:
        return self.change <= TOLERANCE


def capture_block_inputs(model: Any, block_name: str, samples: list[Any], tokenizer: Any, seqlen: int,
                         limit: int = 2) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(args, kwargs) the block is called with, for up to ``limit`` samples (stops at the block)."""
    import torch

    block = model.get_submodule(block_name)
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class _Stop(Exception):
        pass

    def grab(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, dict(kwargs)))
        raise _Stop

    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            for sample in _spread(samples, limit):
                call = dict(sample) if isinstance(sample, dict) else dict(
                    tokenizer(sample, truncation=True, max_length=seqlen, return_tensors="pt"))
                try:
                    model(**{k: (v.to(model.device) if hasattr(v, "to") else v) for k, v in call.items()}, use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return captured


def _spread(samples: list[Any], limit: int) -> list[Any]:
    """The first text sample and the first hook call (different paths), then the rest in order."""
    firsts = [next((s for s in samples if isinstance(s, str)), None), next((s for s in samples if isinstance(s, dict)), None)]
    picked = [s for s in firsts if s is not None]
    return (picked + [s for s in samples if all(s is not p for p in picked)])[:limit]


def check_mappings(model: Any, block_name: str, inputs: list[tuple[tuple[Any, ...], dict[str, Any]]],
                   user_mappings: list[dict[str, Any]] | None, seed: int = 0) -> list[MappingCheck]:
    """Each resolved AWQ mapping of ``block_name``, tested for equivalence on ``inputs``."""
    import torch
    from auto_round.algorithms.transforms.awq.base import AWQTransform
    from auto_round.algorithms.transforms.awq.mappings import resolve_mappings

    prefix = block_name + "."
    mappings = [m for m in resolve_mappings(model, user_mappings) if m.smooth_name.startswith(prefix)]
    if not mappings or not inputs:
        return []
    block = copy.deepcopy(model.get_submodule(block_name)).float()
    gen = torch.Generator().manual_seed(seed)

    def run(b: Any) -> list[Any]:
        outs = []
        with torch.no_grad():
            for args, kwargs in inputs:
                out = b(*[_f32(a) for a in args], **{k: _f32(v) for k, v in kwargs.items()})
                outs.append(out[0] if isinstance(out, (tuple, list)) else out)
        return outs

    reference = run(block)
    results = []
    for m in mappings:
        trial = copy.deepcopy(block)
        smooth = trial.get_submodule(m.smooth_name[len(prefix):])
        channels = smooth.weight.shape[0]
        scales = 0.5 + 1.5 * torch.rand(channels, generator=gen)
        with torch.no_grad():
            for name in m.balance_names:
                trial.get_submodule(name[len(prefix):]).weight.mul_(scales.view(1, -1))
            AWQTransform._fold_scales_into_smooth_layer(smooth, scales)
        moved = run(trial)
        change = max(float((a - r).norm() / r.norm().clamp_min(1e-12)) for a, r in zip(moved, reference))
        results.append(MappingCheck(m.smooth_name, list(m.balance_names), change))
    return results


def _f32(v: Any) -> Any:
    import torch

    return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v


def refuse_broken(results: list[MappingCheck], *, explicit: bool) -> None:
    """QuantizeError naming the first mapping that does not hold, and what to write instead."""
    broken = [r for r in results if not r.holds]
    if not broken:
        return
    b = broken[0]
    block = _block_prefix(b.smooth).rstrip(".")
    local = lambda n: n.removeprefix(_block_prefix(b.smooth))  # noqa: E731
    holding = [r for r in results if r.holds and r.smooth.startswith(_block_prefix(b.smooth))]
    hint = ("; mappings that hold: " + ", ".join(f"{local(r.smooth)} -> {'/'.join(local(n) for n in r.balance)}" for r in holding)
            if holding else "")
    where = "quantize.awq_mappings" if explicit else "quantize.awq_mappings (auto-round's default mappings matched this model by name)"
    raise QuantizeError(
        f"{where}: AWQ mapping {local(b.smooth)} -> {', '.join(local(n) for n in b.balance)} in {block} is not an"
        f" equivalence on this model (the block output moves {b.change:.1%} under a test scaling): the smooth layer does"
        f" not feed exactly those linears; list the mappings that hold as [[quantize.awq_mappings]] tables"
        f" (smooth_layer = regex, balance_layers = [regexes]){hint} ({len(broken)} of {len(results)} mappings fail)"
    )


def _block_prefix(name: str) -> str:
    """'model.layers.0.mlp.up_proj' -> 'model.layers.0.' (the block the mapping belongs to)."""
    import re

    m = re.match(r"^(.*?\.\d+\.)", name)
    return m.group(1) if m else ""
