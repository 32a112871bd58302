"""Re-runs are no-ops, not errors; a cached push is only reported when the remote confirms it;
the README's main command works the second time (issues #14, #15)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hubpub.recipe import load_recipe
from hubpub.release import STATE_FILE, plan_release, release
from hubserver import ALICE_TOKEN as TOKEN, start_devhub
from test_release import RECIPE

REPO_ID = "alice/tiny-rerun"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def project(tiny_qwen2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerun")
    (folder / "my_templates").mkdir()
    recipe = folder / "recipe.toml"
    recipe.write_text(RECIPE.format(source=tiny_qwen2, group_size=32, repo_id=REPO_ID))
    return recipe


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def _status(result) -> dict[str, str]:
    return {s.stage: s.status for s in result.stages}


def test_cached_push_is_confirmed_on_another_port_and_redone_after_a_wipe(project, tmp_path_factory):
    data = tmp_path_factory.mktemp("hub")
    hub = start_devhub(data)
    try:
        first = release(load_recipe(project), endpoint=hub.endpoint)
        assert first.outcome("push").status == "ran"
    finally:
        hub.stop()

    hub = start_devhub(data)  # the same Hub data on a new port (scripts/demo.sh picks any free port)
    try:
        again = release(load_recipe(project), endpoint=hub.endpoint)
        assert _status(again) == dict.fromkeys(("quantize", "validate", "card", "push"), "cached")
        assert again.repo_url == f"{hub.endpoint}/{REPO_ID}" and again.tag == "v1"
    finally:
        hub.stop()

    shutil.rmtree(data)  # the Hub lost everything: "push cached" would be a lie
    hub = start_devhub(data)
    try:
        plan = plan_release(load_recipe(project), endpoint=hub.endpoint)
        assert [(s.stage, s.status, s.reason) for s in plan][-1] == (
            "push", "would run", f"{REPO_ID} not found at {hub.endpoint}")
        redone = release(load_recipe(project), endpoint=hub.endpoint)
        assert _status(redone)["push"] == "ran"
        assert hub.stats["commits"] == 1
    finally:
        hub.stop()


def test_lost_state_with_the_tag_on_this_release_is_a_no_op_and_a_changed_release_is_refused(project, tmp_path_factory):
    hub = start_devhub(tmp_path_factory.mktemp("hub"))
    try:
        release(load_recipe(project), endpoint=hub.endpoint)
        state = project.parent / "out" / ".tiny.hubpub" / STATE_FILE
        saved = state.read_text()
        # forget only the push: the release folder is the one tag v1 holds
        import json

        data = json.loads(saved)
        del data["stages"]["push"]
        state.write_text(json.dumps(data))
        writes = hub.stats["write_requests"]
        again = release(load_recipe(project), endpoint=hub.endpoint)
        assert again.outcome("push").status == "ran"
        assert again.notes and again.notes[0].startswith("tag v1 already points at this release (")
        assert hub.stats["write_requests"] == writes

        # a changed release (new card text) under the same tag: refused with the fix
        (project.parent / "my_templates" / "README.md.j2").write_text('{% extends "base.md.j2" %}\n')
        from hubpub.errors import PushError

        with pytest.raises(PushError) as err:
            release(load_recipe(project), endpoint=hub.endpoint)
        assert "bump the tag ([push] tag) or pass --tag" in str(err.value)
        assert hub.stats["write_requests"] == writes
        (project.parent / "my_templates" / "README.md.j2").unlink()
    finally:
        hub.stop()


def test_the_readme_main_command_twice(tiny_qwen2, tmp_path):
    """scripts/demo.sh (the README's first command) run twice: the second run is all cached."""
    recipe = tmp_path / "demo.toml"
    recipe.write_text(RECIPE.format(source=tiny_qwen2, group_size=32, repo_id="hubpub-demo/tiny").replace(
        'template_dir = "my_templates"\n', ""))
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(SKIP_INSTALL="1", RECIPE=str(recipe), DATA=str(tmp_path / "devhub-data"), PYTHON=sys.executable)
    runs = [subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
    assert "push      ran in" in runs[0].stdout
    for stage in ("quantize", "validate", "card", "push"):
        assert f"{stage:<9} cached" in runs[1].stdout, runs[1].stdout
    assert "published: http://127.0.0.1:" in runs[1].stdout and "(tag v1)" in runs[1].stdout


def test_previous_tag_reads_the_history_from_the_target_repo(project, tmp_path_factory):
    """[card] previous_tag: the v2 card compares with the v1 release read back from the Hub."""
    hub = start_devhub(tmp_path_factory.mktemp("hub"))
    try:
        release(load_recipe(project), endpoint=hub.endpoint)  # v1 on the remote
        v2 = project.parent / "v2.toml"
        v2.write_text(project.read_text().replace('tag = "v1"', 'tag = "v2"').replace(
            "[card]\n", '[card]\nprevious_tag = "v1"\n').replace('output_dir = "out/tiny"', 'output_dir = "out/tiny-v2"'))
        result = release(load_recipe(v2), endpoint=hub.endpoint, push=False)
        assert result.outcome("card").status == "ran"
        card = (project.parent / "out" / "tiny-v2" / "README.md").read_text()
        assert "## v2 update (vs v1)" in card
        assert "| | v1 | v2 | Δ |" in card
    finally:
        hub.stop()
