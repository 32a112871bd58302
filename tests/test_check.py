"""`hubpub check` and hubpub.check: every problem of every file, paths, what config.json says."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.check import check_recipe, preflight
from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe


@pytest.fixture(scope="module")
def plain_qwen2(tmp_path_factory) -> Path:
    """A real (untrained) 2-layer Qwen2 folder: hidden 64, intermediate 128, BF16 safetensors."""
    import torch
    from transformers import Qwen2ForCausalLM

    import tiny_models

    out = tmp_path_factory.mktemp("plain") / "qwen2"
    torch.manual_seed(0)
    Qwen2ForCausalLM(tiny_models.qwen2_text_config(256)).to(torch.bfloat16).save_pretrained(out)
    return out


def with_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def run_check(*args: str):
    return CliRunner().invoke(cli, ["check", *args])


# ----------------------------------------------------------------------------- many files, all problems
def test_check_reports_every_problem_of_every_file_then_a_total(tmp_path, write_recipe):
    bad = write_recipe('[model]\nsource = "org/m"\n[quantize]\nbitz = 4\n[push]\nrepo_id = "org/a--b"\n'
                       '[[validate.modes]]\nname = "a"\nprompt = "x"\ngenerate = { top_p = 2.0 }\n', "bad.toml")
    broken = write_recipe('[model\nsource = "org/m"\n', "broken.toml")
    good = write_recipe('[model]\nsource = "org/m"\n', "good.toml")
    missing = tmp_path / "nonexist.toml"
    result = run_check(str(bad), str(broken), str(good), str(missing))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{bad}:4: quantize.bitz: unknown field; did you mean 'bits'?",
        f"{bad}:6: push.repo_id: must be 'owner/name' without '--' or '..' (got 'org/a--b')",
        f"{bad}:10: validate.modes[0].generate.top_p: must be a number > 0 and <= 1 (got 2.0)",
        f"{broken}:1:7: invalid TOML: Expected ']' at the end of a table declaration; fix the syntax (strings need quotes, tables look like [quantize])",
        f"{good}: ok - hub source 'org/m', autoround W4A16 group_size 128 sym -> auto_round; output {Path.cwd() / 'out' / 'good'}",
        f"{missing}: file not found; pass the path of a recipe .toml file (see recipes/ for examples)",
        "4 files checked: 1 ok, 3 with 5 problems",
    ]


def test_check_all_good_exits_0(write_recipe):
    a = write_recipe('[model]\nsource = "org/m"\n', "a.toml")
    b = write_recipe('[model]\nsource = "org/n"\n', "b.toml")
    result = run_check(str(a), str(b))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "2 files checked: 2 ok"


def test_check_json_lists_problems_for_ci(write_recipe):
    bad = write_recipe('[model]\nsource = "org/m"\n[[eval]]\nkind = "perplexity"\nfile = "builtin:pydoc"\n'
                       '[[eval]]\nkind = "perplexity"\nfile = "builtin:wiki"\n', "bad.toml")
    result = run_check("--format", "json", str(bad))
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{
        "file": str(bad), "line": 8, "column": None, "field": "eval[1].file",
        "message": "unknown built-in corpus 'builtin:wiki'; the built-ins are builtin:pydoc",
    }]
    assert result.stderr == "1 file checked: 0 ok, 1 with 1 problem\n"


def test_check_github_annotations(write_recipe):
    bad = write_recipe('[model]\nsource = "org/m"\n[quantize]\nseed = -1\n', "bad.toml")
    result = run_check("--format", "github", str(bad))
    assert result.exit_code == 1
    escaped = str(bad).replace(":", "%3A").replace(",", "%2C")
    assert result.stdout == (f"::error file={escaped},line=4,title=quantize.seed::{bad}:4: quantize.seed: "
                             "must be from 0 to 4%2C294%2C967%2C295 (seeds are 0 <= seed < 2**32) (got -1)\n".replace("%2C", ","))


def test_load_recipe_raises_the_first_problem_and_counts_the_rest(write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n[quantize]\nbits = 5\niters = -1\nseed = 4294967296\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == (f"{path}:4: quantize.bits: must be 2, 3, 4 or 8 (got 5) "
                               "(and 2 more problems; `hubpub check` lists them all)")


# ----------------------------------------------------------------------------- files that are not recipes
def test_special_files_never_block(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.toml"
    with open(huge, "wb") as fh:
        fh.truncate(5 * 1024 * 1024)  # sparse: 5 MB of zeros
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'[model]\nsource = "\xff\xfe"\n')
    done: list = []
    worker = threading.Thread(target=lambda: done.append(run_check(str(fifo), "/dev/zero", str(huge), str(tmp_path), str(binary))))
    worker.start()
    worker.join(timeout=30)
    assert done, "hubpub check blocked on a special file"
    result = done[0]
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{fifo}: is a named pipe, not a file; pass the path of a recipe .toml file",
        "/dev/zero: is a device, not a file; pass the path of a recipe .toml file",
        f"{huge}: is 5,242,880 bytes, more than a recipe can be (1,048,576); pass the recipe .toml file, not a data file",
        f"{tmp_path}: is a folder; pass the path of a recipe .toml file",
        f"{binary}:2: not UTF-8 text; save the recipe as UTF-8",
        "5 files checked: 0 ok, 5 with 5 problems",
    ]


# ----------------------------------------------------------------------------- paths
def test_paths_that_do_not_exist_or_have_the_wrong_kind(tmp_path, write_recipe):
    (tmp_path / "model").mkdir()
    (tmp_path / "cal.jsonl").mkdir()  # a folder where a file belongs
    (tmp_path / "tpl.txt").write_text("not a folder")
    path = write_recipe(
        '[model]\nsource = "model"\n'
        '[quantize]\ncalibration = "cal.jsonl"\n'
        '[[validate.modes]]\nname = "look"\nprompt = "x"\nimages = ["cat.png"]\n'
        '[[eval]]\nkind = "perplexity"\nfile = "held_out.txt"\n'
        '[card]\ntemplate_dir = "tpl.txt"\nprevious = "v0"\n'
    )
    problems = [str(p) for p in check_recipe(path)]
    assert problems == [
        f"{path}:2: model.source: {tmp_path}/model has no config.json; give the folder of a transformers model",
        f"{path}:4: quantize.calibration: {tmp_path}/cal.jsonl is a folder; give the calibration text (.txt or .jsonl) file itself",
        f"{path}:8: validate.modes[0].images[0]: {tmp_path}/cat.png not found; fix the path (relative paths start at the recipe's folder)",
        f"{path}:11: eval[0].file: {tmp_path}/held_out.txt not found; fix the path (relative paths start at the recipe's folder)",
        f"{path}:13: card.template_dir: {tmp_path}/tpl.txt is not a folder; give the template folder",
        f"{path}:14: card.previous: {tmp_path}/v0 not found; fix the path (relative paths start at the recipe's folder)",
    ]
    # the same checks stop a stage before anything heavy, with the first problem and the count
    with pytest.raises(RecipeError, match=r":2: model.source: .* \(and 5 more problems; `hubpub check` lists them all\)$"):
        preflight(load_recipe(path))


def test_missing_gguf_and_package_sources(write_recipe, tmp_path):
    gguf = write_recipe('[model]\nsource = "weights/m.gguf"\n', "a.toml")
    package = write_recipe('[model]\nsource = "package:no_such_pkg_xyz"\n', "b.toml")
    assert [str(p) for p in check_recipe(gguf)] == [
        f"{gguf}:2: model.source: GGUF file {tmp_path}/weights/m.gguf not found; check the path (relative paths start at the recipe's folder)"]
    assert [str(p) for p in check_recipe(package)] == [
        f"{package}:2: model.source: Python package 'no_such_pkg_xyz' is not installed; pip install it (e.g. pip install --no-deps no-such-pkg-xyz)"]


def test_existing_calibration_and_templates_pass(tmp_path, write_recipe, plain_qwen2):
    (tmp_path / "cal.txt").write_text("some text\n")
    (tmp_path / "tpl").mkdir()
    path = write_recipe(f'[model]\nsource = "{plain_qwen2}"\n[quantize]\ngroup_size = 32\ncalibration = "cal.txt"\n'
                        '[card]\ntemplate_dir = "tpl"\n')
    assert check_recipe(path) == []


def test_rtn_does_not_read_calibration(write_recipe, plain_qwen2):
    path = write_recipe(f'[model]\nsource = "{plain_qwen2}"\n[quantize]\nmethod = "rtn"\ngroup_size = 32\ncalibration = "absent.txt"\n')
    assert check_recipe(path) == []


# ----------------------------------------------------------------------------- config.json
def test_group_size_that_does_not_divide_is_found_before_any_weight_loads(write_recipe, plain_qwen2):
    path = write_recipe(f'[model]\nsource = "{plain_qwen2}"\n[quantize]\ngroup_size = 128\n')
    assert [str(p) for p in check_recipe(path)] == [
        f"{path}:4: quantize.group_size: 128 does not divide the input size of 12 linear layers "
        "(model.layers.0.self_attn.q_proj: 64, model.layers.0.self_attn.k_proj: 64, model.layers.0.self_attn.v_proj: 64, ...); use 64 or 32"]
    assert check_recipe(path, model=False) == []  # --no-model skips what needs config.json


def test_keep_bf16_pattern_matching_nothing(write_recipe, plain_qwen2):
    path = write_recipe(f'[model]\nsource = "{plain_qwen2}"\n[quantize]\ngroup_size = 32\n'
                        'keep_bf16 = ["model.layers.0.*", "model.layers.9.*"]\n')
    assert [str(p) for p in check_recipe(path)] == [
        f"{path}:5: quantize.keep_bf16: pattern 'model.layers.9.*' matches no module of the model; module names look like "
        "model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj, lm_head"]


def test_custom_code_without_trust_remote_code_is_refused_up_front(tmp_path, write_recipe, plain_qwen2):
    # a known model_type that also ships code (auto_map): quantize would run, validate would refuse
    custom = with_config(plain_qwen2, tmp_path / "custom", auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    path = write_recipe(f'[model]\nsource = "{custom}"\n[quantize]\ngroup_size = 32\n')
    message = (f"{path}:1: model.trust_remote_code: the model ships its own code (auto_map in config.json: "
               "AutoModelForCausalLM) and trust_remote_code is false; review its .py files, then set model.trust_remote_code = true")
    assert [str(p) for p in check_recipe(path)] == [message]
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert (result.exit_code, result.stdout.splitlines()[0]) == (1, message)


def test_unknown_model_type_names_the_field(tmp_path, write_recipe, plain_qwen2):
    import transformers

    odd = with_config(plain_qwen2, tmp_path / "odd", model_type="no_such_arch")
    path = write_recipe(f'[model]\nsource = "{odd}"\n[quantize]\ngroup_size = 32\n')
    assert [str(p) for p in check_recipe(path)] == [
        f"{path}:2: model.source: transformers {transformers.__version__} does not know model_type 'no_such_arch'; "
        "upgrade transformers, or if the model ships its own code set model.trust_remote_code = true"]
    # and a stage stops there too, naming the recipe, never 'unexpected ValueError'
    with pytest.raises(RecipeError, match=r"recipe.toml:2: model.source: transformers"):
        preflight(load_recipe(path))


@pytest.fixture(scope="module")
def two_part_checkpoint(plain_qwen2, tmp_path_factory) -> Path:
    """A checkpoint whose text decoder sits under language_model. beside a vision tower tensor."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("vlm") / "two_part"
    out.mkdir()
    tensors = {f"language_model.{k}": v for k, v in load_file(plain_qwen2 / "model.safetensors").items()}
    tensors["vision_tower.patch_embed.weight"] = tensors["language_model.lm_head.weight"][:4].clone()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    text = json.loads((plain_qwen2 / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
                                                 "text_config": text, "vision_config": {"model_type": "clip_vision_model"}}))
    return out


def test_split_prefix_matching_nothing(two_part_checkpoint, write_recipe):
    path = write_recipe(f'[model]\nsource = "{two_part_checkpoint}"\n[quantize]\ngroup_size = 32\n[quantize.split]\nprefix = "text_model."\n')
    assert [str(p) for p in check_recipe(path)] == [
        f"{path}:6: quantize.split.prefix: 'text_model.' matches no tensor of the checkpoint; "
        "top-level prefixes found: language_model., vision_tower."]


def test_split_group_size_is_checked_on_the_decoder(two_part_checkpoint, write_recipe):
    path = write_recipe(f'[model]\nsource = "{two_part_checkpoint}"\n[quantize]\ngroup_size = 128\n[quantize.split]\nprefix = "language_model."\n')
    assert [p.field for p in check_recipe(path)] == ["quantize.group_size"]
    fine = write_recipe(f'[model]\nsource = "{two_part_checkpoint}"\n[quantize]\ngroup_size = 64\n'
                        'keep_bf16 = ["vision_tower.*"]\n[quantize.split]\nprefix = "language_model."\n', "fine.toml")
    assert check_recipe(fine) == []


def test_shipped_recipes_pass_the_offline_checks():
    repo = Path(__file__).resolve().parent.parent
    for path in sorted((repo / "recipes").glob("*.toml")):
        # what needs the Hub (the model, AutoRound's usual hf: corpus) is not checkable offline
        problems = [p for p in check_recipe(path, model=False) if p.field not in ("model.source", "model.gguf_file")
                    and "is not in the local datasets cache and HF_HUB_OFFLINE=1" not in p.message]
        assert problems == [], problems


def test_preflight_checks_only_what_the_stage_reads(tmp_path, write_recipe):
    path = write_recipe('[model]\nsource = "./weights"\n[card]\ntemplate_dir = "tpl"\n[push]\nrepo_id = "org/m"\n')
    recipe = load_recipe(path)
    preflight(recipe, stage="push")  # a push needs neither the model nor the templates
    with pytest.raises(RecipeError, match=r"recipe.toml:4: card.template_dir: .*tpl not found; fix the path \(relative paths start at the recipe's folder\), or start one with `hubpub templates export DIR`$"):
        preflight(recipe, stage="card")
    with pytest.raises(RecipeError, match=r"recipe.toml:2: model.source: .*weights not found; give an existing model folder"):
        preflight(recipe, stage="quantize", model=False)
    with pytest.raises(RecipeError, match=r"recipe.toml:2: model.source: .* \(and 1 more problem; `hubpub check` lists them all\)$"):
        preflight(recipe)  # release: everything


def test_custom_code_model_with_trust_remote_code_is_planned_on_meta(tmp_path, write_recipe, plain_qwen2):
    from custom_model import make_tiny_locate

    locate = make_tiny_locate(tmp_path / "locate", plain_qwen2)
    whole = write_recipe(f'[model]\nsource = "{locate}"\ntrust_remote_code = true\n[quantize]\ngroup_size = 32\n', "whole.toml")
    split = write_recipe(f'[model]\nsource = "{locate}"\ntrust_remote_code = true\n[quantize]\ngroup_size = 32\n'
                         '[quantize.split]\nprefix = "language_model."\nconfig_key = "llm_config"\n', "split.toml")
    assert check_recipe(whole) == []
    assert check_recipe(split) == []
    bad = write_recipe(f'[model]\nsource = "{locate}"\ntrust_remote_code = true\n[quantize]\ngroup_size = 256\n', "bad.toml")
    assert [p.field for p in check_recipe(bad)] == ["quantize.group_size"]
