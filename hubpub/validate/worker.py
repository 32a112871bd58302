"""One model, one fresh process: ``python -m hubpub.validate.worker JOB.json``.

The parent (runner.py) writes a :class:`~hubpub.validate.protocol.WorkerJob`; this process loads
the model with the shared checkpoint loader (any missing/unexpected key is reported), runs every
mode (timed, unless ``job.timed`` is false) and every eval kind's ``run``, and writes a
:class:`~hubpub.validate.protocol.WorkerResult`. A fresh process per model keeps memory figures
honest and isolates custom code.

``python -m hubpub.validate.worker TIMING.json`` (a :class:`~hubpub.validate.protocol.TimingJob`)
is the interleaved timing phase instead: both models in one process, their calls of each mode
alternating (ABBA), so latency compares the models under the same conditions (``main_timing``).

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
        from ..loading import gguf_file

        gguf = gguf_file(model_dir)  # a GGUF release: the tokenizer the .gguf carries (what llama.cpp runs)
        extra = {"gguf_file": gguf} if gguf else {}
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote, **extra)
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
        return call_custom(mode, model, tokenizer, processor, images, generate)
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


def custom_values(mode: ModeJob, tokenizer, processor, images, generate: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What a mode's ``arguments`` can name (hubpub.recipe.CUSTOM_VALUES), by name."""
    prompt = mode.prompt
    messages = [m.model_dump() for m in prompt] if isinstance(prompt, list) else [{"role": "user", "content": mode.text()}]
    return {"tokenizer": tokenizer, "processor": processor, "images": images, "image": images[0] if images else None,
            "prompt": mode.text(), "messages": messages, "prompts": mode.prompts, "task": mode.task,
            "max_new_tokens": generate.get("max_new_tokens"), "generate": dict(generate)}


def custom_call(mode: ModeJob, tokenizer, processor, images, generate: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The keyword arguments of a custom_generate call (documented in the README, "Custom generation modes"):

    - no ``arguments``: ``tokenizer``, ``images`` (PIL RGB list), ``prompt`` (text; chat turns of the
      user joined by newlines), ``task``, then every ``generate`` argument (``max_new_tokens`` always;
      ``seed`` is applied with torch.manual_seed, not passed);
    - ``arguments = {param = "value"}``: exactly those parameters, each given the named value;
    - then ``custom_kwargs``, as they are."""
    if mode.arguments:
        values = custom_values(mode, tokenizer, processor, images, generate)
        kwargs = {param: values[value] for param, value in mode.arguments.items()}
    else:
        kwargs = {"tokenizer": tokenizer, "images": images, "prompt": mode.text(), "task": mode.task, **generate}
    kwargs.update(mode.custom_kwargs)
    return kwargs


def call_custom(mode: ModeJob, model, tokenizer, processor, images, generate: dict[str, Any]) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """``model.<custom_generate>(**custom_call(...))``; it must return a str or a list of str (one per output)."""
    method = getattr(model, mode.custom_generate or "", None)
    if not callable(method):
        raise ValueError(f"the model ({type(model).__name__}) has no method {mode.custom_generate!r}")
    import torch

    with torch.inference_mode():
        out = method(**custom_call(mode, tokenizer, processor, images, generate))
    outputs = list(out) if isinstance(out, (list, tuple)) else [out]
    if not outputs or not all(isinstance(o, str) for o in outputs):
        got = type(out).__name__ if not isinstance(out, (list, tuple)) else f"a {type(out).__name__} of " + ", ".join(sorted({type(o).__name__ for o in out}) or ["nothing"])
        raise ValueError(f"{type(model).__name__}.{mode.custom_generate}() returned {got}; a custom_generate method must"
                         " return the answer as a str, or a list of str (one per output)")
    return outputs, sum(len(tokenizer(o)["input_ids"]) for o in outputs)


def run_mode(mode: ModeJob, model, tokenizer, processor, job: WorkerJob, timed: bool) -> ModeRun:  # type: ignore[no-untyped-def]
    """Warm-up runs, then timed runs; every latency and the last run's outputs."""
    import torch

    images = open_images(mode.images, job.scene_image)
    runs = (job.warmup_runs + job.latency_runs) if timed else 1
    result = ModeRun()
    for i in range(runs):
        outputs, new_tokens, seconds = timed_call(mode, model, tokenizer, processor, images, job.device)
        if timed and i >= job.warmup_runs:
            result.latencies_s.append(seconds)
            result.new_tokens += new_tokens
        result.outputs = outputs
    return result


def timed_call(mode: ModeJob, model, tokenizer, processor, images, device: str) -> tuple[list[str], int, float]:  # type: ignore[no-untyped-def]
    """One call of a mode, timed (GPU work synchronized on both ends): (outputs, new tokens, seconds)."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    outputs, new_tokens = run_once(mode, model, tokenizer, processor, images)
    if device == "cuda":
        torch.cuda.synchronize()
    return outputs, new_tokens, time.perf_counter() - start


# ----------------------------------------------------------------------------- interleaved timing
def abba(rounds: int, roles: list[str]) -> list[list[str]]:
    """The order of each timed round: A B, B A, A B, ... so neither model always goes first."""
    return [list(roles) if i % 2 == 0 else list(reversed(roles)) for i in range(rounds)]


def main_timing(job_path: str) -> int:
    """The interleaved timing phase (protocol.TimingJob): both models loaded in this one process,
    their calls of each mode alternating, so both are timed in the same conditions."""
    import torch

    from .protocol import TimedModel, TimingJob, TimingResult

    job = TimingJob.model_validate_json(Path(job_path).read_text())
    result = TimingResult()

    def finish() -> int:
        tmp = Path(job.result_path + ".tmp")
        tmp.write_text(result.model_dump_json())
        os.replace(tmp, job.result_path)
        return 0

    loaded: dict[str, Any] = {}
    for model_job in job.models:
        if model_job.device == "auto":
            model_job.device = "cuda" if torch.cuda.is_available() else "cpu"
        if model_job.threads:
            torch.set_num_threads(model_job.threads)
        timed = TimedModel(role=model_job.role)
        result.models.append(timed)
        try:
            model, tokenizer, processor, problems = load(model_job)
        except Exception as exc:
            timed.load_error = _first_line(exc)
            return finish()
        if problems.any():
            timed.load_error = "the checkpoint does not load cleanly"
            return finish()
        loaded[model_job.role] = (model_job, model, tokenizer, processor)
        progress("load", len(loaded), len(job.models), model_job.role)
    roles = [m.role for m in job.models]
    first = job.models[0]
    t0 = time.perf_counter()
    for n, mode in enumerate(first.modes):
        runs: dict[str, ModeRun] = {role: ModeRun() for role in roles}
        images = open_images(mode.images, first.scene_image)

        def call(role: str, timed: bool) -> None:
            run = runs[role]
            if run.error is not None:
                return
            model_job, model, tokenizer, processor = loaded[role]
            started = time.perf_counter() - t0
            try:
                _, new_tokens, seconds = timed_call(mode, model, tokenizer, processor, images, model_job.device)
            except Exception as exc:
                run.error = _first_line(exc)
                return
            if timed:
                run.latencies_s.append(seconds)
                run.starts_s.append(round(started, 6))
                run.new_tokens += new_tokens

        for _ in range(first.warmup_runs):
            for role in roles:
                call(role, timed=False)
        for order in abba(first.latency_runs, roles):
            for role in order:
                call(role, timed=True)
        for role in roles:
            result.of(role).modes.append(runs[role])  # type: ignore[union-attr]
        progress("timing", n + 1, len(first.modes), mode.name)
    return finish()


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
                result.modes.append(run_mode(mode, model, tokenizer, processor, job, timed=job.timed))
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


def _is_timing(job_path: str) -> bool:
    import json

    return json.loads(Path(job_path).read_text()).get("kind") == "timing"


if __name__ == "__main__":
    code = main_timing(sys.argv[1]) if _is_timing(sys.argv[1]) else main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (torch's takes seconds); the result file is already written
