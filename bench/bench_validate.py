"""Overhead of `hubpub validate` vs the same generate calls in one bare script, and what the
interleaved timing costs and buys.

Builds the tiny Qwen2 and quantizes it with hubpub (RTN), then times, in one run:
  A) `python -m hubpub validate RECIPE --quiet` with [validate] latency = "interleaved" (the
     default: each model's worker runs the modes once, then one process loads both and times
     them alternating ABBA: 3 processes);
  S) the same with latency = "separate" (each model timed in its own worker: 2 processes);
  B) a bare script doing the same loads and generate calls, one fresh process per model.
All include interpreter start-up and imports. Goal: A / B <= 1.5. With --repeats N (default 2)
A and S run N times each and the spread (max - min) of the quantized / base latency ratio over
the runs is printed per mode: how much the published comparison moves between two runs.

    python bench/bench_validate.py [WORK_DIR] [--repeats N]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The function returns"
BATCH = ["The class statement", "An exception is raised when", "A for loop"]


def bare(model_dir: str, quantized: bool, warmup: int, runs: int, new_tokens: int) -> None:
    """The same calls as validate's built-in causal-LM modes, without hubpub."""
    import threading

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer

    dtype = "auto" if quantized else torch.bfloat16
    model, _ = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, device_map="cpu", output_loading_info=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    one = tok([PROMPT], return_tensors="pt")
    chat = tok.apply_chat_template([{"role": "user", "content": "Explain what a Python list is."}],
                                   add_generation_prompt=True, return_tensors="pt", return_dict=True)
    batch = tok(BATCH, return_tensors="pt", padding=True)
    common = {"max_new_tokens": new_tokens, "pad_token_id": tok.pad_token_id}

    def stream() -> None:
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        t = threading.Thread(target=model.generate, kwargs=dict(**one, **common, do_sample=False, streamer=streamer))
        t.start()
        "".join(streamer)
        t.join()

    calls = [
        lambda: model.generate(**one, **common, do_sample=False),
        lambda: model.generate(**chat, **common, do_sample=False),
        lambda: (torch.manual_seed(0), model.generate(**one, **common, do_sample=True, temperature=0.8, top_p=0.95)),
        lambda: model.generate(**one, **common, num_beams=3, do_sample=False),
        lambda: model.generate(**batch, **common, do_sample=False),
        stream,
    ]
    with torch.inference_mode():
        for call in calls:
            for _ in range(warmup + runs):
                call()


def _validate(recipe: Path, env: dict, latency: str) -> tuple[float, dict[str, float]]:
    """One `hubpub validate` run: (wall seconds, {mode: quantized / base median latency})."""
    import json

    import shutil

    text = recipe.read_text()
    recipe.write_text(text.split("latency = ")[0] + f'latency = "{latency}"\n')
    # measure the base every time (validate keeps it in the base cache for variants; a cached base
    # is exactly the stale comparison interleaved timing avoids, and would make one side cheaper)
    shutil.rmtree(recipe.parent / ".out.hubpub" / "base-cache", ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hubpub", "validate", str(recipe), "--quiet"], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - t
    metrics = json.loads((recipe.parent / "out" / "hubpub_metrics.json").read_text())
    by = {(m["mode"], m["model"]): m["latency_s"] for m in metrics["modes"]}
    ratios = {mode: by[(mode, "quantized")] / by[(mode, "base")] for mode, model in by if model == "base" and by[(mode, "base")]}
    return wall, ratios


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("work", nargs="?")
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()
    repeats = opts.repeats
    work = Path(opts.work or tempfile.mkdtemp(prefix="bench-validate-"))
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("AR_WORK_SPACE", str(work / "ar_work_space"))
    import tiny_models

    base = work / "qwen2"
    if not (base / "config.json").exists():
        tiny_models.make_tiny_qwen2(base)
    recipe = work / "recipe.toml"
    warmup, runs, new_tokens = 1, 3, 24
    recipe.write_text(
        f'output_dir = "{work / "out"}"\n[model]\nsource = "{base}"\n'
        '[quantize]\nmethod = "rtn"\ngroup_size = 32\nnsamples = 8\nseqlen = 64\n'
        f"[validate]\nmax_new_tokens = {new_tokens}\nwarmup_runs = {warmup}\nlatency_runs = {runs}\nlatency = \"interleaved\"\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "hubpub", "quantize", str(recipe)], check=True, env=env, capture_output=True)

    measured: dict[str, list[tuple[float, dict[str, float]]]] = {"interleaved": [], "separate": []}
    for _ in range(repeats):  # alternating, so both see the same machine
        for latency in measured:
            measured[latency].append(_validate(recipe, env, latency))
            wall, ratios = measured[latency][-1]
            print(f"  run: latency = {latency}: {wall:.2f} s; quantized / base per mode: "
                  + ", ".join(f"{m} {r:.3f}" for m, r in ratios.items()), flush=True)

    t = time.perf_counter()
    for folder, quantized in ((work / "out", True), (base, False)):
        subprocess.run([sys.executable, __file__, "--bare", str(folder), str(int(quantized)), str(warmup), str(runs), str(new_tokens)],
                       check=True, env=env, capture_output=True)
    bare_s = time.perf_counter() - t

    walls = {k: min(w for w, _ in v) for k, v in measured.items()}
    print(f"hubpub validate, latency = interleaved (6 modes x 1 call x 2 models, then 6 x {warmup}+{runs} x 2 alternating; 3 processes): {walls['interleaved']:.2f} s")
    print(f"hubpub validate, latency = separate    (6 modes x {warmup}+{runs} calls x 2 models; 2 processes):                    {walls['separate']:.2f} s")
    print(f"bare script, same loads and generate calls (2 processes):                                                      {bare_s:.2f} s")
    print(f"ratio interleaved / bare: {walls['interleaved'] / bare_s:.2f}x (goal <= 1.5x); separate / bare: {walls['separate'] / bare_s:.2f}x;"
          f" interleaved / separate: {walls['interleaved'] / walls['separate']:.2f}x")
    if repeats > 1:
        print(f"quantized / base latency per mode over {repeats} runs each (min-max; a narrower range is a steadier comparison):")
        for mode in measured["interleaved"][0][1]:
            cells = []
            for latency, got in measured.items():
                values = [r[mode] for _, r in got if mode in r]
                cells.append(f"{latency} {min(values):.3f}-{max(values):.3f} (spread {max(values) - min(values):.3f})")
            print(f"  {mode:9s} " + "; ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare(sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        sys.stdout.flush()
        os._exit(0)  # same teardown skip as hubpub's worker
    main()
