"""`hubpub release`: the real stages on the tiny Qwen2, pushed over real HTTP to a devhub server.

One release folder and one server serve the whole module; the tests run in file order, each
one starting from the state the previous one left (first release, cached re-run, template
edit, dry run, --from/--until, group_size change).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.hub._client import hub_client
from hubpub.recipe import load_recipe
from hubpub.release import STATE_FILE, release
from hubserver import ALICE_TOKEN as TOKEN, start_devhub
from recipe_parts import FAST_VALIDATE

REPO_ID = "alice/tiny-int4"

RECIPE = """\
output_dir = "out/tiny"

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
batch_size = 4
device = "cpu"

""" + FAST_VALIDATE + """
[card]
template_dir = "my_templates"
summary = "A tiny test release."
base_model = "test-org/tiny-qwen2"
license = "apache-2.0"

[push]
repo_id = "{repo_id}"
tag = "v1"
"""


@pytest.fixture(scope="module")
def project(tiny_qwen2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("project")
    (folder / "my_templates").mkdir()
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE.format(source=tiny_qwen2, group_size=32, repo_id=REPO_ID))
    return recipe


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = start_devhub(tmp_path_factory.mktemp("hubdata"))
    yield server
    server.stop()


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def _user_template(project: Path, line: str) -> None:
    """The user's README.md.j2: the built-in card plus one line after the license."""
    (project.parent / "my_templates" / "README.md.j2").write_text(
        '{% extends "base.md.j2" %}\n{% block license %}{{ super() }}\n' + line + "\n{% endblock %}\n"
    )


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["release", *args])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _status(result) -> dict[str, str]:
    return {s.stage: s.status for s in result.stages}


def test_first_release_runs_every_stage_and_tags(project, hub, token):
    result = _run([str(project), "--endpoint", hub.endpoint])
    assert result.exit_code == 0, result.output
    out = project.parent / "out" / "tiny"
    for stage in ("quantize", "validate", "card", "push"):
        assert f"{stage:<9} ran in" in result.output
    assert f"published: {hub.endpoint}/{REPO_ID} (tag v1)" in result.output
    assert "Disk size (weights)" in result.output and "Perplexity" in result.output
    assert TOKEN not in result.output

    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    with hub_client(hub.endpoint):
        refs = api.list_repo_refs(REPO_ID)
        remote = {f.path: f.size for f in api.list_repo_tree(REPO_ID, revision="v1", recursive=True) if hasattr(f, "size")}
    assert [t.name for t in refs.tags] == ["v1"]
    local = {k: len(v) for k, v in _snapshot(out).items() if not any(p.startswith(".") for p in k.split("/"))}
    remote.pop(".gitattributes")  # the Hub (and devhub) create it with the repo
    assert remote == local
    assert {"README.md", "hubpub_manifest.json", "hubpub_metrics.json", "hubpub_recipe.toml", "config.json"} <= set(remote)
    assert hub.stats["commits"] == 1

    state = json.loads((project.parent / "out" / ".tiny.hubpub" / STATE_FILE).read_text())
    assert sorted(state["stages"]) == ["card", "push", "quantize", "validate"]
    assert state["stages"]["push"]["info"]["tag"] == "v1"


def test_rerun_with_nothing_changed_is_all_cached(project, hub, token):
    before = dict(hub.stats)
    result = release(load_recipe(project), endpoint=hub.endpoint, progress=False)
    assert _status(result) == {"quantize": "cached", "validate": "cached", "card": "cached", "push": "cached"}
    # a cached push asks the remote whether the tag still holds the pushed commit, and writes nothing
    assert hub.stats["write_requests"] == before["write_requests"]
    assert [(r.method, r.path) for r in hub.requests[before["requests"]:]] == [("GET", f"/api/models/{REPO_ID}/refs")]
    assert result.repo_url == f"{hub.endpoint}/{REPO_ID}"
    assert result.tag == "v1"
    assert [row.key for row in result.headline][:3] == ["weight_bytes", "resident_bytes", "peak_memory_bytes"]


def test_template_edit_reruns_only_card_and_push(project, hub, token):
    _user_template(project, "Released by the test suite.")
    before = dict(hub.stats)

    result = release(load_recipe(project), endpoint=hub.endpoint, tag="v2", progress=False)

    assert _status(result) == {"quantize": "cached", "validate": "cached", "card": "ran", "push": "ran"}
    assert result.outcome("card").reason == "inputs changed"
    assert hub.stats["lfs_puts"] == before["lfs_puts"]  # 0 weight bytes re-sent
    assert hub.stats["lfs_bytes"] == before["lfs_bytes"]
    assert hub.stats["commits"] == before["commits"] + 1
    sent = sorted(f.path for f in result.plan.add + result.plan.change)
    # plots are byte-identical (same numbers); the edited template travels with the release
    assert sent == ["README.md", "hubpub_inputs/my_templates/README.md.j2"]
    from huggingface_hub import hf_hub_download

    with hub_client(hub.endpoint):
        readme = hf_hub_download(REPO_ID, "README.md", revision="v2", endpoint=hub.endpoint, token=TOKEN, cache_dir=project.parent / "dl")
    assert Path(readme).read_text().rstrip().endswith("Released by the test suite.")


def test_dry_run_writes_nothing_and_sends_no_write(project, hub, token):
    _user_template(project, "Released again.")
    files_before = _snapshot(project.parent)
    writes_before = hub.stats["write_requests"]

    result = _run([str(project), "--endpoint", hub.endpoint, "--tag", "v3", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "card      would run (inputs changed)" in result.output
    assert "push      would run (after card)" in result.output
    assert "Dry run: nothing was written or uploaded." in result.output
    assert _snapshot(project.parent) == files_before
    assert hub.stats["write_requests"] == writes_before


def test_dry_run_shows_the_push_plan_when_the_folder_is_current(project, hub, token):
    release(load_recipe(project), until_stage="card", progress=False)  # README.md now current
    writes_before = hub.stats["write_requests"]
    result = _run([str(project), "--endpoint", hub.endpoint, "--tag", "v3", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "push      would run (inputs changed)" in result.output
    assert f"repo {hub.endpoint}/{REPO_ID} (exists, public), revision main" in result.output
    assert "  change  README.md" in result.output
    assert "  commit: a new commit on main (parent " in result.output
    assert "  tag v3: will be created on the new commit" in result.output
    assert hub.stats["write_requests"] == writes_before


def test_wrong_token_fails_at_push_and_the_rerun_pushes_only(project, hub, monkeypatch):
    wrong = "hf_wrong_token_0123456789"
    monkeypatch.setenv("HF_TOKEN", wrong)
    result = _run([str(project), "--endpoint", hub.endpoint, "--tag", "v3"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: {hub.endpoint} rejected the token (401): it is invalid or expired;"
        " set HF_TOKEN to a valid write token or run `hf auth login`"
    )
    assert wrong not in result.output

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    again = release(load_recipe(project), endpoint=hub.endpoint, tag="v3", progress=False)
    assert _status(again) == {"quantize": "cached", "validate": "cached", "card": "cached", "push": "ran"}
    assert again.tag == "v3" and again.plan.bytes_to_send > 0


def test_until_and_from(project, hub, token):
    recipe = load_recipe(project)
    until = release(recipe, until_stage="validate", endpoint=hub.endpoint, progress=False)
    assert _status(until) == {"quantize": "cached", "validate": "cached", "card": "skipped", "push": "skipped"}
    assert until.outcome("card").reason == "--until validate"

    again = release(recipe, from_stage="card", push=False, progress=False)
    assert _status(again) == {"quantize": "skipped", "validate": "skipped", "card": "ran", "push": "skipped"}
    assert again.outcome("card").reason == "--from card"
    assert again.outcome("push").reason == "--no-push"
    assert again.repo_url is None  # nothing was published by this run


def test_force_runs_cached_stages(project, token):
    result = release(load_recipe(project), until_stage="card", force=True, dry_run=True, progress=False)
    assert [(s.stage, s.status, s.reason) for s in result.stages] == [
        ("quantize", "would run", "--force"),
        ("validate", "would run", "after quantize"),
        ("card", "would run", "after validate"),
        ("push", "skipped", "--until card"),
    ]


def test_group_size_change_reruns_everything(project, hub, token, tiny_qwen2):
    project.write_text(RECIPE.format(source=tiny_qwen2, group_size=64, repo_id=REPO_ID))
    result = release(load_recipe(project), push=False, progress=False)
    assert _status(result) == {"quantize": "ran", "validate": "ran", "card": "ran", "push": "skipped"}
    assert result.outcome("quantize").reason == "inputs changed"
    manifest = json.loads((project.parent / "out" / "tiny" / "hubpub_manifest.json").read_text())
    assert manifest["group_size"] == 64
    # the published recipe is portable: the template folder travels inside the release, output_dir is dropped
    published = (project.parent / "out" / "tiny" / "hubpub_recipe.toml").read_text()
    assert published == project.read_text().replace('output_dir = "out/tiny"\n\n', "").replace(
        'template_dir = "my_templates"', 'template_dir = "hubpub_inputs/my_templates"').replace(
        f'source = "{tiny_qwen2}"', f'source = "{tiny_qwen2}" # local, not published (folder)')
    assert (project.parent / "out" / "tiny" / "hubpub_inputs" / "my_templates" / "README.md.j2").is_file()


def test_deleted_output_reruns_its_stage(project, token):
    out = project.parent / "out" / "tiny"
    (out / "README.md").unlink()
    result = release(load_recipe(project), push=False, progress=False)
    assert _status(result) == {"quantize": "cached", "validate": "cached", "card": "ran", "push": "skipped"}
    assert result.outcome("card").reason == "README.md changed or missing"


def test_failed_validation_stops_before_card_and_push(project, hub, token):
    # a gate the quantized model cannot meet (RTN W4 raises perplexity by more than 0.0001 %)
    project.write_text(project.read_text().replace("[[eval]]", "[validate.gates]\nmax_ppl_increase = 0.000001\n\n[[eval]]"))
    card_before = (project.parent / "out" / "tiny" / "README.md").read_bytes()
    writes_before = hub.stats["write_requests"]
    result = _run([str(project), "--endpoint", hub.endpoint, "--tag", "v4"])
    assert result.exit_code == 1
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: validation failed:") and "max_ppl_increase" in last, result.output
    assert str(project.parent / "out" / "tiny" / "hubpub_metrics.json") in last
    assert "validate  running... (inputs changed)" in result.output
    assert "card      " not in result.output  # stopped at validate
    assert hub.stats["write_requests"] == writes_before
    assert (project.parent / "out" / "tiny" / "README.md").read_bytes() == card_before
    metrics = json.loads((project.parent / "out" / "tiny" / "hubpub_metrics.json").read_text())
    assert metrics["passed"] is False


# ----------------------------------------------------------------------------- bad input
def test_from_a_stage_whose_inputs_are_missing(write_recipe, tiny_qwen2):
    recipe = write_recipe(RECIPE.format(source=tiny_qwen2, group_size=32, repo_id=REPO_ID))
    (recipe.parent / "my_templates").mkdir()
    result = _run([str(recipe), "--from", "card", "--no-push"])
    assert result.exit_code == 1
    manifest = recipe.parent / "out" / "tiny" / "hubpub_manifest.json"
    assert result.output == (
        f"Error: {manifest}: missing, so --from card cannot start there; run `hubpub release {recipe}`"
        " without --from (or --from quantize)\n"
    )
    assert not (recipe.parent / "out").exists()


def test_from_after_until_is_refused(write_recipe, tiny_qwen2):
    recipe = write_recipe(RECIPE.format(source=tiny_qwen2, group_size=32, repo_id=REPO_ID))
    result = _run([str(recipe), "--from", "push", "--no-push"])
    assert result.exit_code == 1
    assert result.output == "Error: --from push comes after the last stage to run (card); pick a --from at or before it\n"
    result = _run([str(recipe), "--from", "publish"])
    assert result.exit_code == 2
    assert "'publish' is not a stage; use one of quantize, validate, card, push" in result.output


def test_missing_recipe(tmp_path):
    result = _run([str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / 'nope.toml'}: file not found; pass the path of a recipe .toml file (see recipes/ for examples)\n"


def test_corrupt_state_file_means_run_again(project, token):
    state = project.parent / "out" / ".tiny.hubpub" / STATE_FILE
    state.write_text("{not json")
    result = release(load_recipe(project), push=False, dry_run=True, progress=False)
    assert [(s.stage, s.status, s.reason) for s in result.stages] == [
        ("quantize", "would run", "first run"),
        ("validate", "would run", "after quantize"),
        ("card", "would run", "after validate"),
        ("push", "skipped", "--no-push"),
    ]
    assert state.read_text() == "{not json"  # a dry run writes nothing, not even the state
