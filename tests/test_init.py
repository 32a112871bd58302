"""`hubpub init`: a starter recipe and a release workflow, never overwriting without --force."""

from __future__ import annotations

from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.init import scaffold_text
from hubpub.recipe import load_recipe

RECIPE = "recipes/model.toml"
WORKFLOW = ".github/workflows/hubpub-release.yml"


def test_init_writes_recipe_and_workflow(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    repo = tmp_path / "repo"
    assert f"wrote {repo / RECIPE}" in result.output
    assert f"wrote {repo / WORKFLOW}" in result.output
    assert (repo / WORKFLOW).read_text() == scaffold_text("hubpub-release.yml")
    recipe = load_recipe(repo / RECIPE)  # the starter recipe is valid as written
    assert recipe.push.repo_id == "your-name/SmolLM2-135M-Instruct-int4-AutoRound"
    assert recipe.model.source_kind(recipe.base_dir) == "hub"
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [WORKFLOW, RECIPE]


def test_init_refuses_to_overwrite(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / RECIPE).write_text("mine\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output == f"Error: {tmp_path / RECIPE}: already exists; pass --force to overwrite it, or move it away\n"
    assert (tmp_path / RECIPE).read_text() == "mine\n"
    assert not (tmp_path / WORKFLOW).exists()  # nothing half-written


def test_init_force_overwrites(tmp_path):
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text("old\n")
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / WORKFLOW).read_text() == scaffold_text("hubpub-release.yml")
    assert load_recipe(tmp_path / RECIPE).quantize.bits == 4


def test_init_on_a_file_is_an_error(tmp_path):
    target = tmp_path / "afile"
    target.write_text("x")
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code == 2  # click: DIRECTORY must be a folder
    assert "is a file" in result.output
