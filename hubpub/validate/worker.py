"""One model, one fresh process: ``python -m hubpub.validate.worker JOB.json``.

The runner writes a JSON job (model folder, modes, eval inputs) and this process loads the model
with ``output_loading_info=True``, runs every mode and eval input, measures, and writes a JSON
result to ``job["result"]``. A fresh process per model keeps memory figures honest (nothing
of the other model is still allocated) and isolates custom code.

The worker only generates and measures; the parent judges outputs (modes.check_output) and
computes comparisons (evals.py). Progress goes to stdout as ``@@hubpub progress <label>`` lines.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ..loading import load_checkpoint  # light: transformers is imported inside

PROGRESS = "@@hubpub progress"
BUILTIN_SCENE = "builtin:scene"


class MemorySampler:
    """Peak resident memory of this process while active, sampled every few milliseconds.

    ru_maxrss alone misses nothing but cannot be reset, so the baseline (after imports, before
    loading) is subtracted from the larger of the sampled peak and ru_maxrss.
    """

    def __init__(self) -> None:
        self.baseline = self.rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: ru_maxrss is all there is
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)

    def _run(self) -> None:
        while not self._stop.wait(0.003):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def above_baseline(self) -> int:
        return max(0, self.peak - self.baseline)


def progress(label: str) -> None:
    print(f"{PROGRESS} {label}", flush=True)


def environment(device: str) -> dict[str, Any]:
    import torch

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    env: dict[str, Any] = {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "auto_round": version("auto-round"),
        "cpu": _cpu_name(),
        "threads": torch.get_num_threads(),
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- loading
def load(job: dict[str, Any]):  # type: ignore[no-untyped-def]
    """(model, tokenizer, processor, loading_problems); processor is None for text models."""
    import torch
    import transformers

    model_dir = Path(job["model_dir"])
    remote = bool(job["trust_remote_code"])  # only ever true when the recipe opts in
    # the base in its recipe dtype; the quantized model's quantization config decides its compute dtype
    dtype = getattr(torch, job["dtype"]) if job["role"] == "base" else "auto"
    model, problems = load_checkpoint(model_dir, task=job["task"], trust_remote_code=remote, dtype=dtype,
                                      device=job["device"])
    processor = None
    if job["task"] == "image-text-to-text":
        processor = transformers.AutoProcessor.from_pretrained(model_dir, trust_remote_code=remote)
        tokenizer = processor.tokenizer
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    tokenizer.padding_side = "left"  # batched generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, processor, problems


# ----------------------------------------------------------------------------- one mode
def open_images(paths: list[str], scene_path: str | None):  # type: ignore[no-untyped-def]
    from PIL import Image

    return [Image.open(scene_path if p == BUILTIN_SCENE else p).convert("RGB") for p in paths]


def _text_of(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n".join(m["content"] for m in prompt if m["role"] == "user")
    return prompt or ""


def build_inputs(mode: dict[str, Any], model, tokenizer, processor, images):  # type: ignore[no-untyped-def]
    prompt = mode["prompt"]
    if processor is not None:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        pending = [{"type": "image"} for _ in images]  # images go with the first user message
        chat = []
        for m in messages:
            content = [{"type": "text", "text": m["content"]}]
            if m["role"] == "user" and pending:
                content, pending = pending + content, []
            chat.append({"role": m["role"], "content": content})
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        batch = processor(text=[text], images=images or None, return_tensors="pt")
    elif mode["prompts"]:
        batch = tokenizer(mode["prompts"], return_tensors="pt", padding=True)
    elif isinstance(prompt, list):
        batch = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    else:
        batch = tokenizer([prompt], return_tensors="pt")
    return batch.to(model.device)


def run_once(mode: dict[str, Any], model, tokenizer, processor, images) -> tuple[list[str], int]:  # type: ignore[no-untyped-def]
    """One call of a mode: (decoded outputs, new tokens generated)."""
    import torch

    generate = dict(mode["generate"])
    seed = generate.pop("seed", None)
    if seed is not None:
        torch.manual_seed(int(seed))
    if mode["custom_generate"]:
        method = getattr(model, mode["custom_generate"], None)
        if method is None:
            raise ValueError(f"the model has no method {mode['custom_generate']!r}")
        out = method(tokenizer=tokenizer, images=images, prompt=_text_of(mode["prompt"]), task=mode["task"], **generate)
        outputs = out if isinstance(out, list) else [out]
        return [str(o) for o in outputs], sum(len(tokenizer(o)["input_ids"]) for o in outputs)
    batch = build_inputs(mode, model, tokenizer, processor, images)
    prompt_len = batch["input_ids"].shape[1]
    if "do_sample" not in generate:
        generate["do_sample"] = False
    generate.setdefault("pad_token_id", tokenizer.pad_token_id)
    with torch.inference_mode():
        if mode["stream"]:
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
            new = int(box["ids"].shape[1] - prompt_len)
            return [text], new
        ids = model.generate(**batch, **generate)
    new_ids = ids[:, prompt_len:]
    decode = processor.batch_decode if processor is not None else tokenizer.batch_decode
    outputs = decode(new_ids, skip_special_tokens=True)
    pad = tokenizer.pad_token_id
    new_tokens = int((new_ids != pad).sum()) if pad is not None else int(new_ids.numel())
    return outputs, new_tokens


def run_mode(mode: dict[str, Any], model, tokenizer, processor, job: dict[str, Any], timed: bool) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Warm-up runs, then timed runs; the median latency and the last run's outputs."""
    import torch

    images = open_images(mode["images"], job.get("scene_image"))
    runs = (job["warmup_runs"] + job["latency_runs"]) if timed else 1
    latencies, tokens = [], 0
    outputs: list[str] = []
    for i in range(runs):
        if job["device"] == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs, new_tokens = run_once(mode, model, tokenizer, processor, images)
        if job["device"] == "cuda":
            torch.cuda.synchronize()
        if not timed or i >= job["warmup_runs"]:
            latencies.append(time.perf_counter() - start)
            tokens += new_tokens
    return {"outputs": outputs, "latency_s": statistics.median(latencies), "seconds": sum(latencies), "new_tokens": tokens}


# ----------------------------------------------------------------------------- evals
def next_token_logprobs(model, tokenizer, texts: list[str], seqlen: int, max_samples: int):  # type: ignore[no-untyped-def]
    """(perplexity, log-probs [windows, seqlen-1, vocab] as float32 numpy) over token windows."""
    import torch

    ids = tokenizer("\n\n".join(texts), return_tensors="pt")["input_ids"][0]
    windows = [ids[i : i + seqlen] for i in range(0, max(1, len(ids) - seqlen + 1), seqlen)][:max_samples]
    nll, count, logprobs = 0.0, 0, []
    with torch.inference_mode():
        for window in windows:
            x = window.unsqueeze(0).to(model.device)
            logits = model(input_ids=x).logits[0, :-1].float()
            lp = torch.log_softmax(logits, dim=-1)
            nll -= float(lp.gather(1, x[0, 1:].unsqueeze(1)).sum())
            count += x.shape[1] - 1
            logprobs.append(lp.cpu())
    import math

    ppl = math.exp(nll / max(count, 1))
    stacked = torch.nn.utils.rnn.pad_sequence(logprobs, batch_first=True) if logprobs else torch.zeros(0)
    return ppl, stacked.numpy()


def run_evals(job: dict[str, Any], model, tokenizer, processor) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    import numpy as np

    results = []
    for ev in job["evals"]:
        out: dict[str, Any] = {"index": ev["index"], "kind": ev["kind"]}
        if ev["kind"] in ("perplexity", "kl"):
            ppl, lp = next_token_logprobs(model, tokenizer, ev["texts"], ev["seqlen"], ev["max_samples"])
            out["perplexity"] = ppl
            if ev.get("logprobs_out"):
                np.save(ev["logprobs_out"], lp)
            progress(f"{ev['kind']} {job['role']}")
        else:  # similarity and grounding: one mode call per item, outputs judged by the parent
            out["outputs"] = []
            for item in ev["items"]:
                mode = dict(ev["mode"], prompt=item["prompt"], images=item.get("images", []), prompts=None)
                result = run_mode(mode, model, tokenizer, processor, job, timed=False)
                out["outputs"].append(result["outputs"][0] if result["outputs"] else "")
                progress(f"{ev['kind']} {job['role']}")
        results.append(out)
    return results


# ----------------------------------------------------------------------------- main
def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    result: dict[str, Any] = {"role": job["role"]}

    def finish() -> int:
        tmp = Path(job["result"] + ".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, job["result"])
        return 0

    import torch

    if job["device"] == "auto":
        job["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    import transformers  # noqa: F401  (imported before the baseline so it is not counted as load memory)

    result["environment"] = environment(job["device"])
    sampler = MemorySampler()
    with sampler:
        start = time.perf_counter()
        try:
            model, tokenizer, processor, problems = load(job)
        except Exception as exc:  # reported by the parent as a one-line ValidateError
            result["load_error"] = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            return finish()
        result["load_s"] = time.perf_counter() - start
        if problems:
            result["loading_problems"] = problems
            return finish()
        progress(f"load {job['role']}")
        modes = []
        for mode in job["modes"]:
            try:
                modes.append(run_mode(mode, model, tokenizer, processor, job, timed=True))
            except Exception as exc:
                modes.append({"outputs": [], "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"})
            progress(f"{mode['name']} {job['role']}")
        result["modes"] = modes
        result["evals"] = run_evals(job, model, tokenizer, processor)
    if job["device"] == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
        result["memory_kind"] = "cuda_max_allocated"
    else:
        result["peak_memory_bytes"] = sampler.above_baseline
        result["memory_kind"] = "peak_rss_above_baseline"
    return finish()


if __name__ == "__main__":
    code = main(sys.argv[1])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown (torch's takes seconds); the result file is already written
