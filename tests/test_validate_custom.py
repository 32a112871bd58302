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


# ----------------------------------------------------------------------------- a model's own API
# TinyLocateModel.locate(image, query, tokenizer, mode="fast"): not hubpub's convention; the recipe
# maps hubpub's values onto its parameters (arguments) and adds its own keyword (custom_kwargs).
LOCATE_MODES = """
[[validate.modes]]
name = "locate-slow"
prompt = "the letter A"
images = ["builtin:scene"]
custom_generate = "locate"
arguments = { image = "image", query = "prompt", tokenizer = "tokenizer" }
custom_kwargs = { mode = "slow" }
expect = { boxes = 1 }

[[validate.modes]]
name = "locate-default"
prompt = "the letter K"
images = ["builtin:scene"]
custom_generate = "locate"
arguments = { image = "image", query = "prompt", tokenizer = "tokenizer" }
expect = { boxes = 1 }
"""


def _dress_as_output(tiny_locate, out):
    """The base copied as its own hubpub output: validate runs without quantizing."""
    shutil.copytree(tiny_locate, out)
    Manifest(hubpub_version="0.1.0", recipe_hash="f" * 64, source={"kind": "folder"}, model_name="locate",
             model_type="tiny_locate", architecture="TinyLocateModel", task="custom", trust_remote_code=True,
             method="rtn", bits=4, group_size=32, sym=True, format="auto_round", iters=0, nsamples=8, seqlen=64,
             groups=[], tensors_before=0, tensors_after=0, linears_quantized=0, bytes_before=0, bytes_after=0,
             timings={}, versions={}, device="cpu").write(out / MANIFEST)


def test_model_api_reached_through_arguments_and_custom_kwargs(tiny_locate, tmp_path, write_recipe):
    out = tmp_path / "out"
    _dress_as_output(tiny_locate, out)
    recipe = write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_locate}"\ntrust_remote_code = true\n'
                          f'[validate]\nwarmup_runs = 0\nlatency_runs = 1\n{LOCATE_MODES}{FAST_GROUND}'
                          '\n[[validate.modes]]\nname = "slow-ground"\nprompt = "the letter A"\nimages = ["builtin:scene"]\n'
                          'custom_generate = "generate_slow"\ntask = "ground"\n')
    result = CliRunner().invoke(cli, ["validate", str(recipe), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outputs = {(m.mode, m.model): m.output for m in Metrics.read(out / METRICS).modes}
    for model in ("base", "quantized"):
        # mode = "slow" reached the model: locate's answer is the slow decoder's, box for box
        assert outputs[("locate-slow", model)] == outputs[("slow-ground", model)]
        assert outputs[("locate-slow", model)].startswith("<ref>the letter A</ref><box>")
        # without custom_kwargs the model's own default (mode="fast") applies
        assert outputs[("locate-default", model)] == outputs[("fast-ground", model)]


def test_the_worker_passes_exactly_the_documented_values():
    from hubpub.recipe import CUSTOM_VALUES
    from hubpub.validate.protocol import GenerateArgs, ModeJob
    from hubpub.validate.worker import custom_call, custom_values

    mode = ModeJob(name="m", prompt="find it", images=["a.png"], custom_generate="locate", task="ground",
                   generate=GenerateArgs(max_new_tokens=7))
    generate = mode.generate.kwargs()
    values = custom_values(mode, "TOK", "PROC", ["IMG"], generate)
    assert tuple(values) == CUSTOM_VALUES  # the README's table, in its order
    assert values["image"] == "IMG" and values["messages"] == [{"role": "user", "content": "find it"}]
    assert custom_call(mode, "TOK", None, ["IMG"], generate) == {"tokenizer": "TOK", "images": ["IMG"], "prompt": "find it",
                                                                  "task": "ground", "max_new_tokens": 7}
    mapped = mode.model_copy(update={"arguments": {"query": "prompt", "img": "image", "n": "max_new_tokens"},
                                     "custom_kwargs": {"mode": "slow"}})
    assert custom_call(mapped, "TOK", None, ["IMG"], generate) == {"query": "find it", "img": "IMG", "n": 7, "mode": "slow"}


def _mode(extra: str, method: str = "locate") -> str:
    return (f'\n[[validate.modes]]\nname = "m"\nprompt = "the letter A"\nimages = ["builtin:scene"]\n'
            f'custom_generate = "{method}"\n{extra}')


LOCATE_SIG = "TinyLocateModel.locate(image, query, tokenizer, mode='fast')"


@pytest.mark.parametrize("extra, method, field, message", [
    ('arguments = { image = "image", query = "promt", tokenizer = "tokenizer" }\n', "locate", "arguments",
     "query = 'promt': unknown value; did you mean 'prompt'? (hubpub passes: tokenizer, processor, images, image, prompt,"
     " messages, prompts, task, max_new_tokens, generate)"),
    ('custom_kwargs = { prompt = "x" }\n', "generate_slow", "custom_kwargs",
     "'prompt' is already passed by hubpub's default call (tokenizer, images, prompt, task and the generate table); set it in one place"),
])
def test_bad_mode_fields_are_recipe_errors(tiny_locate, write_recipe, extra, method, field, message):
    recipe = write_recipe(f'[model]\nsource = "{tiny_locate}"\ntrust_remote_code = true\n' + _mode(extra, method))
    result = CliRunner().invoke(cli, ["check", str(recipe), "--no-model"])
    assert result.exit_code == 1
    line = recipe.read_text().splitlines().index(extra.strip()) + 1
    assert result.output.splitlines()[0] == f"{recipe}:{line}: validate.modes[0].{field}: {message}"


@pytest.mark.parametrize("extra, method, field, message", [
    ("", "locat", "custom_generate", "TinyLocateModel has no method 'locat' (did you mean 'locate'?); name a method of the model's class"),
    ('arguments = { image = "image", querry = "prompt", tokenizer = "tokenizer" }\n', "locate", "arguments",
     f"{LOCATE_SIG} has no parameter 'querry' that the mode passes; did you mean 'query'?"),
    ('arguments = { image = "image", query = "prompt", tokenizer = "tokenizer" }\ncustom_kwargs = { speed = "slow" }\n', "locate",
     "custom_kwargs", f"{LOCATE_SIG} has no parameter 'speed' that the mode passes; its parameters are image, query, tokenizer, mode"),
    ('arguments = { image = "image", query = "prompt" }\n', "locate", "arguments",
     f"{LOCATE_SIG} needs 'tokenizer', which the mode does not pass; map it in arguments, e.g. arguments ="
     ' { tokenizer = "tokenizer", ... } (values: tokenizer, processor, images, image, prompt, messages, prompts, task, max_new_tokens, generate)'),
])
def test_a_call_the_method_cannot_take_is_refused_before_any_weight_loads(tiny_locate, tmp_path, write_recipe, extra, method,
                                                                           field, message):
    out = tmp_path / "out"
    _dress_as_output(tiny_locate, out)
    recipe = write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_locate}"\ntrust_remote_code = true\n'
                          '[quantize]\ngroup_size = 32\n' + _mode(extra, method))
    checked = CliRunner().invoke(cli, ["check", str(recipe)])
    assert checked.exit_code == 1
    text = recipe.read_text().splitlines()
    key = {"custom_generate": "custom_generate = ", "arguments": "arguments = ", "custom_kwargs": "custom_kwargs = "}[field]
    line = next(i for i, t in enumerate(text, 1) if t.startswith(key))
    assert checked.output.splitlines()[0] == f"{recipe}:{line}: validate.modes[0].{field}: {message}"
    # the validate stage stops at the same line (exit 1) before its workers load a weight: nothing measured
    staged = CliRunner().invoke(cli, ["validate", str(recipe), "--quiet"])
    assert staged.exit_code == 1
    assert staged.stderr.startswith(f"Error: {recipe}:{line}: validate.modes[0].{field}: {message}")
    assert not (out / METRICS).exists()
