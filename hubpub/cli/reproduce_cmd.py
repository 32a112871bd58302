"""`hubpub reproduce REPO[@REVISION]`: re-run a published release from its own recipe and compare."""

from __future__ import annotations

from pathlib import Path

import click

from ._app import cli


@cli.command("reproduce")
@click.argument("target", metavar="REPO[@REVISION]")
@click.option("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Report folder (default: ./reproduce-<name>).")
@click.option("--source", type=click.Path(exists=True, path_type=Path),
              help="The base model's local folder or .gguf, when the recipe names a local path that is not on this machine.")
@click.option("--tolerance", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Relative tolerance for measured quantities (perplexity, KL, top-1, similarity).")
def reproduce_command(target: str, endpoint: str | None, out: Path | None, source: Path | None, tolerance: float) -> None:
    """Re-run a published hubpub release from its own recipe and say whether its numbers hold.

    Downloads hubpub_recipe.toml, hubpub_manifest.json and hubpub_metrics.json, warns about
    library versions that differ, re-runs quantize + validate into a scratch folder (nothing is
    pushed) and writes report.md + report.json: every metric published vs reproduced, and
    whether the weight files are byte-identical (sha256). Exit 0 when it reproduces, 1 if not.

    \b
    Example:
      hubpub reproduce hubpub-demo/SmolLM2-135M-Instruct-W4A16@v1
      hubpub reproduce alice/tiny-w4 --endpoint http://127.0.0.1:8765 --out /tmp/repro
    """
    from ..errors import HubpubError
    from ..reproduce import reproduce

    def show(event) -> None:  # type: ignore[no-untyped-def]
        message = getattr(event, "message", None)
        if message:
            prefix = "warning: " if getattr(event, "level", "") == "warning" else ""
            click.echo(f"{prefix}{message}", err=True)

    result = reproduce(target, endpoint=endpoint, out=out, source=source, tolerance=tolerance, events=show)
    judged = [m for m in result.metrics if m.within is not None]
    click.echo(f"metrics: {sum(bool(m.within) for m in judged)}/{len(judged)} within tolerance"
               f" ({len(result.metrics) - len(judged)} machine-dependent, not judged)")
    same = sum(f.identical for f in result.files)
    click.echo(f"weights: {same}/{len(result.files)} files byte-identical ({result.weights_rule})")
    click.echo(f"report: {result.report_md}")
    if not result.reproduced:
        raise HubpubError(f"{result.repo_id}@{result.revision} does not reproduce: {'; '.join(result.failures()[:3])}"
                          f"{' ...' if len(result.failures()) > 3 else ''} (see {result.report_md})")
    click.echo(f"{result.repo_id}@{result.revision} reproduces")
