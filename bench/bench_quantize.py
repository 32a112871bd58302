"""Benchmarks of the quantize stage, measured in one run; prints ratios against their goals.

    python bench/bench_quantize.py

1. `hubpub quantize` wall vs a bare AutoRound script with the same settings on the same tiny
   model, both in fresh subprocesses (python start-up counted identically)   goal <= 1.05x
2. repack throughput (write_streamed) vs copying the same bytes with shutil  goal >= 0.7x
3. checkpoint bytes vs theoretical size (4 bits/weight + scales + zeros + BF16 parts)  goal <= 1.01x
4. `hubpub --help` wall                                                     goal <= 0.25 s
5. per algorithm (rtn / awq / autoround / awq+autoround, W3 asym g32 on the same tiny model):
   `hubpub quantize` wall vs a bare auto-round script with the same algorithms   goal <= 1.05x
   and mean KL(base || quantized) on held-out text (lower is better)

    python bench/bench_quantize.py algorithms     # only section 5
6. the same on the tiny mixture-of-transformers stand-in (tests/mot_model), W4 asym g128, whole
   model: KL(base || quantized) of the understanding path on held-out text and the relative
   error of the generation path's velocity on denoising calls, for rtn / awq / autoround, and
   for awq without the calibration hook (its *_moe_gen linears then see no data)

    python bench/bench_quantize.py mot            # only section 6
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
SETTINGS = dict(bits=4, group_size=32, sym=True, iters=20, nsamples=8, seqlen=64, batch_size=4, seed=42)

ALG_SETTINGS = dict(bits=3, group_size=32, sym=False, iters=20, nsamples=8, seqlen=64, batch_size=4, seed=42)
ALGS = {"rtn": ["rtn"], "awq": ["awq", "rtn"], "autoround": ["sign_round"], "awq+autoround": ["awq", "sign_round"]}
BARE_ALG = textwrap.dedent('''
    import sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from auto_round import AutoRound, AWQConfig, RTNConfig, SignRoundConfig
    src, out, s, algs = sys.argv[1], sys.argv[2], {settings}, sys.argv[3].split(",")
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    scheme = dict(bits=s["bits"], group_size=s["group_size"], sym=s["sym"])
    configs = [AWQConfig(**scheme)] if "awq" in algs else []
    configs.append(SignRoundConfig(iters=s["iters"], **scheme) if "sign_round" in algs else RTNConfig(disable_opt_rtn=True, **scheme))
    kwargs = {}
    if algs != ["rtn"]:
        from pydoc_data.topics import topics
        names = sorted(topics)[:-40]
        ids = []
        for k in names:
            ids += tok(topics[k], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if len(ids) > 2 * s["seqlen"] * s["nsamples"]:
                break
        step = s["seqlen"] + max(8, s["seqlen"] // 8)
        data = [tok.decode(ids[i:i + step]) for i in range(0, step * s["nsamples"], step)]
        kwargs = dict(dataset=data, nsamples=s["nsamples"], seqlen=s["seqlen"], batch_size=s["batch_size"])
    ar = AutoRound(model, tok, alg_configs=configs, device_map="cpu", enable_torch_compile=False, seed=s["seed"], **kwargs)
    ar.quantize()
    ar.save_quantized(out, format="auto_round")
''')

BARE = textwrap.dedent('''
    import sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from auto_round import AutoRound, SignRoundConfig
    src, out, s = sys.argv[1], sys.argv[2], {settings}
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    from pydoc_data.topics import topics
    ids = []
    for k in sorted(topics):
        ids += tok(topics[k], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    step = s["seqlen"] + max(8, s["seqlen"] // 8)
    data = [tok.decode(ids[i:i + step]) for i in range(0, step * s["nsamples"], step)]
    alg = SignRoundConfig(iters=s["iters"], bits=s["bits"], group_size=s["group_size"], sym=s["sym"])
    ar = AutoRound(model, tok, alg_configs=alg, dataset=data, nsamples=s["nsamples"], seqlen=s["seqlen"],
                   batch_size=s["batch_size"], device_map="cpu", enable_torch_compile=False, seed=s["seed"])
    ar.quantize()
    ar.save_quantized(out, format="auto_round")
''')


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def kl_vs_base(base_dir: Path, quant_dir: Path) -> float:
    """Mean KL(base || quantized) of next-token distributions on the held-out end of builtin:pydoc."""
    import torch
    from pydoc_data.topics import topics
    from transformers import AutoTokenizer

    from hubpub.loading import load_checkpoint

    tok = AutoTokenizer.from_pretrained(base_dir)
    text = "\n".join(topics[k] for k in sorted(topics)[-40:])
    ids = tok(text, return_tensors="pt")["input_ids"][:, : 8 * 256].reshape(-1, 256)
    logp = []
    for folder in (base_dir, quant_dir):
        model, problems = load_checkpoint(folder, task="causal-lm", trust_remote_code=False, dtype=torch.bfloat16)
        assert not problems, problems
        with torch.no_grad():
            logp.append(torch.log_softmax(model(input_ids=ids).logits.float(), -1))
    return float((logp[0].exp() * (logp[0] - logp[1])).sum(-1).mean())


def algorithms(tmp: Path, src: Path, env: dict[str, str]) -> None:
    (tmp / "bare_alg.py").write_text(BARE_ALG.replace("{settings}", repr(ALG_SETTINGS)))
    q = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in ALG_SETTINGS.items())
    print(f"algorithms on the tiny Qwen2, W{ALG_SETTINGS['bits']} {'sym' if ALG_SETTINGS['sym'] else 'asym'} g{ALG_SETTINGS['group_size']}:")
    for method, algs in ALGS.items():
        out = tmp / f"alg-{method}"
        recipe = tmp / f"alg-{method}.toml"
        recipe.write_text(f'output_dir = "{out}"\n[model]\nsource = "{src}"\n[quantize]\nmethod = "{method}"\n{q}\n')
        ours = timed([sys.executable, "-m", "hubpub", "quantize", str(recipe), "--no-progress"], env, tmp)
        bare = timed([sys.executable, str(tmp / "bare_alg.py"), str(src), str(tmp / f"bare-{method}"), ",".join(algs)], env, tmp)
        kl, kl_bare = kl_vs_base(src, out), kl_vs_base(src, tmp / f"bare-{method}")
        print(f"  {method:14s} wall hubpub {ours:6.2f} s vs bare {bare:6.2f} s = {ours / bare:.3f}x (goal <= 1.05x);"
              f" KL vs base {kl:.4f} (bare script {kl_bare:.4f})")


MOT_RECIPE = """output_dir = "{out}"
[model]
source = "{src}"
trust_remote_code = true
[quantize]
method = "{method}"
bits = 4
group_size = 128
sym = false
format = "auto_awq"
iters = 20
nsamples = 8
seqlen = 64
batch_size = 4
blocks = ["language_model.model.layers"]
keep_bf16 = ["vit_model*", "connector*", "vae2llm", "llm2vae", "time_embedder*", "latent_pos_embed", "language_model.lm_head"]
{hook}{mappings}"""


def mot(tmp: Path, env: dict[str, str]) -> None:
    import torch

    from hubpub.loading import load_checkpoint
    from mot_model import HOOK, make_tiny_mot
    from mot_model.mot_calibration import generation_calls
    from test_mot import AWQ_MAPPINGS

    src = make_tiny_mot(tmp / "mot")
    shutil.copy(HOOK, tmp / HOOK.name)
    hook = 'calibration_hook = "mot_calibration.py:generation_calls"\n'
    runs = {"rtn": ("rtn", "", ""), "awq": ("awq", hook, AWQ_MAPPINGS), "awq, no hook": ("awq", "", AWQ_MAPPINGS),
            "autoround": ("autoround", hook, "")}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics)[-40:])
    ids = tok(text, return_tensors="pt")["input_ids"][:, : 8 * 64].reshape(-1, 64)

    def measure(folder: Path) -> tuple[Any, list[Any]]:
        model, problems = load_checkpoint(folder, task="causal-lm", trust_remote_code=True, dtype=torch.bfloat16)
        assert not problems, problems
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
            velocity = [model.denoise_step(**call).float() for call in generation_calls(model, tok, samples=8, seqlen=64, seed=7)]
        return logp, velocity

    base_logp, base_v = measure(src)
    print("tiny MoT (2 layers x 7 + 7 linears), W4 asym g128, whole model:")
    for label, (method, hook_line, maps) in runs.items():
        out = tmp / f"mot-{label.replace(', ', '-').replace(' ', '')}"
        recipe = tmp / f"{out.name}.toml"
        recipe.write_text(MOT_RECIPE.format(out=out, src=src, method=method, hook=hook_line, mappings=maps))
        wall = timed([sys.executable, "-m", "hubpub", "quantize", str(recipe), "--no-progress"], env, tmp)
        logp, v = measure(out)
        kl = float((base_logp.exp() * (base_logp - logp)).sum(-1).mean())
        gen_err = sum(float((a - b).norm() / b.norm()) for a, b in zip(v, base_v)) / len(v)
        print(f"  {label:13s} understanding KL {kl:.5f}; generation velocity rel. error {gen_err:.4f}; quantize {wall:.1f} s")


def main() -> None:
    import tiny_models
    from hubpub.quantize.tensors import tensor_refs, write_streamed

    tmp = Path(tempfile.mkdtemp(prefix="hubpub-bench-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", AR_WORK_SPACE=str(tmp / "ar"))
    try:
        if sys.argv[1:] == ["mot"]:
            mot(tmp, env)
            return
        src = tiny_models.make_tiny_qwen2(tmp / "qwen2")
        if sys.argv[1:] == ["algorithms"]:
            algorithms(tmp, src, env)
            return
        recipe = tmp / "bench.toml"
        q = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in SETTINGS.items())
        recipe.write_text(f'output_dir = "{tmp / "out"}"\n[model]\nsource = "{src}"\n[quantize]\n{q}\n')
        (tmp / "bare.py").write_text(BARE.replace("{settings}", repr(SETTINGS)))
        bare = timed([sys.executable, str(tmp / "bare.py"), str(src), str(tmp / "bare_out")], env, tmp)
        ours = timed([sys.executable, "-m", "hubpub", "quantize", str(recipe), "--no-progress"], env, tmp)
        print(f"quantize wall: hubpub {ours:.2f} s vs bare AutoRound {bare:.2f} s = {ours / bare:.3f}x (goal <= 1.05x)")

        # repack throughput on a bigger real checkpoint than the tiny one: the tiny VLM's bytes x 1
        refs = list(tensor_refs(src).values()) * 1
        big = tmp / "big.bin"
        with open(big, "wb") as fh:  # ~256 MiB of tensor-sized records from one file
            fh.write(os.urandom(64 << 20) * 4)
        from hubpub.quantize.tensors import TensorRef

        chunk = 1 << 20
        brefs = [TensorRef(f"t{i}", big, "U8", (chunk,), i * chunk, (i + 1) * chunk) for i in range(256)]
        (tmp / "repack").mkdir()
        t = time.perf_counter(); write_streamed(brefs, tmp / "repack"); repack = time.perf_counter() - t
        t = time.perf_counter(); shutil.copyfile(big, tmp / "copy.bin"); copy = time.perf_counter() - t
        print(f"repack throughput: {256 / repack:.0f} MiB/s vs copy {256 / copy:.0f} MiB/s = {copy / repack:.2f}x (goal >= 0.7x)")

        m = json.loads((tmp / "out" / "hubpub_manifest.json").read_text())
        bf16 = sum(g["bytes_after"] for g in m["groups"] if g["action"] == "kept")
        theory = bf16
        for r in refs:
            name = r.name.removesuffix(".weight")
            if r.name.endswith(".weight") and len(r.shape) == 2 and ".layers." in r.name:
                out_f, in_f = r.shape
                groups = in_f // SETTINGS["group_size"]
                theory += out_f * in_f // 2 + out_f * groups * 2 + out_f * groups // 2  # int4 + fp16 scales + int4 zeros
            elif r.name.endswith(".bias") and any(g["pattern"] == _pat(name.rsplit(".", 1)[0]) for g in m["groups"] if g["action"] == "quantized"):
                theory += r.nbytes
        print(f"checkpoint bytes: {m['bytes_after']} vs theoretical {theory} = {m['bytes_after'] / theory:.3f}x (goal <= 1.01x)")

        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hubpub", "--help"], env=env, check=True, stdout=subprocess.DEVNULL)
        print(f"hubpub --help wall: {time.perf_counter() - t:.3f} s (goal <= 0.25 s)")
        algorithms(tmp, src, env)
        mot(tmp, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pat(name: str) -> str:
    import re

    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


if __name__ == "__main__":
    main()
