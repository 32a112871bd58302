"""`hubpub push` and `hubpub devhub`."""

from __future__ import annotations

import click

from ._app import RECIPE, cli, load

DEFAULT_TOKEN = "hf_devhub_token"


@cli.command("push")
@RECIPE
@click.option("--tag", default=None, help="Tag for the new commit (default: [push] tag); an existing tag is never moved.")
@click.option("--revision", default=None, metavar="BRANCH", help="Branch to commit to (default: [push] revision, 'main'); created from main when missing.")
@click.option("--create-pr/--no-create-pr", default=None, help="Open a pull request instead of committing to the branch.")
@click.option("--delete-missing/--keep-missing", default=None, help="Delete remote files the release no longer has (default: keep them).")
@click.option("--dry-run", is_flag=True, help="Show the plan (files to add / change / delete, the tag) and write nothing.")
@click.option("--endpoint", default=None, metavar="URL", help="Hub URL (default: HF_ENDPOINT, else https://huggingface.co).")
def push_command(recipe: str, tag: str | None, revision: str | None, create_pr: bool | None,
                 delete_missing: bool | None, dry_run: bool, endpoint: str | None) -> None:
    """Upload the release folder as ONE commit, tag it, and verify the remote copy.

    Refuses a release whose validation failed or whose README.md is older than its metrics.
    The token comes from HF_TOKEN or `hf auth login` and is never printed.

    \b
    Example:
      hubpub push recipes/demo.toml --tag v1
      hubpub push recipes/demo.toml --dry-run --endpoint http://127.0.0.1:8765
    """
    from ..hub import push
    from ..units import human_bytes

    result = push(load(recipe, stage="push"), tag=tag, revision=revision, create_pr=create_pr, delete_missing=delete_missing,
                  dry_run=dry_run, endpoint=endpoint)
    if result.dry_run:
        click.echo("Dry run: nothing was written.")
        for line in result.plan.lines():
            click.echo(line)
        return
    for note in result.notes:
        click.echo(note)
    sent = result.plan.add + result.plan.change
    if result.plan.already_published:
        pass  # the note above said it: the tag already holds this release
    elif result.plan.has_changes:
        click.echo(f"Committed {len(sent)} changed file(s) ({human_bytes(result.bytes_uploaded)}) to {result.repo_url}")
    else:
        click.echo(f"Nothing changed since the last push to {result.repo_url}: no new commit")
    click.echo(f"  commit  {result.commit_url}")
    if result.pr_url:
        click.echo(f"  pull request  {result.pr_url}")
    if result.tag:
        click.echo(f"  tag     {result.tag}")
    click.echo("  verified: remote tree and README.md match the release folder")


@cli.command("devhub")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind (other addresses are refused).")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--data", "data_dir", default=".devhub", show_default=True, type=click.Path(file_okay=False),
              help="Folder that keeps repos, commits and blobs between runs.")
@click.option("--users-file", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Users and tokens, one NAME:TOKEN a line (# comments). Also read: HUBPUB_DEVHUB_USERS"
                   " (NAME:TOKEN entries, comma-separated). Default user: dev:hf_devhub_token.")
@click.option("--user", "users", multiple=True, metavar="NAME:TOKEN",
              help="A user and its token (repeatable; discouraged: `ps` shows it, use --users-file).")
@click.option("--jobs", "jobs", is_flag=True,
              help="Emulate Hugging Face Jobs: run each job's command as a local process (any token holder can then run commands as you).")
@click.option("--max-lfs-size", default="5GiB", show_default=True, metavar="SIZE",
              help="Largest LFS object accepted (bytes, or with KiB/MiB/GiB); bigger uploads are refused with 413.")
def devhub_command(host: str, port: int, data_dir: str, users_file: str | None, users: tuple[str, ...],
                   jobs: bool, max_lfs_size: str) -> None:
    """Run a local Hub-compatible server for rehearsal pushes and tests (loopback only).

    Not a production Hub: no TLS, tokens kept in memory, loopback clients only (docs/devhub.md).

    \b
    Example:
      hubpub devhub --port 8765 --users-file users.txt    # users.txt (chmod 600): alice:<token>
      HUBPUB_DEVHUB_USERS="alice:$TOKEN" hubpub devhub --jobs
      HF_ENDPOINT=http://127.0.0.1:8765 HF_TOKEN=$TOKEN hubpub push recipes/demo.toml
    """
    import re

    from ..devhub import DevHub, DevhubError, load_users
    from ..devhub.users import ARGV_WARNING

    accounts, warnings = load_users(users_file, specs=users)
    if users:
        warnings.insert(0, ARGV_WARNING)
    match = re.fullmatch(r"\s*(\d+)\s*(|B|KiB|MiB|GiB|TiB)\s*", max_lfs_size)
    if not match:
        raise DevhubError(f"--max-lfs-size {max_lfs_size!r}: expected bytes or a size like 512MiB or 5GiB")
    max_lfs = int(match[1]) << {"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[match[2]]
    default = not accounts
    if jobs and default:  # the placeholder token is public: anyone could run commands through devhub
        raise DevhubError("--jobs runs commands for whoever holds a token, and the default dev token is public;"
                          " give users with --users-file FILE or HUBPUB_DEVHUB_USERS")
    accounts = accounts or {"dev": DEFAULT_TOKEN}
    hub = DevHub(data_dir, accounts, host=host, port=port, jobs=jobs, max_lfs_bytes=max_lfs, request_log_limit=10_000)
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"devhub serving {hub.endpoint} (data in {data_dir}); users: {', '.join(accounts)}")
    if jobs:
        click.echo("jobs: enabled; each job runs as a local process of this user, with this Python (docs/devhub.md)")
    click.echo("Use it with:")
    click.echo(f"  export HF_ENDPOINT={hub.endpoint}")
    # the default token is a public placeholder; the tokens given are never echoed
    click.echo(f"  export HF_TOKEN={DEFAULT_TOKEN if default else '<your token from --users-file / HUBPUB_DEVHUB_USERS / --user>'}")
    click.echo("Stop with Ctrl+C.")
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        click.echo("devhub stopped")
