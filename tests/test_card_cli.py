"""`hubpub card` / `hubpub templates export`: customization, sandbox and bad input, via the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import card_fixtures as fx
from hubpub.artifacts import MANIFEST, METRICS
from hubpub.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def release(tmp_path) -> Path:
    return fx.causal_release(tmp_path)


def user_templates(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text, encoding="utf-8")
    return folder


def assert_fails_cleanly(result, message: str, readme: Path, before: str | None) -> None:
    """Exit 1, one line naming the problem, README.md untouched, no temp file left behind."""
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: {message}\n"
    assert (readme.read_text(encoding="utf-8") if readme.exists() else None) == before
    assert not [p.name for p in readme.parent.glob(".README.md.*")]


def test_card_command_writes_readme_and_plots(release):
    result = run("card", str(release))
    readme = release.parent / "out" / "README.md"
    assert result.exit_code == 0, result.output
    lines = len(readme.read_text(encoding="utf-8").splitlines())
    assert lines > 100 and result.stdout == f"Wrote {readme} ({lines} lines, 3 plots)\n"
    assert sorted(p.name for p in (readme.parent / "assets").iterdir()) == ["latency.png", "memory.png", "size.png"]


def test_override_by_name_and_extends_with_blocks(release, tmp_path):
    folder = user_templates(
        tmp_path / "tpl",
        README__md__j2='{% extends "base.md.j2" %}\n{% block caveats %}## Read this first\n\n{{ super() }}{% endblock %}\n'
        "{% block credits %}{% endblock %}\n",
        _samples__md__j2="## My samples\n\n{% for s in samples %}- {{ s.quantized }}\n{% endfor %}\n",
    )
    result = run("card", str(release), "--template-dir", str(folder))
    assert result.exit_code == 0, result.output
    text = (release.parent / "out" / "README.md").read_text()
    assert "## Read this first\n\n## Caveats\n\n- Calibrated on English prose only" in text
    assert "## Credits" not in text
    assert "## My samples\n\n- 2, 3, 5.\n" in text and "## Samples (side by side)" not in text
    assert "## TL;DR" in text  # blocks not overridden come from the built-in base


def test_template_dir_from_recipe_is_relative_to_it(tmp_path):
    recipe = fx.causal_release(tmp_path, card_extra='template_dir = "my_tpl"\n')
    user_templates(tmp_path / "my_tpl", README__md__j2="# {{ title }} ({{ quant.scheme }})\n")
    result = run("card", str(recipe))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "README.md").read_text().endswith("---\n\n# Qwen2.5-0.5B-Instruct AutoRound W4A16 (W4A16)\n")


def test_sandbox_refuses_python_internals(release, tmp_path):
    readme = release.parent / "out" / "README.md"
    readme.write_text("old card\n")
    folder = user_templates(tmp_path / "tpl", README__md__j2="# Card\n\n{{ ''.__class__.__mro__ }}\n")
    result = run("card", str(release), "--template-dir", str(folder))
    assert_fails_cleanly(
        result,
        f"card template {folder}/README.md.j2, line 3: access to attribute '__class__' of 'str' object is unsafe."
        " (card templates are sandboxed)",
        readme,
        "old card\n",
    )


def test_misspelt_variable_names_template_line_and_variable(release, tmp_path):
    folder = user_templates(tmp_path / "tpl", README__md__j2='{% extends "base.md.j2" %}\n{% block title %}\n# {{ titel }}\n{% endblock %}\n')
    result = run("card", str(release), "--template-dir", str(folder))
    assert_fails_cleanly(
        result,
        f"card template {folder}/README.md.j2, line 3: 'titel' is undefined;"
        " check the spelling (variables are listed in the built-in base.md.j2)",
        release.parent / "out" / "README.md",
        None,
    )


def test_template_syntax_error_names_file_and_line(release, tmp_path):
    folder = user_templates(tmp_path / "tpl", _tldr__md__j2="## TL;DR\n{% for row in tldr %}\n| {{ row.label }} |\n")
    result = run("card", str(release), "--template-dir", str(folder))
    assert_fails_cleanly(
        result,
        f"card template {folder}/_tldr.md.j2, line 3: syntax error: Unexpected end of template."
        " Jinja was looking for the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.;"
        " fix the template",
        release.parent / "out" / "README.md",
        None,
    )


def test_missing_manifest_says_run_quantize(release):
    out = release.parent / "out"
    (out / MANIFEST).unlink()
    result = run("card", str(release))
    assert_fails_cleanly(result, f"{out / MANIFEST} not found; run `hubpub quantize RECIPE` first", out / "README.md", None)


def test_missing_metrics_says_run_validate(release):
    out = release.parent / "out"
    (out / "README.md").write_text("kept\n")
    (out / METRICS).unlink()
    result = run("card", str(release))
    assert_fails_cleanly(result, f"{out / METRICS} not found; run `hubpub validate RECIPE` first", out / "README.md", "kept\n")


def test_stale_metrics_are_refused(release):
    out = release.parent / "out"
    manifest = fx.causal_manifest()
    manifest.recipe_hash = "changed"
    manifest.write(out / MANIFEST)
    result = run("card", str(release))
    assert_fails_cleanly(
        result,
        f"{out / METRICS}: measured on another checkpoint (recipe_hash differs from {MANIFEST}); run `hubpub validate RECIPE` again",
        out / "README.md",
        None,
    )


def test_template_dir_that_does_not_exist(release, tmp_path):
    missing = tmp_path / "nope"
    result = run("card", str(release), "--template-dir", str(missing))
    assert_fails_cleanly(
        result,
        f"--template-dir: template folder '{missing}' not found; create it, e.g. `hubpub templates export {missing}`",
        release.parent / "out" / "README.md",
        None,
    )


def test_unknown_license_id(tmp_path):
    recipe = fx.causal_release(tmp_path, card_extra='license = "apache2"\n')
    result = run("card", str(recipe))
    assert_fails_cleanly(
        result,
        f"{recipe}: card.license: unknown license id 'apache2'; did you mean 'apache-2.0'?"
        " use a Hub license id (https://huggingface.co/docs/hub/repositories-licenses)",
        tmp_path / "out" / "README.md",
        None,
    )


def test_inherit_without_a_license_in_the_base_card(release):
    base_readme = release.parent / "base" / "README.md"
    base_readme.write_text("---\nlanguage: en\n---\n# no license here\n")
    result = run("card", str(release))
    assert_fails_cleanly(
        result,
        f'{base_readme}: the base model\'s card names no license; set license = "<Hub license id>" in [card] of {release}',
        release.parent / "out" / "README.md",
        None,
    )


def test_previous_folder_without_metrics(release, tmp_path):
    previous = tmp_path / "v0"
    previous.mkdir()
    result = run("card", str(release), "--previous", str(previous))
    assert_fails_cleanly(
        result,
        f"{previous / METRICS} not found; the previous release folder needs hubpub_metrics.json and hubpub_recipe.toml",
        release.parent / "out" / "README.md",
        None,
    )


def test_templates_export_refuses_overwrite_unless_forced(release, tmp_path):
    folder = tmp_path / "exported"
    first = run("templates", "export", str(folder))
    assert first.exit_code == 0, first.output
    names = sorted(p.name for p in folder.iterdir())
    assert "README.md.j2" in names and "base.md.j2" in names
    assert first.stdout == f"Exported {len(names)} templates to {folder}\n"

    (folder / "README.md.j2").write_text("mine\n")
    again = run("templates", "export", str(folder))
    assert again.exit_code == 1
    assert again.stderr == f"Error: {folder / 'README.md.j2'}: already exists; pass --force to overwrite the built-in templates there\n"
    assert (folder / "README.md.j2").read_text() == "mine\n"

    forced = run("templates", "export", str(folder), "--force")
    assert forced.exit_code == 0 and (folder / "README.md.j2").read_text() != "mine\n"

    # the exported copy renders exactly the built-in card
    builtin = run("card", str(release))
    text = (release.parent / "out" / "README.md").read_text()
    custom = run("card", str(release), "--template-dir", str(folder))
    assert builtin.exit_code == custom.exit_code == 0
    assert (release.parent / "out" / "README.md").read_text() == text


@pytest.mark.parametrize("command", [["card"], ["templates"], ["templates", "export"]])
def test_help_has_an_example(command):
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert re.search(r"Example:\n +hubpub ", result.output)


def test_local_source_without_base_model_id(release):
    text = release.read_text().replace('base_model = "Qwen/Qwen2.5-0.5B-Instruct"\n', "")
    release.write_text(text)
    result = run("card", str(release))
    assert_fails_cleanly(
        result,
        f"{release}:{text.splitlines().index('[card]') + 1}: card.base_model: not set and the source 'base' is not a Hub repo;"
        ' set base_model = "org/name" in [card] so the card links the model it was quantized from',
        release.parent / "out" / "README.md",
        None,
    )
