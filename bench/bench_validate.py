"""Overhead of `hubpub validate` vs the same generate calls in one bare script.

Builds the tiny Qwen2 and quantizes it with hubpub (RTN), then times, in one run:
  A) `python -m hubpub validate RECIPE --quiet` (built-in modes, warm-up + timed runs, 2 workers);
  B) a bare script doing the same loads and generate calls, also one fresh process per model.
Both include interpreter start-up and imports. Goal: A / B <= 1.5.

    python bench/bench_validate.py [WORK_DIR]
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


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="bench-validate-"))
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
        f"[validate]\nmax_new_tokens = {new_tokens}\nwarmup_runs = {warmup}\nlatency_runs = {runs}\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "hubpub", "quantize", str(recipe)], check=True, env=env, capture_output=True)

    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hubpub", "validate", str(recipe), "--quiet"], check=True, env=env, capture_output=True)
    validate_s = time.perf_counter() - t

    t = time.perf_counter()
    for folder, quantized in ((work / "out", True), (base, False)):
        subprocess.run([sys.executable, __file__, "--bare", str(folder), str(int(quantized)), str(warmup), str(runs), str(new_tokens)],
                       check=True, env=env, capture_output=True)
    bare_s = time.perf_counter() - t

    print(f"hubpub validate (6 built-in modes x {warmup}+{runs} calls x 2 models, 2 processes): {validate_s:.2f} s")
    print(f"bare script, same loads and generate calls (2 processes):                    {bare_s:.2f} s")
    print(f"ratio validate / bare: {validate_s / bare_s:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        bare(sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        sys.stdout.flush()
        os._exit(0)  # same teardown skip as hubpub's worker
    main()
