"""Bad input to `hubpub quantize`: one exact line on stderr, exit 1, nothing written to output_dir."""

from __future__ import annotations

import importlib.util

from click.testing import CliRunner

from hubpub.cli import cli


def quantize(recipe):
    return CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress"])


def expect_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: {message}\n"


def test_missing_local_source(tmp_path, write_recipe):
    result = quantize(write_recipe('[model]\nsource = "./missing_model"\n'))
    expect_error(result, f"{tmp_path}/recipe.toml:2: model.source: {tmp_path}/missing_model not found; give an existing model folder, a Hub repo id like 'org/name', a .gguf file or package:NAME")


def test_hub_source_not_cached_offline(write_recipe):
    result = quantize(write_recipe('[model]\nsource = "nobody/no-such-model"\n'))
    expect_error(result, "model.source: 'nobody/no-such-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; download it first or unset HF_HUB_OFFLINE")


def test_missing_package_source(tmp_path, write_recipe):
    result = quantize(write_recipe('[model]\nsource = "package:no_such_pkg_xyz"\n'))
    expect_error(result, f"{tmp_path}/recipe.toml:2: model.source: Python package 'no_such_pkg_xyz' is not installed; pip install it (e.g. pip install --no-deps no-such-pkg-xyz)")


def test_split_prefix_matching_nothing_lists_prefixes(tiny_llava, tmp_path, write_recipe):
    out = tmp_path / "out"
    result = quantize(write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_llava}"\n[quantize]\ngroup_size = 32\n[quantize.split]\nprefix = "text_model."\n'))
    expect_error(result, f"{tmp_path}/recipe.toml:7: quantize.split.prefix: 'text_model.' matches no tensor of the checkpoint; top-level prefixes found: language_model., multi_modal_projector., vision_tower.")
    assert not out.exists()


def test_group_size_not_dividing_names_layers(tiny_qwen2, tmp_path, write_recipe):
    out = tmp_path / "out"
    result = quantize(write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_qwen2}"\n[quantize]\ngroup_size = 128\n'))
    expect_error(result, f"{tmp_path}/recipe.toml:5: quantize.group_size: 128 does not divide the input size of 12 linear layers (model.layers.0.self_attn.q_proj: 64, model.layers.0.self_attn.k_proj: 64, model.layers.0.self_attn.v_proj: 64, ...); use 64 or 32")
    assert not out.exists()


def test_calibration_shorter_than_seqlen(tiny_qwen2, tmp_path, write_recipe):
    (tmp_path / "short.txt").write_text("one two three\n")
    out = tmp_path / "out"
    result = quantize(write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_qwen2}"\n[quantize]\ngroup_size = 32\nseqlen = 64\ncalibration = "short.txt"\n'))
    expect_error(result, "quantize.calibration: short.txt has 9 tokens, fewer than quantize.seqlen = 64 (+8 margin) needs for one sample; use a longer corpus or lower quantize.seqlen")
    assert not out.exists()


def test_calibration_file_missing(tiny_qwen2, tmp_path, write_recipe):
    result = quantize(write_recipe(f'output_dir = "{tmp_path}/out"\n[model]\nsource = "{tiny_qwen2}"\n[quantize]\ngroup_size = 32\ncalibration = "nope.jsonl"\n'))
    expect_error(result, f"{tmp_path}/recipe.toml:6: quantize.calibration: {tmp_path}/nope.jsonl not found; fix the path (relative paths start at the recipe's folder)")


def test_trust_remote_code_without_pinned_revision(tmp_path, write_recipe):
    result = quantize(write_recipe('[model]\nsource = "org/model"\ntrust_remote_code = true\n'))
    expect_error(result, f"{tmp_path}/recipe.toml:1: model: trust_remote_code = true with a Hub source needs revision pinned"
                 " to a 40-hex commit sha, so the code you run is the code you reviewed")


def test_llm_compressor_without_compressed_tensors(tiny_qwen2, write_recipe, monkeypatch):
    # CI installs compressed-tensors; make it look absent, as on a user's machine without it
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "compressed_tensors" else real_find_spec(name, *a))
    result = quantize(write_recipe(f'[model]\nsource = "{tiny_qwen2}"\n[quantize]\nformat = "llm_compressor"\n'))
    expect_error(result, "quantize.format: 'llm_compressor' needs the compressed-tensors package; pip install compressed-tensors, or use format 'auto_round'")


def test_refuses_to_overwrite_a_foreign_folder(tiny_qwen2, tmp_path, write_recipe):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    result = quantize(write_recipe(f'output_dir = "{out}"\n[model]\nsource = "{tiny_qwen2}"\n'))
    expect_error(result, f"output_dir: {out} exists and is not a hubpub output (no hubpub_manifest.json); move it away or set another output_dir")
    assert (out / "notes.txt").read_text() == "precious"
