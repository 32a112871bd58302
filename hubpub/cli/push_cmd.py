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

    result = push(load(recipe), tag=tag, revision=revision, create_pr=create_pr, delete_missing=delete_missing,
                  dry_run=dry_run, endpoint=endpoint)
    if result.dry_run:
        click.echo("Dry run: nothing was written.")
        for line in result.plan.lines():
            click.echo(line)
        return
    sent = result.plan.add + result.plan.change
    if result.plan.has_changes:
        click.echo(f"Committed {len(sent)} changed file(s) ({result.bytes_uploaded} bytes) to {result.repo_url}")
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
@click.option("--user", "users", multiple=True, metavar="NAME:TOKEN",
              help="A user and its token (repeatable). Default: dev:hf_devhub_token.")
def devhub_command(host: str, port: int, data_dir: str, users: tuple[str, ...]) -> None:
    """Run a local Hub-compatible server for rehearsal pushes and tests (loopback only).

    \b
    Example:
      hubpub devhub --port 8765 --user alice:hf_alice_secret
      HF_ENDPOINT=http://127.0.0.1:8765 HF_TOKEN=hf_alice_secret hubpub push recipes/demo.toml
    """
    from ..devhub import DevHub, parse_user

    accounts = dict(parse_user(spec) for spec in users) if users else {"dev": DEFAULT_TOKEN}
    hub = DevHub(data_dir, accounts, host=host, port=port)
    click.echo(f"devhub serving {hub.endpoint} (data in {data_dir}); users: {', '.join(accounts)}")
    click.echo("Use it with:")
    click.echo(f"  export HF_ENDPOINT={hub.endpoint}")
    # the default token is a public placeholder; tokens given with --user are never echoed
    click.echo(f"  export HF_TOKEN={DEFAULT_TOKEN if not users else '<the token you gave with --user>'}")
    click.echo("Stop with Ctrl+C.")
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        click.echo("devhub stopped")
