"""Every GitHub Actions file we ship passes actionlint: this repo's workflows, action.yml,
and the workflow `hubpub init` writes into a user's repo."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

import _actionlint
from hubpub.init import scaffold_text

REPO = _actionlint.REPO


@pytest.fixture(scope="module")
def actionlint():
    reason = _actionlint.missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"actionlint must run in CI: {reason}")
        pytest.skip(reason)
    return _actionlint.lint


def test_actionlint_reports_a_broken_workflow(actionlint):
    broken = (
        "on:\n  push:\n    tags: ['v*']\n"
        "jobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - run: echo ${{ github.ref_nam }}\n"
    )
    problems = actionlint({"broken.yml": broken})["broken.yml"]
    assert [(p["line"], p["kind"]) for p in problems] == [(8, "expression")]
    assert 'property "ref_nam" is not defined' in problems[0]["message"]


def test_repo_workflows_pass(actionlint):
    files = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert REPO / ".github" / "workflows" / "ci.yml" in files
    results = actionlint({str(f.relative_to(REPO)): f.read_text() for f in files})
    assert results == {str(f.relative_to(REPO)): [] for f in files}


def test_ci_runs_the_ci_script():
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    runs = [step.get("run", "") for job in ci["jobs"].values() for step in job["steps"]]
    assert "bash .ci/run" in runs


def test_init_workflows_pass(actionlint):
    texts = {name: scaffold_text(name) for name in ("hubpub-release.yml", "hubpub-release-jobs.yml")}
    assert actionlint(texts) == {name: [] for name in texts}


def test_init_workflow_releases_every_recipe_on_version_tags_with_oidc():
    text = scaffold_text("hubpub-release.yml")
    workflow = yaml.safe_load(text)
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as True
    release = workflow["jobs"]["release"]
    assert release["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.recipes.outputs.recipes) }}"
    assert release["permissions"] == {"contents": "read", "id-token": "write"}  # OIDC trusted publishing
    step = next(s for s in release["steps"] if s.get("name") == "hubpub release")
    assert step["env"] == {"HF_OIDC_RESOURCE": "${{ matrix.repo }}", "HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    assert step["with"] == {"recipe": "${{ matrix.recipe }}", "tag": "${{ github.ref_name }}"}
    # hubpub through the project's composite action at a pinned ref, never from a package index
    assert re.fullmatch(r"[\w.-]+/[\w.-]+@([0-9a-f]{40}|v[\d.]+)", step["uses"])
    assert "pip install" not in text and "hubpub==" not in text
    assert "@" not in text.replace(step["uses"], "").replace("@v", "")  # no placeholder left


def test_init_recipe_listing_reads_each_recipes_repo(tmp_path):
    """The `recipes` job's script, run for real: one matrix row per recipe, with its repo_id."""
    import subprocess
    import sys

    script = yaml.safe_load(scaffold_text("hubpub-release.yml"))["jobs"]["recipes"]["steps"][1]["run"]
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "a.toml").write_text('[model]\nsource = "x/y"\n[push]\nrepo_id = "me/a"\n')
    (tmp_path / "recipes" / "b.toml").write_text('[model]\nsource = "x/y"\n')
    out = tmp_path / "github_output"
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env={"GITHUB_OUTPUT": str(out), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}, check=True)
    assert out.read_text() == 'recipes=[{"recipe": "recipes/a.toml", "repo": "me/a"}, {"recipe": "recipes/b.toml", "repo": ""}]\n'


def test_init_jobs_workflow_submits_every_recipe_from_a_cpu_runner():
    workflow = yaml.safe_load(scaffold_text("hubpub-release-jobs.yml"))
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    step = job["steps"][-1]
    assert step["with"] == {"recipe": "recipes/*.toml", "tag": "${{ github.ref_name }}", "run-on": "hf-jobs"}
    assert step["env"] == {"HF_TOKEN": "${{ secrets.HF_TOKEN }}"}


def test_action_passes(actionlint):
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) >= {"recipe", "python-version", "endpoint", "args", "run-on", "flavor", "timeout"}
    assert "hubpub-version" not in action["inputs"]  # no version that no index has
    # composite run steps must name their shell, or GitHub refuses the action
    assert all("shell" in step for step in action["runs"]["steps"] if "run" in step)
    as_workflow = _actionlint.action_as_workflow(action)
    assert actionlint({"action.yml": as_workflow}) == {"action.yml": []}


def test_action_lint_catches_an_unknown_input(actionlint):
    action = yaml.safe_load((REPO / "action.yml").read_text())
    action["runs"]["steps"][0]["with"]["python-version"] = "${{ inputs.pyhton-version }}"
    problems = actionlint({"action.yml": _actionlint.action_as_workflow(action)})["action.yml"]
    assert len(problems) == 1 and 'property "pyhton-version" is not defined' in problems[0]["message"]


def test_action_installs_cpu_torch_then_its_own_hubpub():
    action = yaml.safe_load((REPO / "action.yml").read_text())
    install = action["runs"]["steps"][1]["run"]
    assert install.index("--index-url https://download.pytorch.org/whl/cpu") < install.index('-c "$ACTION_PATH/constraints.txt" "$ACTION_PATH"')
    assert "hubpub==" not in install
    run = action["runs"]["steps"][2]["run"]
    assert 'args=(release "${recipes[@]}" --on "$ON")' in run and 'hubpub "${args[@]}"' in run
