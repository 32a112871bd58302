"""One model, one fresh process: ``python -m hubpub.validate.worker JOB.json``.

The parent (runner.py) writes a :class:`~hubpub.validate.protocol.WorkerJob`; this process loads
the model with the shared checkpoint loader (any missing/unexpected key is reported), runs every
mode (timed) and every eval kind's ``run``, and writes a :class:`~hubpub.validate.protocol.WorkerResult`.
A fresh process per model keeps memory figures honest and isolates custom code.

Memory is the model's own: resident after load, and the peak while the modes generate, both
above the baseline taken before loading; eval work (KL log-probs, benchmarks) runs after and is
not counted. This module is not imported by the package (so ``-m`` runs it cleanly).
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ..loading import load_checkpoint  # light: transformers is imported inside
from .protocol import (BUILTIN_SCENE, PROGRESS, Environment, EvalOutput, LoadedModel, LoadingProblems, Memory, ModeJob,
                       ModeRun, Progress, WorkerJob, WorkerResult)


def rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: ru_maxrss is all there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class MemorySampler:
    """Peak resident memory of this process while active, sampled every few milliseconds."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.003):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def progress(step: str, done: int, total: int, item: str = "") -> None:
    print(PROGRESS + Progress(step=step, done=done, total=total, item=item).model_dump_json(), flush=True)


def environment(device: str) -> Environment:
    import torch

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return Environment(device=device, python=platform.python_version(), torch=torch.__version__,
                       transformers=version("transformers"), auto_round=version("auto-round"), cpu=_cpu_name(),
                       threads=torch.get_num_threads(), gpu=torch.cuda.get_device_name(0) if device == "cuda" else None)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def quant_backend(model: Any) -> str | None:
    """The class running the quantized linears (what packs/unpacks the weights), e.g. auto_round's QuantLinear."""
    for module in model.modules():
        if hasattr(module, "qweight") or hasattr(module, "weight_packed"):
            cls = type(module)
            return f"{cls.__module__}.{cls.__qualname__}"
    return None


def _import_model_code(job: WorkerJob) -> None:
    """Import the model's modeling module before the memory baseline (library code, the same for
    both models), so the resident figure is the weights and buffers, not Python modules."""
    if job.trust_remote_code:
        return
    try:
        import transformers
        from transformers.models.auto import modeling_auto

        config = transformers.AutoConfig.from_pretrained(job.model_dir)
        mapping = modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING if job.task == "image-text-to-text" else modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING
        mapping[type(config)]
    except Exception:  # best effort: loading reports real problems
        pass


def _import_quant_kernels() -> None:
    """Import the packages that run quantized layers before the memory baseline: their code is
    library memory, not the model's footprint (the base worker imports them too)."""
    import importlib

    for name in ("auto_round", "auto_round_kernel", "auto_round.inference", "compressed_tensors", "gptqmodel"):
        try:
            importlib.import_module(name)
        except Exception:  # optional packages: absent is fine
            pass


# ----------------------------------------------------------------------------- loading
def load(job: WorkerJob):  # type: ignore[no-untyped-def]
    """(model, tokenizer, processor, loading_problems); processor is None for text models."""
    import torch
    import transformers

    model_dir = Path(job.model_dir)
    remote = job.trust_remote_code  # only ever true when the recipe opts in
    # the base in its recipe dtype; the quantized model's quantization config decides its compute dtype
    dtype = getattr(torch, job.dtype) if job.role == "base" else "auto"
    model, problems = load_checkpoint(model_dir, task=job.task, trust_remote_code=remote, dtype=dtype, device=job.device)
    processor = None
    if job.task == "image-text-to-text":
        processor = transformers.AutoProcessor.from_pretrained(model_dir, trust_remote_code=remote)
        tokenizer = processor.tokenizer
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    tokenizer.padding_side = "left"  # batched generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, processor, LoadingProblems(**problems)


# ----------------------------------------------------------------------------- one mode
def open_images(paths: list[str], scene_path: str | None):  # type: ignore[no-untyped-def]
    from PIL import Image

    return [Image.open(scene_path if p == BUILTIN_SCENE else p).convert("RGB") for p in paths]


def build_inputs(mode: ModeJob, model, tokenizer, processor, images):  # type: ignore[no-untyped-def]
    prompt = mode.prompt
    if processor is not None:
        messages = [m.model_dump() for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        pending = [{"type": "image"} for _ in images]  # images go with the first user message
        chat = []
        for m in messages:
            content = [{"type": "text", "text": m["content"]}]
            if m["role"] == "user" and pending:
                content, pending = pending + content, []
            chat.append({"role": m["role"], "content": content})
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        batch = processor(text=[text], images=images or None, return_tensors="pt")
    elif mode.prompts:
        batch = tokenizer(mode.prompts, return_tensors="pt", padding=True)
    elif isinstance(prompt, list):
        batch = tokenizer.apply_chat_template([m.model_dump() for m in prompt], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)
    else:
        batch = tokenizer([prompt], return_tensors="pt")
    return batch.to(model.device)


def run_once(mode: ModeJob, model, tokenizer, processor, images) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """One call of a mode: (decoded outputs, new tokens generated)."""
    import torch

    generate = mode.generate.kwargs()
    seed = generate.pop("seed", None)
    if seed is not None:
        torch.manual_seed(int(seed))
    if mode.custom_generate:
        method = getattr(model, mode.custom_generate, None)
        if method is None:
            raise ValueError(f"the model has no method {mode.custom_generate!r}")
        out = method(tokenizer=tokenizer, images=images, prompt=mode.text(), task=mode.task, **generate)
        outputs = out if isinstance(out, list) else [out]
        return [str(o) for o in outputs], sum(len(tokenizer(o)["input_ids"]) for o in outputs)
    batch = build_inputs(mode, model, tokenizer, processor, images)
    prompt_len = batch["input_ids"].shape[1]
    generate.setdefault("do_sample", False)
    generate.setdefault("pad_token_id", tokenizer.pad_token_id)
    with torch.inference_mode():
        if mode.stream:
            from transformers import TextIteratorStreamer

            streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            box: dict[str, Any] = {}

            def target() -> None:
                try:
                    box["ids"] = model.generate(**batch, **generate, streamer=streamer)
                except BaseException as exc:  # re-raised in this thread below
                    box["error"] = exc
                    streamer.end()

            thread = threading.Thread(target=target)
            thread.start()
            text = "".join(chunk for chunk in streamer)
            thread.join()
            if "error" in box:
                raise box["error"]
            return [text], int(box["ids"].shape[1] - prompt_len)
        ids = model.generate(**batch, **generate)
    new_ids = ids[:, prompt_len:]
    decode = processor.batch_decode if processor is not None else tokenizer.batch_decode
    outputs = decode(new_ids, skip_special_tokens=True)
    pad = tokenizer.pad_token_id
    new_tokens = int((new_ids != pad).sum()) if pad is not None else int(new_ids.numel())
    return outputs, new_tokens


def run_mode(mode: ModeJob, model, tokenizer, processor, job: WorkerJob, timed: bool) -> ModeRun:  # type: ignore[no-untyped-def]
    """Warm-up runs, then timed runs; every latency and the last run's outputs."""
    import torch

    images = open_images(mode.images, job.scene_image)
    runs = (job.warmup_runs + job.latency_runs) if timed else 1
    result = ModeRun()
    for i in range(runs):
        if job.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs, new_tokens = run_once(mode, model, tokenizer, processor, images)
        if job.device == "cuda":
            torch.cuda.synchronize()
        if timed and i >= job.warmup_runs:
            result.latencies_s.append(time.perf_counter() - start)
            result.new_tokens += new_tokens
        result.outputs = outputs
    return result


# ----------------------------------------------------------------------------- main
def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def main(job_path: str) -> int:
    job = WorkerJob.model_validate_json(Path(job_path).read_text())
    result = WorkerResult(role=job.role)

    def finish() -> int:
        tmp = Path(job.result_path + ".tmp")
        tmp.write_text(result.model_dump_json())
        os.replace(tmp, job.result_path)
        return 0

    import torch

    if job.device == "auto":
        job.device = "cuda" if torch.cuda.is_available() else "cpu"
    if job.threads:
        torch.set_num_threads(job.threads)
    import transformers  # noqa: F401  (imported before the baseline so it is not counted as model memory)

    _import_model_code(job)
    _import_quant_kernels()  # both roles: the same library code before the baseline, so memory compares models only
    from .evals import eval_kinds

    for ev in job.evals:  # import the kinds' modules before the baseline too
        eval_kinds.get(ev.kind)
    result.environment = environment(job.device)
    gc.collect()
    baseline = rss()
    start = time.perf_counter()
    try:
        model, tokenizer, processor, problems = load(job)
    except Exception as exc:  # reported by the parent as a one-line ValidateError
        result.load_error = _first_line(exc)
        return finish()
    result.load_s = time.perf_counter() - start
    result.loading_problems = problems
    if problems.any():
        return finish()
    gc.collect()
    resident = torch.cuda.memory_allocated() if job.device == "cuda" else rss() - baseline
    result.quant_backend = quant_backend(model) if job.role == "quantized" else None
    progress("load", 1, 1)
    if job.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with MemorySampler() as sampler:
        for n, mode in enumerate(job.modes, 1):
            try:
                result.modes.append(run_mode(mode, model, tokenizer, processor, job, timed=True))
            except Exception as exc:
                result.modes.append(ModeRun(error=_first_line(exc)))
            progress("modes", n, len(job.modes), mode.name)
    if job.device == "cuda":
        result.memory = Memory(kind="cuda_max_allocated", resident_bytes=int(resident), peak_bytes=int(torch.cuda.max_memory_allocated()))
    else:
        result.memory = Memory(kind="peak_rss_above_baseline", resident_bytes=max(0, int(resident)), peak_bytes=max(0, sampler.peak - baseline))

    for ev in job.evals:
        kind = eval_kinds.get(ev.kind)
        total = kind.steps(ev.spec)
        counter = {"done": 0}

        def tick(item: str = "", _ev: Any = ev, _total: int = total) -> None:
            counter["done"] += 1
            progress(f"eval {_ev.label}", counter["done"], _total, item)

        loaded = LoadedModel(model=model, tokenizer=tokenizer, processor=processor, role=job.role, device=job.device,
                             generate=lambda m: run_mode(m, model, tokenizer, processor, job, timed=False).outputs,
                             progress=tick, work_dir=str(Path(job_path).parent), model_dir=job.model_dir)
        try:
            result.evals.append(EvalOutput(index=ev.index, kind=ev.kind, output=kind.run(ev.spec, loaded)))
        except Exception as exc:
            result.evals.append(EvalOutput(index=ev.index, kind=ev.kind, error=_first_line(exc)))
    return finish()


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (torch's takes seconds); the result file is already written
