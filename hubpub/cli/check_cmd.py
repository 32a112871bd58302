"""`hubpub check`: check recipes without running anything; every problem of every file."""

from __future__ import annotations

import json

import click

from ._app import cli


@cli.command("check")
@click.argument("recipes", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text", show_default=True,
              help="text: one line per problem; json: a list of {file, line, column, field, message}; "
                   "github: workflow commands that annotate the lines in a pull request")
@click.option("--no-model", is_flag=True,
              help="skip the checks that read the model's config.json (custom code, quantize plan, group size)")
def check_command(recipes: tuple[str, ...], fmt: str, no_model: bool) -> None:
    """Check recipe files: TOML syntax, field names and values, paths, and what the model's
    config.json says (custom code, keep_bf16 patterns, group_size). Runs no model.

    Each problem is one line: file:line: field.path: message (with the fix), then a total.
    Exit code 1 when any file has a problem.

    \b
    Example:
      hubpub check recipes/*.toml
      hubpub check --format json recipes/*.toml > problems.json
    """
    from ..check import check_recipe
    from ..recipe import read_recipe

    all_problems = []
    bad_files = 0
    for path in recipes:
        problems = check_recipe(path, model=not no_model)
        all_problems += problems
        bad_files += bool(problems)
        if fmt != "text":
            continue
        for problem in problems:
            click.echo(str(problem))
        if not problems:
            recipe, _ = read_recipe(path)
            assert recipe is not None
            click.echo(f"{path}: ok - {_summary(recipe)}")
    n = len(recipes)
    if fmt == "json":
        click.echo(json.dumps([p.as_dict() for p in all_problems], indent=2))
    elif fmt == "github":
        for p in all_problems:
            where = f"file={_escape(p.file, True)}" + (f",line={p.line}" if p.line else "") + (f",col={p.column}" if p.column else "")
            title = f",title={_escape(p.field, True)}" if p.field else ""
            click.echo(f"::error {where}{title}::{_escape(str(p), False)}")
    total = (f"{n} file{'s' if n != 1 else ''} checked: {n - bad_files} ok"
             + (f", {bad_files} with {len(all_problems)} problem{'s' if len(all_problems) != 1 else ''}" if bad_files else ""))
    click.echo(total, err=fmt != "text")
    if bad_files:
        click.get_current_context().exit(1)


def _summary(recipe) -> str:  # type: ignore[no-untyped-def]
    q = recipe.quantize
    kind = recipe.model.source_kind(recipe.base_dir)
    split = f", split at {q.split.prefix!r}" if q.split else ""
    return (f"{kind} source {recipe.model.source!r}, {q.method} W{q.bits}A16 group_size {q.group_size} "
            f"{'sym' if q.sym else 'asym'} -> {q.format}{split}; output {recipe.output_path}")


def _escape(value: str, prop: bool) -> str:
    """GitHub workflow-command escaping (properties also escape ':' and ',')."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if prop else value
