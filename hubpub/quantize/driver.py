"""Run AutoRound (tuned) or plain RTN on a standalone causal-LM folder and export it.

The only module that imports auto_round. AutoRound's own tqdm bar over blocks is swapped for a
rich bar (or nothing) while it runs, and its INFO logging is quieted unless HUBPUB_DEBUG is set.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..errors import QuantizeError

if TYPE_CHECKING:
    from ..recipe import Recipe


@dataclass
class DriverResult:
    timings: dict[str, float]
    device: str
    nsamples_used: int
    kept_linears: list[str]  # decoder names of block linears kept in BF16 (keep_bf16)


def pick_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise QuantizeError("quantize.device: 'cuda' asked for but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return wanted


def check_format_available(fmt: str) -> None:
    import importlib.util

    if fmt == "llm_compressor" and importlib.util.find_spec("compressed_tensors") is None:
        raise QuantizeError("quantize.format: 'llm_compressor' needs the compressed-tensors package; pip install compressed-tensors, or use format 'auto_round'")


def block_linears(model: Any, block_prefix: str = "model.layers.") -> dict[str, int]:
    """Linear layers inside the decoder blocks (what AutoRound quantizes) -> in_features."""
    import torch

    return {n: m.in_features for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(block_prefix)}


def matches(patterns: list[str], *names: str) -> bool:
    return any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(n + ".weight", p) for p in patterns for n in names)


def check_group_size(linears: dict[str, int], group_size: int) -> None:
    if group_size <= 0:
        return
    bad = {n: k for n, k in linears.items() if k % group_size}
    if bad:
        fits = [g for g in (128, 64, 32, 16) if g < group_size and all(k % g == 0 for k in linears.values())]
        shown = ", ".join(f"{n}: {k}" for n, k in list(bad.items())[:3]) + (", ..." if len(bad) > 3 else "")
        hint = f"use {' or '.join(str(g) for g in fits[:2])}" if fits else "use group_size = -1 (per channel)"
        raise QuantizeError(f"quantize.group_size: {group_size} does not divide the input size of {len(bad)} linear layers ({shown}); {hint}")


def run(recipe: "Recipe", model_dir: Path, out_dir: Path, *, to_full: Callable[[str], str], progress: bool,
        trust_remote_code: bool = False) -> DriverResult:
    """Quantize the causal LM in model_dir with the recipe's settings; export into out_dir."""
    q = recipe.quantize
    check_format_available(q.format)
    device = pick_device(q.device)
    with _quiet_autoround():
        return _run(recipe, model_dir, out_dir, to_full=to_full, progress=progress, trust_remote_code=trust_remote_code, device=device)


def _run(recipe: "Recipe", model_dir: Path, out_dir: Path, *, to_full: Callable[[str], str], progress: bool,
         trust_remote_code: bool, device: str) -> DriverResult:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..calibration import build_calibration

    q = recipe.quantize
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, trust_remote_code=trust_remote_code)
    model.eval()
    timings["load"] = time.perf_counter() - t0

    linears = block_linears(model)
    kept = [n for n in linears if matches(q.keep_bf16, n, to_full(n))]
    check_group_size({n: k for n, k in linears.items() if n not in kept}, q.group_size)
    calibration = None
    if q.method == "autoround":
        t = time.perf_counter()
        calibration = build_calibration(recipe, tokenizer)
        timings["calibration"] = time.perf_counter() - t

    t = time.perf_counter()
    with _block_progress(progress):
        from auto_round import AutoRound, RTNConfig, SignRoundConfig

        scheme = dict(bits=q.bits, group_size=q.group_size, sym=q.sym)
        alg = SignRoundConfig(iters=q.iters, **scheme) if q.method == "autoround" else RTNConfig(disable_opt_rtn=True, **scheme)
        kwargs: dict[str, Any] = {}
        if calibration is not None:
            kwargs.update(dataset=calibration.texts, nsamples=len(calibration.texts), seqlen=q.seqlen,
                          batch_size=min(q.batch_size, len(calibration.texts)))
        rounder = AutoRound(
            model, tokenizer, alg_configs=alg, device_map=device, enable_torch_compile=False, seed=q.seed,
            low_gpu_mem_usage=q.low_gpu_mem_usage, layer_config={n: {"bits": 16} for n in kept} or None, **kwargs,
        )
        rounder.quantize()
        timings["quantize"] = time.perf_counter() - t
        t = time.perf_counter()
        rounder.save_quantized(str(out_dir), format=q.format)
        timings["export"] = time.perf_counter() - t
    del rounder, model
    return DriverResult(timings, device, len(calibration.texts) if calibration else 0, kept)


@contextlib.contextmanager
def _quiet_autoround() -> Iterator[None]:
    if os.environ.get("HUBPUB_DEBUG"):
        yield
        return
    import warnings

    import auto_round.logger  # noqa: F401  (its import sets the level we override)
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights" bars
    loggers = [logging.getLogger(n) for n in ("autoround", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars_were_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _block_progress(show: bool) -> Iterator[None]:
    """Replace AutoRound's per-block tqdm bar with a rich one (or a silent one)."""
    import auto_round.compressors.orchestrator as orchestrator

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=False, disable=not show)

    class RichBar:
        def __init__(self, iterable: Any = None, total: int | None = None, **_: Any) -> None:
            self.iterable = iterable
            self.total = total if total is not None else (len(iterable) if iterable is not None else None)
            self.task = bars.add_task("Quantizing blocks", total=self.total)

        def __iter__(self) -> Iterator[Any]:
            for item in self.iterable or ():
                yield item
                self.update(1)

        def update(self, n: int = 1) -> None:
            bars.advance(self.task, n)

        def set_description(self, desc: str = "", refresh: bool = True) -> None:
            if desc == "Quantizing done":  # AutoRound's last block never gets its update(1)
                bars.update(self.task, completed=self.total, description=desc)
            else:
                bars.update(self.task, description=desc)

        def set_postfix(self, *_: Any, **__: Any) -> None:
            pass

        def refresh(self) -> None:
            pass

        def close(self) -> None:
            bars.update(self.task, completed=self.total)

    original = orchestrator.tqdm
    orchestrator.tqdm = RichBar
    try:
        with bars:
            yield
    finally:
        orchestrator.tqdm = original
