"""`hubpub reproduce REPO[@REVISION]`: re-run a published release from its own recipe and compare."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._app import cli


@cli.command("reproduce")
@click.argument("target", metavar="REPO[@REVISION]")
@click.option("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default: ./reproduce-<name>).")
@click.option("--source", type=click.Path(exists=True, path_type=Path),
              help="The base model's local folder or .gguf, when the recipe names a local path that is not on this machine"
                   " (--on hf-jobs: it travels with the job).")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Relative tolerance for measured quantities (perplexity, KL, top-1, similarity).")
@click.option("--on", "on", type=click.Choice(["local", "hf-jobs"]), default="local", show_default=True,
              help="Where to re-run: here, or as a Hugging Face Job (the report comes back here).")
@click.option("--flavor", metavar="NAME", help="--on hf-jobs: hardware flavor (default: the published recipe's [jobs] flavor).")
@click.option("--timeout", metavar="DURATION", help="--on hf-jobs: stop the job after this long, e.g. 2h, 90m (default: the recipe's).")
def reproduce_command(target: str, endpoint: str | None, out: Path | None, source: Path | None, tolerance: float,
                      on: str, flavor: str | None, timeout: str | None) -> None:
    """Re-run a published hubpub release from its own recipe and say whether its numbers hold.

    Downloads hubpub_recipe.toml, hubpub_manifest.json and hubpub_metrics.json, warns about
    library versions that differ, re-runs quantize + validate into a scratch folder (nothing is
    pushed) and writes report.md + report.json: every metric published vs reproduced, and
    whether the weight files are byte-identical (sha256). Exit 0 when it reproduces, 1 if not.

    With --on hf-jobs the re-run is a Hugging Face Job (with the library versions the release
    was made with); its log streams here, Ctrl-C asks whether to cancel it, and the report it
    uploads to your private staging repo is downloaded to the report folder.

    \b
    Example:
      hubpub reproduce hubpub-demo/SmolLM2-135M-Instruct-W4A16@v1
      hubpub reproduce alice/tiny-w4 --endpoint http://127.0.0.1:8765 --out /tmp/repro
      hubpub reproduce alice/model-w4@v1 --on hf-jobs --flavor a10g-small --timeout 1h
    """
    from ..errors import HubpubError
    from ..reproduce import reproduce, summary

    if on == "hf-jobs":
        from .jobs_cmd import reproduce_on_jobs

        return reproduce_on_jobs(target, endpoint=endpoint, out=out, source=source, tolerance=tolerance, flavor=flavor,
                                 timeout=timeout)
    if flavor or timeout:
        raise click.UsageError("--flavor and --timeout need --on hf-jobs")

    def show(event) -> None:  # type: ignore[no-untyped-def]
        message = getattr(event, "message", None)
        if message:
            prefix = "warning: " if getattr(event, "level", "") == "warning" else ""
            click.echo(f"{prefix}{message}", err=True)

    result = reproduce(target, endpoint=endpoint, out=out, source=source, tolerance=tolerance, events=show)
    lines, failure = summary(json.loads(result.report_json.read_text(encoding="utf-8")), result.report_md)
    click.echo("\n".join(lines))
    if failure:
        raise HubpubError(failure)
    click.echo(f"{result.repo_id}@{result.revision} reproduces")
