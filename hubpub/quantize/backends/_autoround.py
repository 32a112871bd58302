"""The auto-round engine behind the built-in backends (rtn, autoround, awq, awq+autoround).

The only module that imports auto_round. A backend here is a list of auto-round algorithms:
an optional pre-processor (``awq``) and one block quantizer (``rtn`` = plain round-to-nearest,
``sign_round`` = AutoRound's sign-gradient tuning). Everything AutoRound prints or logs
(including its tqdm bars) is routed into events; its "Quantizing <block>" bar descriptions
become StepProgress events of the "quantize blocks" step.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator

from pydantic import BaseModel

from ...calibration.coverage import UnreachedLinears
from ...errors import QuantizeError
from ...events import LIBRARY_LOGGERS, EventSink, Notice, StepProgress, ThirdPartyOutput, capture_output, emit, step
from . import BackendJob, BackendResult, dist_version

STAGE = "quantize"
# AutoRound's block bar, e.g. "Quantizing model.layers.1:  50%|#####     | 1/2 [00:00<00:00,  1.21it/s]"
_BLOCK = re.compile(r"^Quantizing (\S+?):.*?\|\s*(\d+)/(\d+) \[")


def pick_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise QuantizeError("quantize.device: 'cuda' asked for but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return wanted


@dataclass
class AutoRoundBackend:
    """A backend that runs auto-round's algorithms ``algorithms`` (pre-processors first)."""

    name: str
    display_name: str
    algorithms: tuple[str, ...]  # e.g. ("awq", "sign_round")
    reference_url: str = "https://github.com/intel/auto-round"
    settings_model: type[BaseModel] | None = None
    formats: tuple[str, ...] | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")
    summary: str = ""
    # GGUF k-quants: AutoRound is given the format's scheme (scheme="GGUF:Q4_K_M") instead of bits / group_size
    honours_autoround_scheme: bool = True

    @property
    def rescales(self) -> bool:
        """AWQ folds its scales into the norms before the linears: those tensors change."""
        return "awq" in self.algorithms

    @property
    def needs_calibration(self) -> bool:
        return self.algorithms != ("rtn",)

    @property
    def tuned(self) -> bool:
        return "sign_round" in self.algorithms

    def versions(self) -> dict[str, str]:
        return {"auto_round": dist_version("auto-round")}

    def alg_configs(self, job: BackendJob) -> list[Any]:
        from auto_round import AWQConfig, RTNConfig, SignRoundConfig

        q = job.recipe.quantize
        # a GGUF k-quant's scheme is AutoRound's own (super-blocks, per-tensor types): given whole, not as bits
        scheme = {} if _format_scheme(job) else dict(bits=q.bits, group_size=q.group_size, sym=q.sym)
        s = job.settings.model_dump() if job.settings is not None else {}
        configs: list[Any] = []
        if "awq" in self.algorithms:
            configs.append(AWQConfig(duo_scaling=s.get("duo_scaling", True), n_grid=s.get("n_grid", 20),
                                     apply_clip=s.get("apply_clip", False), awq_seqlen=s.get("awq_seqlen"),
                                     mappings=s.get("awq_mappings"), **scheme))
        if self.tuned:
            extra = {k: s[k] for k in ("lr", "minmax_lr", "enable_minmax_tuning") if s.get(k) is not None}
            configs.append(SignRoundConfig(iters=q.iters, **extra, **scheme))
        else:
            configs.append(RTNConfig(disable_opt_rtn=True, **scheme))
        return configs

    def quantize(self, job: BackendJob) -> BackendResult:
        with capture_output(_BlockEvents(job.events), STAGE, loggers=LIBRARY_LOGGERS + ("autoround",)):
            return self._quantize(job)

    def _quantize(self, job: BackendJob) -> BackendResult:
        import torch

        from ...calibration import build_calibration
        from ...loading import causal_lm_class
        from ..targets import check_group_size, plan_targets

        q = job.recipe.quantize
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(job.model_dir, trust_remote_code=job.trust_remote_code)
        calibration = None
        if self.needs_calibration:  # before the weights load: a bad source fails fast
            t = time.perf_counter()
            calibration = build_calibration(job.recipe, tokenizer)
            timings["calibration"] = time.perf_counter() - t
        cls = causal_lm_class(job.model_dir, job.trust_remote_code)
        model = cls.from_pretrained(job.model_dir, dtype=torch.bfloat16, trust_remote_code=job.trust_remote_code)
        model.eval()
        timings["load"] = time.perf_counter() - t0 - timings.get("calibration", 0.0)

        plan = job.plan or plan_targets(model, targets=q.targets, blocks=q.blocks, keep_bf16=q.keep_bf16, to_full=job.to_full,
                                        other_names=frozenset(getattr(job, "other_names", ()) or ()))
        check_group_size(plan.in_features, q.group_size)
        emit(job.events, Notice(STAGE, plan.summary(job.to_full)))

        from auto_round import AutoRound

        kwargs: dict[str, Any] = {}
        samples: list[Any] = []
        sources = list(calibration.sources) if calibration else []
        if calibration is not None:
            samples = list(calibration.texts)
            if q.calibration_hook:  # forward calls for the paths text does not reach (calibration/hook.py)
                from ...calibration.hook import hook_calls

                t = time.perf_counter()
                calls = hook_calls(job.recipe, model, tokenizer)
                timings["calibration_hook"] = time.perf_counter() - t
                samples += calls
                sources.append({"kind": "hook", "name": q.calibration_hook, "samples": len(calls),
                                "requested": q.calibration_hook_samples or q.nsamples})
            kwargs.update(dataset=samples, nsamples=len(samples), seqlen=q.seqlen, batch_size=min(q.batch_size, len(samples)))
        quantized_blocks = [b for b in plan.blocks if any(n.startswith(b + ".") for n in plan.quantized)]
        if q.blocks or quantized_blocks != plan.blocks:
            # only the block lists holding a quantized linear: AutoRound would otherwise tune (and
            # need calibration inputs for) a list whose linears all stay BF16, e.g. a kept ViT
            kwargs["to_quant_block_names"] = ",".join(quantized_blocks)
        if "awq" in self.algorithms and samples:
            self._check_awq_mappings(model, quantized_blocks[0] + ".0", samples, tokenizer, job)
        t = time.perf_counter()
        with step(job.events, STAGE, "quantize blocks", unit="block"), _plain_llm(model, q.split is None):
            if _format_scheme(job):
                kwargs["scheme"] = _format_scheme(job)
            rounder = AutoRound(
                model, tokenizer, alg_configs=self.alg_configs(job), device_map=job.device, enable_torch_compile=False,
                seed=q.seed, low_gpu_mem_usage=q.low_gpu_mem_usage, layer_config=plan.layer_config() or None, **kwargs,
            )
            counter = self._coverage_counter(model, plan, samples, kwargs, q.iters, job)
            with counter or contextlib.nullcontext():
                try:
                    rounder.quantize()
                except UnreachedLinears as exc:  # --strict: raised by the counter before that block is tuned
                    raise QuantizeError(exc.message(job.to_full)) from None
        timings["quantize"] = time.perf_counter() - t
        coverage = counter.report(job.to_full) if counter else {}
        if counter and counter.unreached():
            from ...calibration.coverage import unreached_notice

            emit(job.events, Notice(STAGE, unreached_notice(coverage["unreached"]), level="warning"))
        t = time.perf_counter()
        with step(job.events, STAGE, "export"):
            job.export.write(rounder, str(job.out_dir), bits=q.bits, sym=q.sym)
        timings["export"] = time.perf_counter() - t
        del rounder, model
        return BackendResult(timings, job.device, len(calibration.texts) if calibration else 0, plan.kept,
                             iters=q.iters if self.tuned else 0, algorithms=list(self.algorithms), plan=plan,
                             calibration_sources=sources, coverage=coverage)

    def _check_awq_mappings(self, model: Any, block: str, samples: list[Any], tokenizer: Any, job: BackendJob) -> None:
        """Every AWQ mapping of the first block must be an equivalence (awq_check.py), before tuning."""
        from ..awq_check import capture_block_inputs, check_mappings, refuse_broken

        user = job.settings.model_dump().get("awq_mappings") if job.settings is not None else None
        with step(job.events, STAGE, "check AWQ mappings"):
            inputs = capture_block_inputs(model, block, samples, tokenizer, job.recipe.quantize.seqlen)
            results = check_mappings(model, block, inputs, user, seed=job.recipe.quantize.seed)
        refuse_broken(results, explicit=user is not None)
        if results:
            emit(job.events, Notice(STAGE, f"AWQ: {len(results)} mapping(s) per block, each checked to leave {block}'s output"
                                    f" unchanged (worst {max(r.change for r in results):.1e})"))

    def _coverage_counter(self, model: Any, plan: Any, samples: list[Any], kwargs: dict[str, Any], iters: int,
                          job: BackendJob) -> Any:
        """Hooks counting the calibration tokens each quantized linear sees (None where no data is used:
        plain RTN, and AutoRound with iters = 0). With ``strict`` it stops the run at the first block
        whose first pass over the calibration set left a quantized linear without data."""
        if not samples or not ("awq" in self.algorithms or (self.tuned and iters > 0)):
            return None
        from ...calibration.coverage import CoverageCounter

        batches = -(-len(samples) // max(1, kwargs.get("batch_size", 1)))
        return CoverageCounter(model, plan.quantized, batches, blocks=plan.blocks, strict=job.strict)


def _format_scheme(job: BackendJob) -> str | None:
    """The AutoRound scheme the export format needs (GGUF k-quants), else None."""
    return job.export.autoround_scheme if getattr(job.export, "needs_autoround_scheme", False) else None


class _BlockEvents:
    """An event sink that also turns AutoRound's block bar ("Quantizing model.layers.1: ... 1/2")
    into StepProgress events of the "quantize blocks" step."""

    def __init__(self, events: EventSink | None):
        self.events = events
        self.done = -1

    def __call__(self, event: Any) -> None:
        emit(self.events, event)
        if isinstance(event, ThirdPartyOutput):
            m = _BLOCK.search(event.text)
            if m and int(m.group(2)) > self.done:
                self.done = int(m.group(2))
                if self.done:
                    emit(self.events, StepProgress(STAGE, "quantize blocks", self.done, int(m.group(3)), item=m.group(1)))


@contextlib.contextmanager
def _plain_llm(model: Any, plain: bool) -> Iterator[None]:
    """Keep AutoRound off its multimodal path for a model quantized whole as a language model.

    AutoRound calls a model multimodal when a config key or module name contains "image",
    "vision", ... and then wants a processor; a whole-model run calibrates with text only.
    """
    if not plain:
        yield
        return
    from auto_round.utils import model as ar_model

    key = ar_model.get_model_name_or_path(model)
    cache = ar_model._is_mllm_model_cache
    had, old = key in cache, cache.get(key)
    if key:
        cache[key] = False
    try:
        yield
    finally:
        if key:
            if had:
                cache[key] = old
            else:
                cache.pop(key, None)
