"""`hubpub init`: a starter recipe and a release workflow that work as written."""

from __future__ import annotations

from pathlib import Path

import click

from ._app import cli


@cli.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", metavar="SOURCE", help="Base model: a Hub repo id or a local folder (default: HuggingFaceTB/SmolLM2-135M-Instruct).")
@click.option("--group-size", type=int, metavar="N", help="Quantization group size (default: the largest of 128/64/32 that fits the model).")
@click.option("--on", "on", type=click.Choice(["runner", "hf-jobs"]), default="runner", show_default=True,
              help="Where the workflow releases: on the GitHub runner, or as Hugging Face Jobs submitted from it.")
@click.option("--action", metavar="OWNER/REPO@REF", help="The hubpub composite action to use (default: this hubpub's git commit).")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init_command(directory: Path, model: str | None, group_size: int | None, on: str, action: str | None, force: bool) -> None:
    """Start a repo that releases models with hubpub: a recipe and a GitHub Actions workflow.

    Writes recipes/model.toml (its group size fits the model; edit repo_id) and
    .github/workflows/hubpub-release.yml (OIDC trusted publishing; HF_TOKEN as fallback), which
    releases every recipes/*.toml when you push a tag like v1.0. With --on hf-jobs the workflow
    (hubpub-release-jobs.yml) submits the releases as Hugging Face Jobs from a CPU runner.
    Existing files are left alone unless --force is given.

    \b
    Example:
      hubpub init my-models
      hubpub init my-models --model Qwen/Qwen2.5-0.5B-Instruct --on hf-jobs
      cd my-models && hubpub check recipes/model.toml
      git tag v1 && git push --tags
    """
    from ..init import init

    result = init(directory, force=force, model=model, group_size=group_size, on=on, action=action)
    for path in result.written:
        click.echo(f"wrote {path}")
    click.echo(f"group_size = {result.group_size} fits {result.model}")
    click.echo(result.next_steps)
