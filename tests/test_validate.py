"""`hubpub validate` end to end on the tiny real Qwen2: real quantize, real worker processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.artifacts import MANIFEST, METRICS, Manifest, Metrics
from hubpub.cli import cli
from hubpub.recipe import load_recipe

QUANTIZE = """
[quantize]
method = "rtn"
group_size = 32
nsamples = 8
seqlen = 64
"""
FAST = """
[validate]
max_new_tokens = 8
warmup_runs = 0
latency_runs = 1
"""


@pytest.fixture(scope="session")
def quantized_qwen2(tiny_qwen2, tmp_path_factory) -> Path:
    """tiny_qwen2 quantized to W4 by hubpub's own quantize stage (RTN: seconds)."""
    from hubpub.quantize import quantize

    root = tmp_path_factory.mktemp("validate_q")
    recipe = root / "recipe.toml"
    recipe.write_text(f'output_dir = "out"\n[model]\nsource = "{tiny_qwen2}"\n{QUANTIZE}')
    saved = os.environ.get("AR_WORK_SPACE")
    os.environ["AR_WORK_SPACE"] = str(root / "ar_work_space")
    try:
        return quantize(load_recipe(recipe), progress=False).output_dir
    finally:
        os.environ.pop("AR_WORK_SPACE") if saved is None else os.environ.__setitem__("AR_WORK_SPACE", saved)


def copy_output(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / METRICS).unlink(missing_ok=True)
    return dst


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def recipe_text(source: Path, output: Path, extra: str = "", validate: str = FAST) -> str:
    return f'output_dir = "{output}"\n[model]\nsource = "{source}"\n{QUANTIZE}{validate}{extra}'


def test_validate_passes_with_builtin_modes_and_writes_metrics(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    text = recipe_text(tiny_qwen2, out, """
[validate.gates]
min_top1_agreement = 0.5
max_ppl_increase = 0.5

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 3

[[eval]]
kind = "similarity"
prompts = ["The class statement", "A for loop"]
""")
    result = run_cli("validate", str(write_recipe(text)), "--quiet")
    assert result.exit_code == 0, result.output
    assert f"wrote {out / METRICS}" in result.stdout

    metrics = Metrics.read(out / METRICS)
    manifest = Manifest.read(out / MANIFEST)
    assert metrics.passed and metrics.recipe_hash == manifest.recipe_hash
    names = ["greedy", "chat", "sampling", "beam", "batch", "stream"]
    assert [(m.mode, m.model) for m in metrics.modes] == [(n, "quantized") for n in names] + [(n, "base") for n in names]
    assert all(m.ok and m.output.strip() for m in metrics.modes)
    greedy = {m.model: m.output for m in metrics.modes if m.mode == "greedy"}
    stream = {m.model: m.output for m in metrics.modes if m.mode == "stream"}
    assert stream == greedy  # the streamer yields exactly the greedy text

    q, b = metrics.quantized, metrics.base
    assert q.weight_bytes == sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert b.weight_bytes == sum(p.stat().st_size for p in tiny_qwen2.glob("*.safetensors")) > q.weight_bytes
    assert q.memory_kind == "peak_rss_above_baseline" and q.peak_memory_bytes > 0
    assert q.load_s > 0 and q.latency_s > 0 and q.tokens_per_s > 0 and q.validity == 1.0
    assert metrics.environment["device"] == "cpu" and metrics.environment["torch"].startswith("2.")
    assert metrics.environment["auto_round"]

    kl, sim = metrics.evals
    assert kl.kind == "kl" and 0 < kl.metrics["kl"]["quantized"] < 1.0
    assert 0.5 <= kl.metrics["top1_agreement"]["quantized"] < 1.0  # 4-bit changes some argmaxes, not most
    assert kl.metrics["perplexity"]["base"] > 1 and kl.metrics["perplexity"]["quantized"] > 1
    assert set(sim.metrics) == {"exact_match", "char_similarity", "difflib_ratio", "word_jaccard"}
    assert [g.name for g in metrics.gates] == ["min_validity", "max_ppl_increase", "min_top1_agreement"]
    assert all(g.passed for g in metrics.gates)
    assert [s.prompt for s in metrics.samples[:2]] == ["The class statement", "A for loop"]


def test_base_against_itself_gives_kl_zero_top1_one_similarity_one(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    # the base folder dressed as a hubpub output: every comparison must come out exact
    same = copy_output(tiny_qwen2, tmp_path / "same")
    shutil.copy(quantized_qwen2 / MANIFEST, same / MANIFEST)
    text = recipe_text(tiny_qwen2, same, """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 2

[[eval]]
kind = "similarity"
prompts = ["The class statement", "A for loop", "An exception"]
""")
    from hubpub.validate import validate

    result = validate(load_recipe(write_recipe(text)), progress=False)
    kl, sim = result.metrics.evals
    assert kl.metrics["kl"]["quantized"] == pytest.approx(0.0, abs=1e-9)
    assert kl.metrics["top1_agreement"]["quantized"] == 1.0
    assert kl.metrics["perplexity"]["base"] == kl.metrics["perplexity"]["quantized"]
    assert sim.metrics == {name: {"quantized": 1.0} for name in ("exact_match", "char_similarity", "difflib_ratio", "word_jaccard")}
    compared = [s for s in result.metrics.samples if s.mode == "similarity"]
    assert len(compared) == 3 and all(s.base.strip() and s.base == s.quantized for s in compared)  # real text, not two empties


def _rewrite_without(path: Path, drop: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k != drop}
        meta = fh.metadata()
    save_file(tensors, path, metadata=meta)


def test_checkpoint_with_a_tensor_removed_fails_the_load_check(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    (shard,) = out.glob("*.safetensors")
    _rewrite_without(shard, "model.layers.1.mlp.down_proj.qweight")
    result = run_cli("validate", str(write_recipe(recipe_text(tiny_qwen2, out))), "--quiet")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: {out}: the quantized checkpoint does not load cleanly: 1 missing keys (model.layers.1.mlp.down_proj.qweight)")
    assert "re-run `hubpub quantize`" in result.stderr
    metrics = Metrics.read(out / METRICS)  # no stale 'passed' can survive a failed load
    assert not metrics.passed and metrics.modes[0].mode == "load"


def test_wrong_block_path_fails_the_load_check(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["block_name_to_quantize"] = "language_model.model.layers"
    (out / "config.json").write_text(json.dumps(config))
    result = run_cli("validate", str(write_recipe(recipe_text(tiny_qwen2, out))), "--quiet")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line
    # the linears stayed plain nn.Linear: their .weight is missing, the packed tensors unexpected
    assert line.startswith(f"Error: {out}: the quantized checkpoint does not load cleanly: 14 missing keys (model.layers.0.mlp.down_proj.weight, ")
    assert "unexpected keys (model.layers.0.mlp.down_proj.qweight, " in line


def test_mode_whose_output_does_not_parse_fails_the_gate_with_a_table(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    text = recipe_text(tiny_qwen2, out, """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[validate.modes]]
name = "boxes"
prompt = "Where is the cat?"
expect = { boxes = 1 }

[[validate.modes]]
name = "json"
prompts = ["Return JSON:", "A dict"]
expect = { json = true }

[validate.gates]
max_kl = 0.0

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 2
""")
    result = run_cli("validate", str(write_recipe(text)), "--quiet")
    assert result.exit_code == 1
    err = result.stderr
    assert err.strip().splitlines()[-1].startswith(
        "Error: validation failed: 4 mode run(s) failed: boxes (quantized), json (quantized), boxes (base), json (base); "
        "gate(s) violated: min_validity 0.3333 vs 1, max_kl "
    )
    assert f"see the table above and {out / METRICS}" in err
    # the table: mode, model, expected, what came out
    assert "Generation modes" in err and "0 valid <box>x1,y1,x2,y2</box> found, 1" in err and "not JSON" in err
    metrics = Metrics.read(out / METRICS)
    assert not metrics.passed
    assert {(m.mode, m.ok) for m in metrics.modes} == {("greedy", True), ("boxes", False), ("json", False)}
    assert metrics.quantized.validity == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- bad input
def test_not_a_hubpub_output(tiny_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, tmp_path / "nothing"))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {tmp_path / 'nothing'} is not a hubpub output (no hubpub_manifest.json); "
                             f"run `hubpub quantize {path}` first\n")


def test_unknown_generate_kwarg(tiny_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, tmp_path, """
[[validate.modes]]
name = "greedy"
prompt = "hi"
generate = { max_new_token = 5 }
"""))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}:")
    assert "validate.modes[0].generate: unknown generate argument 'max_new_token'; did you mean 'max_new_tokens'?" in result.stderr


def test_missing_image_path_names_the_field(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, quantized_qwen2, """
[[validate.modes]]
name = "greedy"
prompt = "hi"

[[validate.modes]]
name = "look"
prompt = "What is this?"
images = ["pics/cat.png"]
"""))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path.resolve()}: validate.modes[1].images: {path.resolve().parent / 'pics/cat.png'} not found; "
                             "fix the path (relative to the recipe file)\n")


def test_missing_eval_file_names_the_field(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, quantized_qwen2, """
[[eval]]
kind = "perplexity"
file = "data/wiki.txt"
"""))
    before = (quantized_qwen2 / METRICS).read_bytes() if (quantized_qwen2 / METRICS).exists() else None
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path.resolve()}: eval[0].file: {path.resolve().parent / 'data/wiki.txt'} not found; "
                             "fix the path (relative to the recipe file) or use builtin:pydoc\n")
    after = (quantized_qwen2 / METRICS).read_bytes() if (quantized_qwen2 / METRICS).exists() else None
    assert before == after  # bad input changes nothing
