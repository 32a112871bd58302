"""[[variant]] families: bad input, the recommend rule, and a real 2-variant family on the tiny
Qwen2 released to devhub (base measured once, cross-linked cards, family README, template edit
re-sends no weights)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.errors import RecipeError, ReleaseError
from hubpub.recipe import load_recipe
from hubpub.variants import expand_variants, parse_pick, parse_rule, select_variants
from hubpub.validate import base_cache
from hubserver import ALICE_TOKEN as TOKEN, start_devhub

HEAD = """\
output_dir = "out/fam"

[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "rtn"
bits = 4
group_size = 32
iters = 0
nsamples = 4
seqlen = 32
device = "cpu"
"""


def test_unknown_variant_field_names_it_with_its_line(write_recipe):
    path = write_recipe(HEAD.format(source="tiny") + '\n[[variant]]\nname = "a"\n\n[[variant]]\nname = "b"\ngroup_sise = 64\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}:21: variant[1].group_sise: unknown field; did you mean 'group_size'? (a variant overrides [quantize] fields, or [push] ones in [variant.push])"


def test_bad_override_value_and_duplicate_names(write_recipe):
    path = write_recipe(HEAD.format(source="tiny") + '\n[[variant]]\nname = "a"\nbits = 5\n')
    with pytest.raises(RecipeError, match=r"recipe.toml:18: variant\[0\]\.bits: must be 2, 3, 4 or 8 \(got 5\)"):
        load_recipe(path)
    path = write_recipe(HEAD.format(source="tiny") + '\n[[variant]]\nname = "a"\n\n[[variant]]\nname = "A"\n')
    with pytest.raises(RecipeError, match=r"recipe.toml:20: variant\[1\]\.name: variant name 'A' is used by variant\[0\] too"):
        load_recipe(path)
    path = write_recipe(HEAD.format(source="tiny") + '\n[[variant]]\nname = "../up"\n')
    with pytest.raises(RecipeError, match=r"variant\[0\]\.name: must be a folder name"):
        load_recipe(path)


def test_variants_expand_to_plain_recipes_in_their_folders(write_recipe, tmp_path):
    path = write_recipe(HEAD.format(source="tiny") + '\n[[variant]]\nname = "g32"\n\n[[variant]]\nname = "g64"\ngroup_size = 64\nsym = false\n'
                        '[variant.push]\nrepo_id = "alice/tiny-g64"\n')
    recipe = load_recipe(path)
    g32, g64 = expand_variants(recipe)
    assert (g32.quantize.group_size, g64.quantize.group_size, g64.quantize.sym) == (32, 64, False)
    assert g32.output_path == recipe.output_path / "g32" and g64.output_path == recipe.output_path / "g64"
    assert g64.push.repo_id == "alice/tiny-g64" and not g64.variants
    assert g32.base_dir == recipe.base_dir and g32._shared_work == recipe.work_path
    assert [r.output_path for r in select_variants(recipe, "g64")] == [g64.output_path]
    with pytest.raises(ReleaseError, match="--variant g65: .* has no such variant; did you mean 'g64'"):
        select_variants(recipe, "g65")


def test_rules_parse_and_pick_without_eval():
    rule = parse_rule("smallest where top1_agreement >= 0.9 and kl <= 0.2")
    rows = [{"name": "a", "size_mb": 3.0, "top1_agreement": 0.95, "kl": 0.1},
            {"name": "b", "size_mb": 2.0, "top1_agreement": 0.85, "kl": 0.1},
            {"name": "c", "size_mb": 2.5, "top1_agreement": 0.92, "kl": None}]
    assert rule.pick(rows)["name"] == "a"  # b misses top-1, c has no KL
    assert parse_rule("highest top1").pick(rows)["name"] == "a"
    assert parse_pick("max_size_mb=2.2,min_top1=0.8").pick(rows)["name"] == "b"
    assert parse_pick("max_size_mb=1").pick(rows) is None
    assert [r["name"] for r in parse_pick("max_size_mb=1").closest(rows, 2)] == ["b", "c"]
    for bad in ("smallest where __import__('os')", "biggest", "smallest where kl ~ 1"):
        with pytest.raises(ValueError):
            parse_rule(bad)


FAMILY = HEAD + """
[validate]
device = "cpu"
max_new_tokens = 4
warmup_runs = 0
latency_runs = 1

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 32
max_samples = 2

[card]
template_dir = "tpl"
base_model = "test-org/tiny-qwen2"
license = "apache-2.0"

[family]
recommend = "smallest where top1_agreement >= 0.0"

[push]
repo_id = "alice/tiny-g32"
tag = "v1"

[[variant]]
name = "g32"

[[variant]]
name = "g64-asym"
group_size = 64
sym = false
[variant.push]
repo_id = "alice/tiny-g64-asym"
"""


@pytest.fixture(scope="module")
def family(tiny_qwen2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("family")
    (folder / "tpl").mkdir()
    path = folder / "recipe.toml"
    path.write_text(FAMILY.format(source=tiny_qwen2))
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = start_devhub(tmp_path_factory.mktemp("hubdata"))
    yield server
    server.stop()


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def test_family_release_measures_base_once_and_cross_links(family, hub, token):
    result = CliRunner().invoke(cli, ["release", str(family), "--endpoint", hub.endpoint])
    assert result.exit_code == 0, result.output
    out = family.parent / "out" / "fam"
    recipe = load_recipe(family)
    assert len(list(base_cache.cache_dir(recipe).iterdir())) == 1  # one base measurement for the family
    # the base worker ran for the first variant only; the second reused its measurement
    assert (out / ".g32.hubpub" / "validate-base.log").is_file()
    assert not (out / ".g64-asym.hubpub" / "validate-base.log").exists()
    table = json.loads((out / "hubpub_family.json").read_text())
    rows = {r["name"]: r for r in table["rows"]}
    assert set(rows) == {"g32", "g64-asym"}
    # the numbers are each variant's own measurements
    for name in rows:
        metrics = json.loads((out / name / "hubpub_metrics.json").read_text())
        assert rows[name]["size_bytes"] == metrics["quantized"]["weight_bytes"]
    smallest = min(rows.values(), key=lambda r: r["size_mb"])["name"]
    assert table["recommended"] == smallest
    family_readme = (out / "README.md").read_text()
    assert f"[g32]({hub.endpoint}/alice/tiny-g32)" in family_readme
    assert f"[g64-asym]({hub.endpoint}/alice/tiny-g64-asym)" in family_readme
    g32_card = (out / "g32" / "README.md").read_text()
    assert "**g32** (this one)" in g32_card and f"[g64-asym]({hub.endpoint}/alice/tiny-g64-asym)" in g32_card
    g64_card = (out / "g64-asym" / "README.md").read_text()
    assert "**g64-asym** (this one)" in g64_card and f"[g32]({hub.endpoint}/alice/tiny-g32)" in g64_card
    assert "W4 g64 asym" in g64_card and "✅ recommended" in g64_card

    from huggingface_hub import HfApi

    from hubpub.hub._client import hub_client

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with hub_client(hub.endpoint):
        for repo in ("alice/tiny-g32", "alice/tiny-g64-asym"):
            assert "README.md" in api.list_repo_files(repo, revision="v1")


def test_family_rerun_after_template_edit_sends_no_weights(family, hub, token):
    (family.parent / "tpl" / "README.md.j2").write_text('{% extends "base.md.j2" %}\n{% block license %}{{ super() }}\nEdited.\n{% endblock %}\n')
    before = dict(hub.stats)
    result = CliRunner().invoke(cli, ["release", str(family), "--endpoint", hub.endpoint, "--tag", "v2"])
    assert result.exit_code == 0, result.output
    assert "quantize  ran" not in result.output and "validate  ran" not in result.output
    assert result.output.count("card      ran") == 2
    assert hub.stats["lfs_puts"] == before["lfs_puts"] and hub.stats["lfs_bytes"] == before["lfs_bytes"]
    assert hub.stats["commits"] == before["commits"] + 2


def test_one_variant_with_flag(family, hub, token):
    result = CliRunner().invoke(cli, ["release", str(family), "--variant", "g32", "--no-push"])
    assert result.exit_code == 0, result.output
    assert "variant g32" in result.output and "variant g64-asym" not in result.output
    bad = CliRunner().invoke(cli, ["release", str(family), "--variant", "nope", "--no-push"])
    assert bad.exit_code == 1 and "--variant nope:" in bad.output and "no such variant" in bad.output
