"""Shared fixtures: tiny REAL models built once per test session, offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Never reach for the Hub from a test; the local devhub server is the only Hub tests talk to.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.pop("HF_TOKEN", None)

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

import tiny_models  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate_cwd_side_effects(tmp_path, monkeypatch):
    # AutoRound writes ar_work_space/ into the cwd unless told otherwise
    monkeypatch.setenv("AR_WORK_SPACE", str(tmp_path / "ar_work_space"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A trained 2-layer Qwen2ForCausalLM folder (BF16 safetensors + tokenizer + chat template)."""
    return tiny_models.make_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "qwen2")


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory) -> Path:
    return tiny_models.make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny") / "qwen2_vl")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    return tiny_models.make_tiny_llava(tmp_path_factory.mktemp("tiny") / "llava")


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(text, name='recipe.toml') -> Path of a recipe file in tmp_path."""

    def _write(text: str, name: str = "recipe.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write
