"""`hubpub jobs status|logs|cancel|list|flavors ID`, and `hubpub release ... --on hf-jobs` (release_on_jobs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ._app import cli, load

if TYPE_CHECKING:
    from ..hub.jobs import JobClient, JobOutcome, Submitted

ENDPOINT = click.option("--endpoint", metavar="URL", help="Hub endpoint (default: HF_ENDPOINT, else https://huggingface.co).")
CANCEL_WAIT = 30.0  # seconds to wait for a canceled job to stop, so that none is left running unseen
NAMESPACE = click.option("--namespace", metavar="NAME", help="User or org the job runs under (default: the token's user).")


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    # in a log (CI) tables are wide enough that ids and URLs stay whole
    return console if console.is_terminal else Console(highlight=False, soft_wrap=True, width=200)


def _client(endpoint: str | None, namespace: str | None) -> JobClient:
    from ..hub.jobs import JobClient

    return JobClient(endpoint, namespace)


# ----------------------------------------------------------------------------- release --on hf-jobs
def release_on_jobs(
    recipe_paths: tuple[str, ...] | list[str],
    *,
    flavor: str | None,
    timeout: str | None,
    detach: bool,
    endpoint: str | None,
    tag: str | None,
    push: bool,
    force: bool,
    until_stage: str | None,
    from_stage: str | None,
    dry_run: bool,
) -> None:
    """Submit each recipe's release as a Hugging Face Job, stream the logs, print the results."""
    from ..hub import jobs

    if from_stage:
        raise click.UsageError("--from cannot be used with --on hf-jobs: a job starts from an empty folder, so it runs every stage")
    console = _console()
    recipes = [load(path) for path in recipe_paths]  # every recipe is checked before anything is sent
    for recipe in recipes:
        jobs._check_before_submit(recipe, push, until_stage)
        jobs.local_inputs(recipe)
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise click.UsageError(f"two recipes have the same file name ({', '.join(sorted(n for n in names if names.count(n) > 1))}); rename one")
    if len(recipes) > 1:  # token, flavor and timeout of every recipe, before any job starts
        for recipe in recipes:
            jobs.settings(recipe, endpoint=endpoint, flavor=flavor, timeout=timeout)

    def notice(event: Any) -> None:
        console.print(f"[dim]{event.message}[/dim]")

    submitted: list[Submitted] = []
    try:
        for recipe in recipes:
            got = jobs.submit(recipe, endpoint=endpoint, flavor=flavor, timeout=timeout, tag=tag, push=push, force=force,
                              until_stage=until_stage, dry_run=dry_run, events=notice)
            if dry_run:
                console.print(f"[yellow]Dry run: would submit {recipe.name} as a job:[/yellow]")
                console.print("\n".join(f"  {line}" for line in got.describe()), markup=False)  # type: ignore[union-attr]
            else:
                submitted.append(got)  # type: ignore[arg-type]
    except BaseException:
        # a later recipe failed to submit: no job the user did not get to see is left running
        if submitted:
            client = _client(endpoint, submitted[0].namespace)
            for job in submitted:
                client.cancel(job.job_id, wait=CANCEL_WAIT)
                console.print(f"canceled job {job.job_id} ({job.recipe.name}): another recipe could not be submitted")
        raise
    if dry_run or not submitted:
        return
    if detach:
        for job in submitted:
            console.print(f"{job.recipe.name}: job {job.job_id}  {job.url}", markup=False)
        console.print(f"follow: hubpub jobs logs {submitted[0].job_id} --follow", markup=False)
        return

    client = _client(endpoint, submitted[0].namespace)
    ids = [job.job_id for job in submitted]
    try:
        if len(submitted) == 1:
            job = submitted[0]
            outcomes: list[Any] = [client.follow(job.job_id, on_line=lambda line: click.echo(line), timeout=job.timeout)]
        else:
            width = max(len(job.recipe.name) for job in submitted)
            outcomes = jobs.follow_many(client, submitted, on_line=lambda job, line: click.echo(f"{job.recipe.name:<{width}} | {line}"))
    except KeyboardInterrupt:
        _interrupted(client, ids)
        return
    if len(submitted) == 1:
        outcome = outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        _print_job_summary(console, outcome)
        if not outcome.ok:
            raise jobs.JobsError(_failure(outcome))
        return
    failed = _print_matrix(console, submitted, outcomes)
    if failed:
        raise jobs.JobsError(f"{failed} of {len(submitted)} jobs failed: see the table above (full logs: hubpub jobs logs ID)")


# ----------------------------------------------------------------------------- reproduce --on hf-jobs
def reproduce_on_jobs(target: str, *, endpoint: str | None, out: Path | None, source: Path | None, tolerance: float,
                      flavor: str | None, timeout: str | None) -> None:
    """Submit the reproduction as a Job, stream its log, bring its report back, exit with its result."""
    from ..errors import HubpubError
    from ..hub import jobs
    from ..reproduce import default_out, parse_target, summary

    repo, _ = parse_target(target)
    console = _console()
    job = jobs.submit_reproduce(target, endpoint=endpoint, flavor=flavor, timeout=timeout, source=source, tolerance=tolerance,
                                events=lambda event: console.print(f"[dim]{event.message}[/dim]"))
    client = _client(endpoint, job.namespace)  # type: ignore[union-attr]
    try:
        outcome = client.follow(job.job_id, on_line=lambda line: click.echo(line), timeout=job.timeout)  # type: ignore[union-attr]
    except KeyboardInterrupt:
        _interrupted(client, [job.job_id])  # type: ignore[union-attr]
        return
    console.print(f"job {outcome.job_id}: {outcome.stage}  {outcome.url}", markup=False)
    out_dir = out or default_out(repo)
    got = jobs.fetch_report(job, outcome, out_dir, endpoint=client.endpoint, token=client.token)  # type: ignore[arg-type]
    if not got:
        raise jobs.JobsError(outcome.error() if not outcome.ok else
                             f"job {outcome.job_id} ended without uploading a report; full log: hubpub jobs logs {outcome.job_id}")
    data = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    lines, failure = summary(data, out_dir / "report.md")
    click.echo("\n".join(lines))
    if failure:
        raise HubpubError(failure)
    if not outcome.ok:
        raise jobs.JobsError(outcome.error())
    click.echo(f"{data.get('repo_id')}@{data.get('revision')} reproduces (job {outcome.job_id})")


def _failure(outcome: JobOutcome) -> str:
    if outcome.stage == "COMPLETED" and outcome.result:
        return f"job {outcome.job_id}: the release inside it failed (exit {outcome.result.get('exit_code')}); see its log above"
    return outcome.error()


def _interrupted(client: JobClient, ids: list[str]) -> None:
    which = ", ".join(ids)
    cancel = True
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            cancel = click.confirm(f"\nCancel job{'s' if len(ids) > 1 else ''} {which}?", default=True)
        except (click.Abort, EOFError, KeyboardInterrupt):
            cancel = True
    if cancel:
        for job_id in ids:
            client.cancel(job_id, wait=CANCEL_WAIT)
        click.echo(f"canceled job{'s' if len(ids) > 1 else ''} {which}", err=True)
    else:
        click.echo(f"job{'s' if len(ids) > 1 else ''} {which} still running; follow with: hubpub jobs logs {ids[0]} --follow", err=True)
    click.get_current_context().exit(130)


def _print_job_summary(console, outcome: JobOutcome) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from ..units import human_duration

    result = outcome.result or {}
    if result.get("headline"):
        table = Table(title=f"Release of {result.get('recipe')} (job {outcome.job_id})", title_justify="left")
        for column in ("", "base", "quantized", "change"):
            table.add_column(column, justify="right" if column else "left")
        for row in result["headline"]:
            table.add_row(*[str(c) for c in row])
        console.print(table)
    took = f" in {human_duration(outcome.seconds)}" if outcome.seconds is not None else ""
    console.print(f"job {outcome.job_id}: {outcome.stage}{took}  {outcome.url}", markup=False)
    if result.get("repo_url"):
        tag = f" (tag {result['tag']})" if result.get("tag") else ""
        console.print(f"[bold]published: {result['repo_url']}{tag}[/bold]")
        if result.get("commit_url"):
            console.print(f"commit: {result['commit_url']}", markup=False)


def _print_matrix(console, submitted: list[Submitted], outcomes: list[Any]) -> int:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from ..units import human_duration

    table = Table(title="Releases on Hugging Face Jobs", title_justify="left")
    for column in ("recipe", "job", "flavor", "status", "took", "weights", "result"):
        table.add_column(column, no_wrap=column != "result")
    failed = 0
    for job, outcome in zip(submitted, outcomes):
        if isinstance(outcome, Exception):
            failed += 1
            table.add_row(job.recipe.name, job.job_id, job.flavor, "error", "-", "-", str(outcome))
            continue
        result = outcome.result or {}
        size = next((row[3] for row in result.get("headline", []) if "size" in str(row[0]).lower()), "-")
        if outcome.ok:
            where = result.get("repo_url", "not pushed")
            where += f" @ {result['tag']}" if result.get("tag") else ""
        else:
            failed += 1
            where = _failure(outcome)
        status = outcome.stage if outcome.ok else f"[red]{outcome.stage if not outcome.result else 'FAILED'}[/red]"
        table.add_row(job.recipe.name, job.job_id, job.flavor, status, human_duration(outcome.seconds), size, where)
    console.print(table)
    return failed


# ----------------------------------------------------------------------------- hubpub jobs ...
@cli.group("jobs")
def jobs_group() -> None:
    """Look after releases running on Hugging Face Jobs (`hubpub release R --on hf-jobs`).

    \b
    Example:
      hubpub release recipes/demo.toml --on hf-jobs --flavor a10g-small --detach
      hubpub jobs status 6870...
      hubpub jobs logs 6870... --follow
      hubpub jobs cancel 6870...
    """


@jobs_group.command("status")
@click.argument("job_id")
@ENDPOINT
@NAMESPACE
def status_command(job_id: str, endpoint: str | None, namespace: str | None) -> None:
    """Show a job's stage, flavor, timings and URL.

    \b
    Example:
      hubpub jobs status 687fb701029421ae5549d998
    """
    info = _client(endpoint, namespace).inspect(job_id)
    stage = getattr(info.status.stage, "value", info.status.stage)
    lines = [f"job {info.id}: {stage}" + (f" ({info.status.message})" if info.status.message else ""),
             f"flavor: {getattr(info.flavor, 'value', info.flavor)}", f"image: {info.docker_image or info.space_id}"]
    for label, when in (("created", info.created_at), ("started", info.started_at), ("finished", info.finished_at)):
        if when:
            lines.append(f"{label}: {when.isoformat(timespec='seconds')}")
    if info.durations and info.durations.running_secs is not None:
        lines.append(f"running: {info.durations.running_secs} s")
    if info.labels:
        lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(info.labels.items())))
    lines.append(f"url: {info.url}")
    click.echo("\n".join(lines))


@jobs_group.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--tail", type=int, metavar="N", help="Only the last N lines.")
@ENDPOINT
@NAMESPACE
def logs_command(job_id: str, follow: bool, tail: int | None, endpoint: str | None, namespace: str | None) -> None:
    """Print a job's log (Ctrl-C stops following; the job keeps running).

    \b
    Example:
      hubpub jobs logs 687fb701029421ae5549d998 --follow
    """
    from ..hub.jobs import RESULT_PREFIX

    try:
        for line in _client(endpoint, namespace).logs(job_id, follow=follow, tail=tail):
            if not line.startswith(RESULT_PREFIX):
                click.echo(line)
    except KeyboardInterrupt:
        click.echo(f"stopped following; job {job_id} is still running (hubpub jobs cancel {job_id} stops it)", err=True)


@jobs_group.command("cancel")
@click.argument("job_id")
@ENDPOINT
@NAMESPACE
def cancel_command(job_id: str, endpoint: str | None, namespace: str | None) -> None:
    """Cancel a running job.

    \b
    Example:
      hubpub jobs cancel 687fb701029421ae5549d998
    """
    stage = _client(endpoint, namespace).cancel(job_id, wait=CANCEL_WAIT)
    click.echo(f"canceled job {job_id}" + ("" if stage in (None, "CANCELED") else f" (it is {stage})"))


@jobs_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every job of the namespace, not only hubpub's.")
@ENDPOINT
@NAMESPACE
def list_command(show_all: bool, endpoint: str | None, namespace: str | None) -> None:
    """List the namespace's hubpub jobs (newest first).

    \b
    Example:
      hubpub jobs list
    """
    infos = _client(endpoint, namespace).list()
    infos = [i for i in infos if show_all or "hubpub" in (i.labels or {})]
    infos.sort(key=lambda i: i.created_at.timestamp() if i.created_at else 0, reverse=True)
    for info in infos:
        stage = getattr(info.status.stage, "value", info.status.stage)
        recipe = (info.labels or {}).get("recipe", "-")
        when = info.created_at.isoformat(timespec="seconds") if info.created_at else "-"
        click.echo(f"{info.id}  {stage:<10} {getattr(info.flavor, 'value', info.flavor) or '-':<12} {recipe:<24} {when}")
    if not infos:
        click.echo("no hubpub jobs" + ("" if show_all else " (--all lists every job)"))


@jobs_group.command("flavors")
@ENDPOINT
def flavors_command(endpoint: str | None) -> None:
    """List the Jobs hardware flavors and their price, as the Hub reports them.

    \b
    Example:
      hubpub jobs flavors
    """
    listed, from_api = _client(endpoint, None).flavors()
    if not from_api:
        click.echo("the endpoint lists no hardware; flavors huggingface_hub knows (no prices): " + ", ".join(listed))
        return
    for hw in listed:
        accel = f"{hw.accelerator.quantity} x {hw.accelerator.model} {hw.accelerator.vram}" if hw.accelerator else "-"
        per_hour = hw.unit_cost_usd * {"minute": 60, "second": 3600, "hour": 1}.get(hw.unit_label, 0)
        price = f"${per_hour:.2f}/h" if per_hour else f"{hw.unit_cost_usd} USD/{hw.unit_label}"
        click.echo(f"{hw.name:<16} {hw.pretty_name:<28} {hw.cpu:<9} {hw.ram:<7} {accel:<22} {price}")


@jobs_group.command("run-bundle", hidden=True)
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def run_bundle_command(job_file: Path) -> None:
    """Inside a job: run the bundled release and print its result line (used by the job's bootstrap).

    \b
    Example:
      hubpub jobs run-bundle hubpub-job/job.json
    """
    from ..hub.jobs import RESULT_PREFIX, run_bundle

    code, result = run_bundle(job_file)
    click.echo(RESULT_PREFIX + json.dumps(result, sort_keys=True))
    sys.exit(code)
