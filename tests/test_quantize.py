"""`hubpub quantize` on tiny real models: real AutoRound, real safetensors, reload with transformers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.cli import cli

REPO = Path(__file__).resolve().parents[1]
# CPU-sized settings: 2 decoder blocks, a handful of short samples
FAST = 'iters = 2\nnsamples = 4\nseqlen = 64\nbatch_size = 4\ngroup_size = 32\n'


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def recipe_text(source: Path, out: Path, extra: str = "", model_extra: str = "") -> str:
    return f'output_dir = "{out}"\n[model]\nsource = "{source}"\n{model_extra}[quantize]\n{FAST}{extra}'


def load_quantized(folder: Path, cls_name: str = "AutoModelForCausalLM"):
    import torch
    import transformers

    return getattr(transformers, cls_name).from_pretrained(folder, dtype=torch.bfloat16, output_loading_info=True)


def greedy(model, folder: Path, n: int = 8) -> str:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("The class statement", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return tok.decode(out[0, ids["input_ids"].shape[1]:])


@pytest.fixture(scope="module")
def plain_auto_round(tiny_qwen2, tmp_path_factory):
    """tiny Qwen2 quantized to auto_round with one linear kept in BF16."""
    root = tmp_path_factory.mktemp("plain")
    recipe = root / "r.toml"
    recipe.write_text(recipe_text(tiny_qwen2, root / "out", 'keep_bf16 = ["model.layers.0.mlp.down_proj"]\n'))
    os.environ["AR_WORK_SPACE"] = str(root / "ar")
    result = run_cli("quantize", str(recipe), "--no-progress")
    assert result.exit_code == 0, result.output
    return recipe, root / "out", result.output


def test_auto_round_reloads_generates_and_accounts_for_every_tensor(plain_auto_round, tiny_qwen2):
    from safetensors import safe_open

    recipe, out, output = plain_auto_round
    assert "linears quantized" in output and f"Wrote {out}" in output
    model, info = load_quantized(out)
    assert {k: v for k, v in info.items() if v} == {}
    assert type(model.model.layers[0].self_attn.q_proj).__name__.startswith("QuantLinear")  # kernel depends on auto-round-lib
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "Linear"  # keep_bf16
    assert len(greedy(model, out)) > 0

    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["bits"], qc["group_size"], qc["sym"], qc["block_name_to_quantize"]) == ("auto-round", 4, 32, True, "model.layers")
    m = json.loads((out / "hubpub_manifest.json").read_text())
    assert m["linears_quantized"] == 13  # 2 blocks x 7 linears, minus the kept one
    assert m["kept_bf16_linears"] == ["model.layers.0.mlp.down_proj"]
    with safe_open(tiny_qwen2 / "model.safetensors", "pt") as f:
        base = {k: f.get_tensor(k) for k in f.keys()}
    assert m["tensors_before"] == len(base) == sum(g["tensors"] for g in m["groups"])
    quantized = {g["pattern"]: g for g in m["groups"] if g["action"] == "quantized"}
    # q/k/v carry a bias: weight + bias in, qweight + qzeros + scales + bias out
    assert (quantized["model.layers.*.self_attn.q_proj"]["tensors"], quantized["model.layers.*.self_attn.q_proj"]["packed_tensors"]) == (4, 8)
    assert quantized["model.layers.*.mlp.down_proj"]["linears"] == 1
    with safe_open(out / "model.safetensors", "pt") as f:
        assert m["tensors_after"] == len(list(f.keys()))
        for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.down_proj.weight", "model.norm.weight"):
            assert f.get_tensor(name).equal(base[name]), name
    assert m["bytes_after"] < m["bytes_before"]
    assert set(m["versions"]) >= {"torch", "transformers", "auto_round", "hubpub"}
    assert (out / "hubpub_recipe.toml").read_text() == recipe.read_text()
    assert (out / "chat_template.jinja").is_file() and (out / "tokenizer.json").is_file()


def test_rerun_reuses_finished_output_unless_forced(plain_auto_round):
    recipe, out, _ = plain_auto_round
    before = (out / "model.safetensors").stat().st_mtime_ns
    again = run_cli("quantize", str(recipe), "--no-progress")
    assert again.exit_code == 0
    assert f"Reused finished output {out}" in again.output
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    forced = run_cli("quantize", str(recipe), "--no-progress", "--force")
    assert forced.exit_code == 0 and "Reused" not in forced.output
    assert (out / "model.safetensors").stat().st_mtime_ns != before
    assert not list(out.parent.glob(f".{out.name}.hubpub/build-*"))


# quant_method as written by each export format; auto_awq stores zero points (asymmetric)
FORMATS = [("auto_gptq", "gptq", "true"), ("auto_awq", "awq", "false"), ("llm_compressor", "compressed-tensors", "true")]


@pytest.mark.parametrize("fmt,quant_method,sym", FORMATS, ids=[f[0] for f in FORMATS])
def test_other_formats_reload_without_key_problems_and_generate(fmt, quant_method, sym, tiny_qwen2, tmp_path, write_recipe):
    from hubpub.loading import load_checkpoint

    out = tmp_path / fmt
    text = recipe_text(tiny_qwen2, out, f'format = "{fmt}"\nmethod = "rtn"\nsym = {sym}\n')
    result = run_cli("quantize", str(write_recipe(text)), "--no-progress")
    assert result.exit_code == 0, result.output
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == quant_method
    if fmt == "llm_compressor":
        weights = qc["config_groups"]["group_0"]["weights"]
        assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 32, True)
    else:
        assert (qc["bits"], qc["group_size"], qc["sym"]) == (4, 32, sym == "true")
    model, problems = load_checkpoint(out, task="causal-lm", trust_remote_code=False)
    assert problems == {}
    assert len(greedy(model, out)) > 0


@pytest.mark.parametrize("fixture,prefix,vision", [("tiny_qwen2_vl", "model.", "visual."), ("tiny_llava", "language_model.", "vision_tower.")])
def test_split_and_repack_multimodal(fixture, prefix, vision, request, tmp_path, write_recipe):
    import torch
    import transformers
    from safetensors import safe_open

    source = request.getfixturevalue(fixture)
    out = tmp_path / "out"
    result = run_cli("quantize", str(write_recipe(recipe_text(source, out, f'[quantize.split]\nprefix = "{prefix}"\n'))), "--no-progress")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["block_name_to_quantize"] == "model.language_model.layers"
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(out, dtype=torch.bfloat16, output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}
    assert type(model.model.language_model.layers[1].mlp.up_proj).__name__.startswith("QuantLinear")
    with safe_open(source / "model.safetensors", "pt") as src, safe_open(out / "model.safetensors", "pt") as dst:
        untouched = [k for k in src.keys() if not k.startswith(prefix) and not k.startswith("lm_head")]
        assert untouched and all(k.startswith((vision, "multi_modal_projector.")) for k in untouched)
        for key in untouched:
            assert src.get_tensor(key).view(torch.int16).equal(dst.get_tensor(key).view(torch.int16)), key
    ids = torch.tensor([[5, 6, 7, 8]])
    assert model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False).shape == (1, 8)
    m = json.loads((out / "hubpub_manifest.json").read_text())
    assert m["linears_quantized"] == 14 and m["split_prefix"] == prefix
    kept_vision = [g for g in m["groups"] if g["pattern"] == vision + "*"]
    assert kept_vision[0]["action"] == "kept" and kept_vision[0]["tensors"] == sum(1 for k in untouched if k.startswith(vision))


def test_killed_run_leaves_previous_output_intact(plain_auto_round, tmp_path):
    recipe, out, _ = plain_auto_round
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    env = dict(os.environ, PYTHONPATH=str(REPO), AR_WORK_SPACE=str(tmp_path / "ar"))
    proc = subprocess.Popen([sys.executable, "-m", "hubpub", "quantize", str(recipe), "--force", "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work = out.parent / f".{out.name}.hubpub"
    deadline = time.time() + 60
    while time.time() < deadline and not list(work.glob("build-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_killed_first_run_leaves_no_output(tiny_qwen2, tmp_path, write_recipe):
    out = tmp_path / "out"
    recipe = write_recipe(recipe_text(tiny_qwen2, out))
    env = dict(os.environ, PYTHONPATH=str(REPO), AR_WORK_SPACE=str(tmp_path / "ar"))
    proc = subprocess.Popen([sys.executable, "-m", "hubpub", "quantize", str(recipe), "--no-progress"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list(tmp_path.glob(".out.hubpub/build-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()


@pytest.mark.parametrize("fmt,sym", [("auto_gptq", "true"), ("auto_awq", "false"), ("llm_compressor", "true")])
def test_split_and_repack_in_every_format_keeps_the_vision_tower_unquantized(fmt, sym, tiny_llava, tmp_path, write_recipe):
    """Loaders that quantize "every Linear" must be told to skip the vision tower and projector."""
    from hubpub.loading import load_checkpoint

    out = tmp_path / "out"
    text = recipe_text(tiny_llava, out, f'format = "{fmt}"\nmethod = "rtn"\nsym = {sym}\n[quantize.split]\nprefix = "language_model."\n')
    result = run_cli("quantize", str(write_recipe(text)), "--no-progress")
    assert result.exit_code == 0, result.output
    model, problems = load_checkpoint(out, task="image-text-to-text", trust_remote_code=False)
    assert problems == {}
    assert type(model.model.vision_tower.encoder.layers[0].mlp.fc1).__name__ == "Linear"
    assert type(model.model.multi_modal_projector.linear_1).__name__ == "Linear"
