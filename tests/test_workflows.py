"""Every GitHub Actions file we ship passes actionlint: this repo's workflows, action.yml,
and the workflow `hubpub init` writes into a user's repo."""

from __future__ import annotations

import os

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


def test_init_workflow_passes(actionlint):
    text = scaffold_text("hubpub-release.yml")
    assert actionlint({"hubpub-release.yml": text}) == {"hubpub-release.yml": []}


def test_init_workflow_releases_every_recipe_on_version_tags():
    workflow = yaml.safe_load(scaffold_text("hubpub-release.yml"))
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # YAML 1.1 reads the key `on` as True
    release = workflow["jobs"]["release"]
    assert release["strategy"]["matrix"]["recipe"] == "${{ fromJSON(needs.recipes.outputs.recipes) }}"
    step = next(s for s in release["steps"] if s.get("name") == "hubpub release")
    assert step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    assert step["run"] == 'hubpub release "$RECIPE" --tag "$TAG"'
    install = next(s for s in release["steps"] if s.get("name", "").startswith("Install torch"))["run"]
    assert 'pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu' in install
    from hubpub import __version__

    assert f'pip install "hubpub=={__version__}"' in install
    assert "@" not in install.replace("@v", "")  # no placeholder left
    assert "HF_OIDC_RESOURCE" in scaffold_text("hubpub-release.yml")


def test_action_passes(actionlint):
    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) >= {"recipe", "hubpub-version", "python-version", "endpoint", "args"}
    # composite run steps must name their shell, or GitHub refuses the action
    assert all("shell" in step for step in action["runs"]["steps"] if "run" in step)
    as_workflow = _actionlint.action_as_workflow(action)
    assert actionlint({"action.yml": as_workflow}) == {"action.yml": []}


def test_action_lint_catches_an_unknown_input(actionlint):
    action = yaml.safe_load((REPO / "action.yml").read_text())
    action["runs"]["steps"][0]["with"]["python-version"] = "${{ inputs.pyhton-version }}"
    problems = actionlint({"action.yml": _actionlint.action_as_workflow(action)})["action.yml"]
    assert len(problems) == 1 and 'property "pyhton-version" is not defined' in problems[0]["message"]


def test_action_installs_cpu_torch_then_hubpub():
    action = yaml.safe_load((REPO / "action.yml").read_text())
    install = action["runs"]["steps"][1]["run"]
    assert install.index("--index-url https://download.pytorch.org/whl/cpu") < install.index('"hubpub==$HUBPUB_VERSION"')
    assert "hubpub \"${args[@]}\"" in action["runs"]["steps"][2]["run"]
