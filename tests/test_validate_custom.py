"""validate on the tiny custom-code grounding model (tests/custom_model, trust_remote_code)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.artifacts import MANIFEST, METRICS, Manifest, Metrics
from hubpub.cli import cli
from hubpub.validate import grounding

MODES = """
[validate]
warmup_runs = 0
latency_runs = 1

[[validate.modes]]
name = "hybrid-detect"
prompt = "the red circle"
images = ["builtin:scene"]
custom_generate = "generate_hybrid"
task = "detect"
expect = { boxes = 2 }

[[validate.modes]]
name = "slow-ground"
prompt = "the letter A"
images = ["builtin:scene"]
custom_generate = "generate_slow"
task = "ground"
expect = { boxes = 1 }

[[validate.modes]]
name = "fast-point"
prompt = "the blue square"
images = ["builtin:scene"]
custom_generate = "generate_fast"
task = "point"
expect = { points = 1 }

[[eval]]
kind = "grounding"
mode = "fast-ground"
images = 2
image_size = 112
classes = ["square", "circle", "K"]
"""
FAST_GROUND = """
[[validate.modes]]
name = "fast-ground"
prompt = "the letter K"
images = ["builtin:scene"]
custom_generate = "generate_fast"
task = "ground"
expect = { boxes = 1 }
"""


@pytest.fixture(scope="session")
def tiny_locate(tiny_qwen2, tmp_path_factory) -> Path:
    from custom_model import make_tiny_locate

    return make_tiny_locate(tmp_path_factory.mktemp("tiny") / "locate", tiny_qwen2)


def test_custom_code_modes_and_grounding_benchmark(tiny_locate, tmp_path, write_recipe):
    # the base dressed as its own hubpub output: modes must parse, and both sides must agree exactly
    out = tmp_path / "out"
    shutil.copytree(tiny_locate, out)
    Manifest(hubpub_version="0.1.0", recipe_hash="f" * 64, source={"kind": "folder"}, model_name="locate",
             model_type="tiny_locate", architecture="TinyLocateModel", task="custom", trust_remote_code=True,
             method="rtn", bits=4, group_size=32, sym=True, format="auto_round", iters=0, nsamples=8, seqlen=64,
             groups=[], tensors_before=0, tensors_after=0, linears_quantized=0, bytes_before=0, bytes_after=0,
             timings={}, versions={}, device="cpu").write(out / MANIFEST)
    recipe = write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_locate}"\ntrust_remote_code = true\n{MODES}{FAST_GROUND}')
    result = CliRunner().invoke(cli, ["validate", str(recipe), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    metrics = Metrics.read(out / METRICS)
    assert metrics.passed
    outputs = {(m.mode, m.model): m.output for m in metrics.modes}
    for model in ("base", "quantized"):
        assert len(grounding.parse_boxes(outputs[("hybrid-detect", model)])) == 2
        assert len(grounding.parse_boxes(outputs[("slow-ground", model)])) == 1
        assert len(grounding.parse_points(outputs[("fast-point", model)])) == 1
    assert outputs[("slow-ground", "base")] == outputs[("slow-ground", "quantized")]

    (bench,) = metrics.evals
    assert bench.kind == "grounding"
    assert bench.metrics["parsed"] == {"quantized": 1.0, "base": 1.0}  # every answer was a box
    assert bench.metrics["mean_iou"]["base"] == bench.metrics["mean_iou"]["quantized"]
    assert 0.0 <= bench.metrics["mean_iou"]["base"] <= 1.0
    classes = [row for row in bench.per_class if not row["class"].startswith("all ")]
    totals = [row for row in bench.per_class if row["class"].startswith("all ")]
    assert {row["class"] for row in classes} <= {"square", "circle", "K"}
    assert sum(row["count"] for row in classes) == 4  # 2 images x 2 objects
    assert {row["group"] for row in classes} <= {"shape", "letter"}
    # group totals, as the seed card reports them: shapes vs letters
    assert sum(row["count"] for row in totals) == 4 and {row["class"] for row in totals} <= {"all shapes", "all letters"}
    assert bench.intervals["mean_iou"]["delta"] == (0.0, 0.0)  # identical answers on both sides: a zero-width difference
    assert bench.images == ["assets/grounding_00.png", "assets/grounding_01.png"]
    assert all((out / p).is_file() for p in bench.images)


def test_custom_code_needs_trust_remote_code_in_the_recipe(tiny_locate, tmp_path, write_recipe):
    out = tmp_path / "out"
    shutil.copytree(tiny_locate, out)
    Manifest(hubpub_version="0.1.0", recipe_hash="f" * 64, source={"kind": "folder"}, model_name="locate",
             model_type="tiny_locate", architecture="TinyLocateModel", task="custom", method="rtn", bits=4,
             group_size=32, sym=True, format="auto_round", iters=0, nsamples=8, seqlen=64, groups=[],
             tensors_before=0, tensors_after=0, linears_quantized=0, bytes_before=0, bytes_after=0, timings={},
             versions={}, device="cpu").write(out / MANIFEST)
    recipe = write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_locate}"\n{MODES}{FAST_GROUND}')
    result = CliRunner().invoke(cli, ["validate", str(recipe), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {out / 'config.json'}: the model ships its own code (auto_map) and {recipe.resolve()}: "
        "model.trust_remote_code is false; set model.trust_remote_code = true if you have reviewed that code\n")


def test_custom_code_model_through_quantize_split_and_validate(tiny_locate, tmp_path, write_recipe, monkeypatch):
    """Split-and-repack (prefix language_model., config_key llm_config), then validate end to end."""
    from hubpub.quantize import quantize
    from hubpub.recipe import load_recipe
    from hubpub.validate import validate

    monkeypatch.chdir(tmp_path)
    path = write_recipe(
        f'output_dir = "out"\n[model]\nsource = "{tiny_locate}"\ntrust_remote_code = true\n'
        '[quantize]\nmethod = "rtn"\ngroup_size = 32\nnsamples = 8\nseqlen = 64\n'
        '[quantize.split]\nprefix = "language_model."\nconfig_key = "llm_config"\n' + MODES + FAST_GROUND
    )
    recipe = load_recipe(path)
    quantize(recipe, progress=False)
    result = validate(recipe, progress=False)
    manifest = Manifest.read(tmp_path / "out" / MANIFEST)
    assert manifest.task == "custom" and manifest.block_name_to_quantize == "language_model.model.layers"
    assert result.passed and result.metrics.quantized.weight_bytes < result.metrics.base.weight_bytes
    for m in result.metrics.modes:
        parsed = grounding.parse_points(m.output) if m.mode == "fast-point" else grounding.parse_boxes(m.output)
        assert parsed, (m.mode, m.model, m.output)
    (bench,) = result.metrics.evals
    assert bench.metrics["parsed"] == {"quantized": 1.0, "base": 1.0}
