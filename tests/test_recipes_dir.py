"""Every recipe in recipes/ parses; the demo one is sized for a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubpub.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


def test_the_three_recipes_exist():
    assert {p.name for p in RECIPES} >= {"demo.toml", "locateanything-3b.toml", "qwen2.5-vl-3b.toml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(path):
    recipe = load_recipe(path)
    assert recipe.quantize.bits == 4 and recipe.push.repo_id


def test_demo_is_cpu_sized_and_fits_smollm2():
    demo = load_recipe(next(p for p in RECIPES if p.name == "demo.toml"))
    q = demo.quantize
    assert demo.model.source_kind(demo.base_dir) == "package"
    assert 576 % q.group_size == 0 and 1536 % q.group_size == 0  # SmolLM2-135M hidden / intermediate sizes
    assert q.iters * q.nsamples * q.seqlen <= 100 * 16 * 512 and q.calibration == "builtin:pydoc"
    assert demo.card.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and demo.card.license == "apache-2.0"


def test_multimodal_recipes_split_the_decoder():
    for name, prefix in (("locateanything-3b.toml", "language_model."), ("qwen2.5-vl-3b.toml", "model.")):
        recipe = load_recipe(next(p for p in RECIPES if p.name == name))
        assert recipe.quantize.split is not None and recipe.quantize.split.prefix == prefix
        assert recipe.quantize.group_size == 128 and recipe.quantize.iters == 200

