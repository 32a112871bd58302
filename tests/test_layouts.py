"""[push] layout for a [[variant]] family: bad layouts are refused before any work; a real
2-variant family on the tiny Qwen2 (built once: quantize and validate stay cached while only the
layout changes) published to devhub with the real huggingface_hub client in each layout, files
where the layout says, links pointing at them, re-runs no-ops, the size-vs-quality plot beside
the table, and a v2 of the family (group_size changed) with a v1 -> v2 history in every card."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe
from hubpub.variants import expand_variants, layout_error, layout_problems, targets
from hubserver import ALICE_TOKEN as TOKEN, start_devhub

HEAD = """\
output_dir = "out/fam"

[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "rtn"
bits = 4
group_size = {group_size}
iters = 0
nsamples = 4
seqlen = 32
device = "cpu"
"""


def _recipe(write_recipe, push: str, variants: str):
    return load_recipe(write_recipe(HEAD.format(source="tiny", group_size=32) + "\n[push]\n" + push + "\n" + variants))


def test_repos_layout_refuses_two_variants_in_one_repo(write_recipe):
    recipe = _recipe(write_recipe, 'repo_id = "alice/one"\ntag = "v1"', '[[variant]]\nname = "a"\n\n[[variant]]\nname = "b"\ngroup_size = 64\n')
    with pytest.raises(RecipeError) as err:
        layout_error(recipe)
    assert str(err.value) == (
        f"{recipe.path}:23: variant[1].name: variant 'b' and variant[0] ('a') would both publish to alice/one@main"
        ' (layout "repos" gives each variant its own repo); give it its own [variant.push] repo_id, or set'
        ' [push] layout = "subfolders" or "branches"')
    # the same family in one repo's branches or subfolders is fine: each variant gets its own path
    for layout in ("branches", "subfolders"):
        ok = _recipe(write_recipe, f'repo_id = "alice/one"\ntag = "v1"\nlayout = "{layout}"',
                     '[[variant]]\nname = "a"\n\n[[variant]]\nname = "b"\ngroup_size = 64\n')
        assert layout_problems(ok) == []
    branches = _recipe(write_recipe, 'repo_id = "alice/one"\ntag = "v1"\nlayout = "branches"',
                       '[[variant]]\nname = "a"\n\n[[variant]]\nname = "b"\n[variant.push]\nrevision = "feature"\n')
    assert [(t["revision"], t["tag"]) for t in targets(branches)] == [("a", "a-v1"), ("feature", "b-v1")]
    a, b = expand_variants(branches)
    assert (a.push.revision, a.push.tag, b.push.revision, b.push.tag) == ("a", "a-v1", "feature", "b-v1")


def test_branches_and_subfolders_collisions_name_the_field(write_recipe):
    same_branch = _recipe(write_recipe, 'repo_id = "alice/one"\nlayout = "branches"',
                          '[[variant]]\nname = "a"\n\n[[variant]]\nname = "b"\n[variant.push]\nrevision = "a"\n')
    (field, message), = layout_problems(same_branch)
    assert field == "variant[1].push.revision" and "would both publish to alice/one@a" in message
    same_tag = _recipe(write_recipe, 'repo_id = "alice/one"\nlayout = "branches"',
                       '[[variant]]\nname = "a"\n[variant.push]\ntag = "v1"\n\n[[variant]]\nname = "b"\n[variant.push]\ntag = "v1"\n')
    (field, message), = layout_problems(same_tag)
    assert field == "variant[1].push.tag" and "would both tag alice/one@v1" in message
    own_repo = _recipe(write_recipe, 'repo_id = "alice/one"\nlayout = "subfolders"',
                       '[[variant]]\nname = "a"\n[variant.push]\nrepo_id = "alice/a"\n')
    (field, message), = layout_problems(own_repo)
    assert field == "variant[0].push.repo_id" and "pushed as one commit" in message
    root = _recipe(write_recipe, 'repo_id = "alice/one"\nlayout = "subfolders"', '[[variant]]\nname = "assets"\n')
    (field, message), = layout_problems(root)
    assert field == "variant[0].name" and "family README keeps its own files" in message


def test_bad_layouts_exit_1_before_any_work(write_recipe):
    path = write_recipe(HEAD.format(source="tiny", group_size=32) + '\n[push]\nrepo_id = "alice/one"\n\n'
                        '[[variant]]\nname = "a"\n\n[[variant]]\nname = "b"\n')
    result = CliRunner().invoke(cli, ["release", str(path), "--endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {path}:23: variant[1].name: variant 'b' and variant[0] ('a') would both publish to alice/one@main"
        ' (layout "repos" gives each variant its own repo); give it its own [variant.push] repo_id, or set'
        ' [push] layout = "subfolders" or "branches"')
    assert not (path.parent / "out").exists()  # nothing built
    checked = CliRunner().invoke(cli, ["check", "--no-model", str(path)])
    assert checked.exit_code == 1 and "variant[1].name: variant 'b' and variant[0] ('a') would both publish" in checked.output
    bad = write_recipe(HEAD.format(source="tiny", group_size=32) + '\n[push]\nlayout = "folders"\n')
    with pytest.raises(RecipeError, match=r"recipe.toml:17: push.layout: must be 'repos', 'subfolders' or 'branches'"):
        load_recipe(bad)
    moved = write_recipe(HEAD.format(source="tiny", group_size=32) + '\n[[variant]]\nname = "a"\n[variant.push]\nlayout = "branches"\n')
    with pytest.raises(RecipeError, match=r"variant\[0\]\.push\.layout: the layout is the family's: set layout under \[push\]"):
        load_recipe(moved)


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
base_model = "test-org/tiny-qwen2"
license = "apache-2.0"
{card}
[family]
recommend = "smallest where top1_agreement >= 0.0"

[push]
repo_id = "alice/{repo}"
tag = "{tag}"
layout = "{layout}"

[[variant]]
name = "w4"

[[variant]]
name = "w4-g64-asym"
group_size = 64
sym = false
{asym_push}
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = start_devhub(tmp_path_factory.mktemp("hubdata"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def folder(tiny_qwen2, tmp_path_factory):
    return tmp_path_factory.mktemp("layouts")


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def write(folder, tiny_qwen2, *, layout: str, repo: str, tag: str = "v1", group_size: int = 32, previous: str | None = None):
    asym_push = f'[variant.push]\nrepo_id = "alice/{repo}-asym"\n' if layout == "repos" else ""
    card = f'previous_tag = "{previous}"\n' if previous else ""
    path = folder / "recipe.toml"
    path.write_text(FAMILY.format(source=tiny_qwen2, group_size=group_size, layout=layout, repo=repo, tag=tag, card=card,
                                  asym_push=asym_push))
    return path


def release(path, hub, *extra):
    result = CliRunner().invoke(cli, ["release", str(path), "--endpoint", hub.endpoint, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def api_for(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=TOKEN)


def files(hub, repo, revision):
    from hubpub.hub._client import hub_client

    with hub_client(hub.endpoint):
        return set(api_for(hub).list_repo_files(repo, revision=revision))


def refs(hub, repo):
    from hubpub.hub._client import hub_client

    with hub_client(hub.endpoint):
        r = api_for(hub).list_repo_refs(repo)
    return {b.name for b in r.branches}, {t.name for t in r.tags}


def test_repos_layout_with_plot_and_noop_rerun(folder, tiny_qwen2, hub, token):
    path = write(folder, tiny_qwen2, layout="repos", repo="tiny")
    release(path, hub)
    out = folder / "out" / "fam"
    for repo, card in (("alice/tiny", out / "w4" / "README.md"), ("alice/tiny-asym", out / "w4-g64-asym" / "README.md")):
        assert {"README.md", "assets/variants.png", "hubpub_metrics.json"} <= files(hub, repo, "v1")
        text = card.read_text()
        assert "![File size vs Top-1 agreement of every variant, Pareto front marked](assets/variants.png)" in text
    assert (out / "assets" / "variants.png").read_bytes() == (out / "w4" / "assets" / "variants.png").read_bytes()
    assert (out / "assets" / "variants.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    family = json.loads((out / "hubpub_family.json").read_text())
    # the front is what sweep.pareto says of the measured rows: no front variant is dominated
    rows = {r["name"]: r for r in family["rows"]}
    assert family["plot"]["metric"] == "top1_agreement" and set(family["plot"]["front"]) == {n for n, r in rows.items() if r["pareto"]}
    smallest = min(rows.values(), key=lambda r: r["size_mb"])["name"]
    assert smallest in family["plot"]["front"]
    assert f"[w4-g64-asym]({hub.endpoint}/alice/tiny-asym)" in (out / "w4" / "README.md").read_text()
    before = dict(hub.stats)
    again = release(path, hub)
    assert hub.stats["commits"] == before["commits"] and hub.stats["lfs_puts"] == before["lfs_puts"]
    assert again.count("push      cached") == 2


def test_subfolders_layout_is_one_commit(folder, tiny_qwen2, hub, token):
    path = write(folder, tiny_qwen2, layout="subfolders", repo="tiny-family")
    dry = CliRunner().invoke(cli, ["release", str(path), "--endpoint", hub.endpoint, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"one commit to {hub.endpoint}/alice/tiny-family@main, tag v1" in dry.output
    assert f"w4-g64-asym/ -> {hub.endpoint}/alice/tiny-family@main/w4-g64-asym/" in dry.output
    assert "w4/hubpub_metrics.json" in dry.output  # every file of every subfolder
    before = dict(hub.stats)
    output = release(path, hub)
    assert hub.stats["commits"] == before["commits"] + 1  # the whole family, one commit
    assert "quantize  ran" not in output and "validate  ran" not in output  # only the layout changed
    remote = files(hub, "alice/tiny-family", "v1")
    out = folder / "out" / "fam"
    for name in ("w4", "w4-g64-asym"):
        local = {p.relative_to(out / name).as_posix() for p in (out / name).rglob("*") if p.is_file() and not p.name.startswith(".")}
        assert {f"{name}/{p}" for p in local} <= remote
    assert {"README.md", "hubpub_family.json", "assets/variants.png"} <= remote
    readme = (out / "README.md").read_text()
    for name in ("w4", "w4-g64-asym"):
        link = f"{hub.endpoint}/alice/tiny-family/tree/main/{name}"
        assert f"[{name}]({link})" in readme and f"{name}/README.md" in remote
    asym_card = (out / "w4-g64-asym" / "README.md").read_text()
    assert f"[w4]({hub.endpoint}/alice/tiny-family/tree/main/w4)" in asym_card
    assert 'from_pretrained("alice/tiny-family", subfolder="w4-g64-asym")' in asym_card
    # and the usage snippet loads it from there
    assert 'AutoModelForCausalLM.from_pretrained(repo, subfolder="w4-g64-asym", device_map="auto")' in asym_card
    assert "family published:" in output and "(tag v1)" in output
    before = dict(hub.stats)
    again = release(path, hub)
    assert hub.stats["commits"] == before["commits"] and hub.stats["lfs_puts"] == before["lfs_puts"]
    assert "tag v1 already points at this release" in again


def test_branches_layout_branch_per_variant(folder, tiny_qwen2, hub, token):
    path = write(folder, tiny_qwen2, layout="branches", repo="tiny-branches")
    output = release(path, hub)
    branches, tags = refs(hub, "alice/tiny-branches")
    assert {"main", "w4", "w4-g64-asym"} <= branches and {"w4-v1", "w4-g64-asym-v1"} <= tags
    for name in ("w4", "w4-g64-asym"):
        assert {"README.md", "hubpub_metrics.json", "assets/variants.png"} <= files(hub, "alice/tiny-branches", f"{name}-v1")
    assert {"README.md", "hubpub_family.json"} <= files(hub, "alice/tiny-branches", "main")
    out = folder / "out" / "fam"
    w4_card = (out / "w4" / "README.md").read_text()
    assert f"[w4-g64-asym]({hub.endpoint}/alice/tiny-branches/tree/w4-g64-asym)" in w4_card
    assert 'from_pretrained("alice/tiny-branches", revision="w4")' in w4_card
    assert 'AutoModelForCausalLM.from_pretrained(repo, revision="w4", device_map="auto")' in w4_card
    assert f"[w4]({hub.endpoint}/alice/tiny-branches/tree/w4)" in (out / "README.md").read_text()
    assert "family published:" in output
    before = dict(hub.stats)
    release(path, hub)
    assert hub.stats["commits"] == before["commits"]


def _history(card: str) -> str:
    assert " update (vs " in card, card
    return card.split(" update (vs ", 1)[1].split("\n## ", 1)[0]


def test_v2_of_the_family_shows_v1_to_v2_per_variant(folder, tiny_qwen2, hub, token):
    out = folder / "out" / "fam"
    # subfolders: the previous release of each variant is read from its folder at tag v1
    path = write(folder, tiny_qwen2, layout="subfolders", repo="tiny-family", tag="v2", group_size=16, previous="v1")
    output = release(path, hub)
    assert output.count("quantize  ran") == 1  # only w4 changed (its group_size comes from [quantize])
    w4, asym = (out / "w4" / "README.md").read_text(), (out / "w4-g64-asym" / "README.md").read_text()
    assert "quantize.group_size" in _history(w4) and "32" in _history(w4) and "16" in _history(w4)
    assert "v1" in _history(w4) and "v2" in _history(w4)
    assert "quantize.group_size" not in _history(asym) and "v1" in _history(asym)
    assert "w4/README.md" in files(hub, "alice/tiny-family", "v2")
    # branches: from the tag of each variant's branch (w4-v1), no rebuild
    path = write(folder, tiny_qwen2, layout="branches", repo="tiny-branches", tag="v2", group_size=16, previous="v1")
    output = release(path, hub)
    assert "quantize  ran" not in output
    w4 = (out / "w4" / "README.md").read_text()
    assert "quantize.group_size" in _history(w4) and "w4-v1" in _history(w4)
    assert {"w4-v2", "w4-g64-asym-v2"} <= refs(hub, "alice/tiny-branches")[1]
