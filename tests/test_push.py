"""`hubpub push` over real HTTP: the real huggingface_hub client against a devhub in a thread."""

from __future__ import annotations

import re
import socket
import time
import types

import pytest
from click.testing import CliRunner
from huggingface_hub import HfApi

from hubpub import artifacts
from hubpub.cli import cli
from hubpub.errors import PushError
from hubpub.hub import fetch_previous_release
from hubpub.hub._client import hub_client

from hubserver import ALICE_TOKEN, BOB_TOKEN, WEIGHT_FILES, devhub, recipe_text, start_devhub, write_card, write_release  # noqa: F401

REPO = "alice/tiny-w4"


@pytest.fixture(autouse=True)
def _no_stored_login(tmp_path, monkeypatch):
    # the developer's own `hf auth login` must not leak into these tests
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def release(tmp_path, write_recipe):
    """(recipe path, release folder) for alice/tiny-w4."""
    folder = write_release(tmp_path / "release")
    return write_recipe(recipe_text()), folder


def run_push(recipe, hub, *args, token=ALICE_TOKEN, endpoint=None):
    env = {"HF_TOKEN": token} if token else {}
    return CliRunner().invoke(cli, ["push", str(recipe), "--endpoint", endpoint or hub.endpoint, *args], env=env)


def api_for(hub, token=ALICE_TOKEN) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token)


def remote_files(hub, revision):
    with hub_client(hub.endpoint):
        return {f.path: (f.size, f.lfs.sha256 if f.lfs else f.blob_id)
                for f in api_for(hub).list_repo_tree(REPO, revision=revision, recursive=True) if hasattr(f, "size")}


def refs(hub):
    with hub_client(hub.endpoint):
        got = api_for(hub).list_repo_refs(REPO)
    return {r.name: r.target_commit for r in got.branches}, {r.name: r.target_commit for r in got.tags}


def commits(hub, revision="main"):
    with hub_client(hub.endpoint):
        return api_for(hub).list_repo_commits(REPO, revision=revision)


def writes_since(hub, start):
    return [r for r in hub.requests[start:] if r.write]


# ----------------------------------------------------------------------------- the main path
def test_first_push_creates_repo_one_commit_and_tag_and_verifies(release, devhub):
    recipe, folder = release
    result = run_push(recipe, devhub, "--tag", "v1")
    assert result.exit_code == 0, result.output
    branches, tags = refs(devhub)
    assert tags == {"v1": branches["main"]}
    history = commits(devhub)
    assert [c.title for c in history[1:]] == ["initial commit"]  # exactly one release commit
    assert history[0].title == "tiny-qwen2 v1: W4 g128 auto_round, 4.0x smaller, ppl 12.10 -> 12.60, validity 100%"
    local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(remote_files(devhub, "v1")) == local | {".gitattributes"}
    assert devhub.stats["lfs_puts"] == 3  # two shards + the plot
    assert f"commit  {devhub.endpoint}/{REPO}/commit/{branches['main']}" in result.output
    assert "verified: remote tree and README.md match the release folder" in result.output


def test_second_push_after_card_edit_sends_no_weight_bytes_and_commits_only_the_card(release, devhub):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    puts, lfs_bytes = devhub.stats["lfs_puts"], devhub.stats["lfs_bytes"]
    write_card(folder, "# tiny-qwen2 W4\n\nA better card.\n")
    result = run_push(recipe, devhub, "--tag", "v2")
    assert result.exit_code == 0, result.output
    assert (devhub.stats["lfs_puts"], devhub.stats["lfs_bytes"]) == (puts, lfs_bytes)  # 0 weight bytes re-sent
    before, after = remote_files(devhub, "v1"), remote_files(devhub, "v2")
    assert {p for p in after if after[p] != before.get(p)} == {"README.md"}
    assert "Committed 1 changed file(s)" in result.output


def test_dry_run_shows_the_plan_and_sends_no_write_request(release, devhub):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    write_card(folder, "# changed\n")
    (folder / "extra.json").write_text("{}")
    (folder / "tokenizer_config.json").unlink()
    start, heads = len(devhub.requests), refs(devhub)
    result = run_push(recipe, devhub, "--tag", "v2", "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Dry run: nothing was written."
    assert "  add     extra.json  2 B" in lines
    assert any(line.startswith("  change  README.md  ") for line in lines)
    assert any(line.startswith("  keep    tokenizer_config.json  ") for line in lines)
    assert "  tag v2: will be created on the new commit" in lines
    assert {(r.method, r.write) for r in devhub.requests[start:]} <= {("GET", False), ("HEAD", False)}
    assert refs(devhub) == heads


def test_dry_run_on_a_missing_repo_needs_no_token(release, devhub):
    recipe, _ = release
    result = run_push(recipe, devhub, "--dry-run", token=None)
    assert result.exit_code == 0, result.output
    assert f"repo {devhub.endpoint}/{REPO} (will be created, public), revision main" in result.output
    assert "  commit: a new commit on main" in result.output
    assert not writes_since(devhub, 0)


# ----------------------------------------------------------------------------- refusals
def test_wrong_token_exits_1_and_never_shows_the_token(release, devhub):
    recipe, _ = release
    secret = "hf_wrong_token_do_not_print_42"
    result = run_push(recipe, devhub, "--tag", "v1", token=secret)
    assert result.exit_code == 1
    assert result.output == (f"Error: {devhub.endpoint} rejected the token (401): it is invalid or expired; set HF_TOKEN"
                             " to a valid write token or run `hf auth login`\n")
    assert secret not in result.output
    assert not writes_since(devhub, 0)


def test_token_is_in_no_pushed_file_and_no_output(release, devhub, tmp_path):
    recipe, _ = release
    result = run_push(recipe, devhub, "--tag", "v1")
    assert result.exit_code == 0
    assert ALICE_TOKEN not in result.output
    stored = [p for p in (tmp_path / "devhub-data").rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if ALICE_TOKEN.encode() in p.read_bytes()]


def test_missing_token_is_a_one_line_error(release, devhub):
    recipe, _ = release
    result = run_push(recipe, devhub, token=None)
    assert (result.exit_code, result.output) == (1, "Error: no Hugging Face token: set HF_TOKEN or run `hf auth login`\n")
    assert devhub.requests == []


def test_another_users_repo_is_403_and_a_private_one_is_invisible(tmp_path, write_recipe, devhub):
    folder = write_release(tmp_path / "release")
    public = write_recipe(recipe_text(), "public.toml")
    private = write_recipe(recipe_text("alice/secret-w4", extra="private = true\n"), "private.toml")
    assert run_push(public, devhub).exit_code == 0
    assert run_push(private, devhub).exit_code == 0
    start = len(devhub.requests)
    result = run_push(public, devhub, token=BOB_TOKEN)
    assert result.output == ("Error: the token has no write access to alice/tiny-w4 (403): the repo belongs to another"
                             " user/org or the token is read-only; use a write token of the owner or change push.repo_id\n")
    from huggingface_hub.errors import RepositoryNotFoundError

    with hub_client(devhub.endpoint), pytest.raises(RepositoryNotFoundError):
        api_for(devhub, BOB_TOKEN).model_info("alice/secret-w4")
    result = run_push(private, devhub, "--dry-run", token=BOB_TOKEN)  # bob's plan sees no repo at all
    assert "alice/secret-w4 (will be created, private)" in result.output
    assert [r for r in writes_since(devhub, start) if r.status < 400] == []
    assert folder.exists()


def test_existing_tag_is_refused_before_anything_is_sent(release, devhub):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    (head,), tag_before = refs(devhub)[0].values(), refs(devhub)[1]
    write_card(folder, "# another card\n")
    start = len(devhub.requests)
    result = run_push(recipe, devhub, "--tag", "v1")
    assert result.exit_code == 1
    assert result.output == (f"Error: tag 'v1' already exists in {REPO} (at {tag_before['v1'][:12]}) and holds another"
                             " release: hubpub never moves a tag; bump the tag ([push] tag) or pass --tag. Nothing was pushed\n")
    assert writes_since(devhub, start) == []
    assert refs(devhub) == ({"main": head}, tag_before)


def test_pushing_the_same_release_again_is_a_no_op_that_says_so(release, devhub):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    before = refs(devhub)
    start = len(devhub.requests)
    dry = run_push(recipe, devhub, "--tag", "v1", "--dry-run")
    assert "  tag v1: exists at " in dry.output and "already holds this release: nothing to do" in dry.output
    assert "  commit: none" in dry.output
    result = run_push(recipe, devhub, "--tag", "v1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"tag v1 already points at this release ({before[1]['v1'][:12]}): nothing pushed"
    assert writes_since(devhub, start) == []
    assert refs(devhub) == before


def test_dry_run_says_a_new_tag_goes_on_the_existing_commit_when_nothing_changed(release, devhub):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    head = refs(devhub)[0]["main"]
    dry = run_push(recipe, devhub, "--tag", "v2", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"  commit: none (the remote main already holds these files, at {head[:12]})" in dry.output
    assert f"  tag v2: will be created on the existing commit {head[:12]}" in dry.output
    assert "  to send: 0 B in 0 file(s)" in dry.output
    result = run_push(recipe, devhub, "--tag", "v2")
    assert result.exit_code == 0, result.output
    assert refs(devhub)[1] == {"v1": head, "v2": head}


def test_private_recipe_for_a_public_repo_is_refused_with_the_fix(release, devhub, write_recipe):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    private = write_recipe(recipe_text(extra="private = true\n"), "private.toml")
    write_card(folder, "# changed\n")
    start = len(devhub.requests)
    result = run_push(private, devhub, "--tag", "v2")
    assert result.exit_code == 1
    assert result.output == (f"Error: {REPO} exists and is public, but [push] private = true asks for private: change its"
                             " visibility on the Hub (Settings) or set [push] private = false. Nothing was pushed\n")
    assert writes_since(devhub, start) == []


@pytest.mark.parametrize("damage, message", [
    ("no-metrics", "{folder}/hubpub_metrics.json: missing; run `hubpub validate recipe.toml` before pushing"),
    ("failed", "{folder}/hubpub_metrics.json: validate failed (passed = false); fix the failing checks and re-run `hubpub validate recipe.toml`"),
    ("no-card", "{folder}/README.md: missing; run `hubpub card recipe.toml` before pushing"),
    ("stale-card", "{folder}/README.md: older than hubpub_metrics.json, so it describes other outputs; run `hubpub card recipe.toml` again"),
    ("symlink", "{folder}/assets/outside.bin: is a symlink; a release folder may hold only real files inside it: copy the file in instead"),
])
def test_bad_release_folder_is_refused_offline(tmp_path, write_recipe, damage, message):
    folder = write_release(tmp_path / "release", passed=damage != "failed")
    if damage == "no-metrics":
        (folder / artifacts.METRICS).unlink()
    elif damage == "no-card":
        (folder / artifacts.CARD).unlink()
    elif damage == "stale-card":
        card = (folder / artifacts.CARD).stat().st_mtime_ns
        (folder / artifacts.METRICS).touch()
        import os

        os.utime(folder / artifacts.METRICS, ns=(card + 10**9, card + 10**9))
    elif damage == "symlink":
        (tmp_path / "secret.bin").write_bytes(b"x")
        (folder / "assets" / "outside.bin").symlink_to(tmp_path / "secret.bin")
    recipe = write_recipe(recipe_text())
    # a dead endpoint: any network request would turn into a different error
    result = CliRunner().invoke(cli, ["push", str(recipe), "--endpoint", "http://127.0.0.1:9"], env={"HF_TOKEN": ALICE_TOKEN})
    assert (result.exit_code, result.output) == (1, "Error: " + message.format(folder=folder) + "\n")


def test_missing_repo_id_names_the_field(tmp_path, write_recipe):
    write_release(tmp_path / "release")
    recipe = write_recipe('output_dir = "release"\n[model]\nsource = "tiny"\n')
    result = CliRunner().invoke(cli, ["push", str(recipe)], env={"HF_TOKEN": ALICE_TOKEN})
    assert (result.exit_code, result.output) == (1, f'Error: {recipe}: push.repo_id: missing; add repo_id = "owner/name" under [push]\n')


def test_invalid_repo_id_is_refused_offline(tmp_path, write_recipe):
    write_release(tmp_path / "release")
    recipe = write_recipe(recipe_text("alice/bad--name"))
    result = CliRunner().invoke(cli, ["push", str(recipe)], env={"HF_TOKEN": ALICE_TOKEN})
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {recipe}:") and "push.repo_id: must be 'owner/name'" in result.output


def test_dead_server_is_a_one_line_error(release):
    recipe, _ = release
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    result = CliRunner().invoke(cli, ["push", str(recipe), "--endpoint", endpoint], env={"HF_TOKEN": ALICE_TOKEN})
    assert result.exit_code == 1
    assert re.fullmatch(rf"Error: cannot reach {re.escape(endpoint)}: is it running\? check --endpoint / HF_ENDPOINT and your network"
                        r" \(connection refused; 2 tries in \d+\.\d s\)\n", result.output), result.output


# ----------------------------------------------------------------------------- crash and resume
def test_server_stopped_mid_upload_then_rerun_completes_one_consistent_release(release, tmp_path, monkeypatch):
    import huggingface_hub.utils._http as hf_http

    # the client retries a dead server for ~23 s with sleeps; keep the retries, drop the waiting
    fast_time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    fast_time.sleep = lambda seconds: None
    monkeypatch.setattr(hf_http, "time", fast_time)
    recipe, folder = release
    data = tmp_path / "devhub-data"
    first = start_devhub(data)
    first.crash_after_lfs_puts = 1
    crashed = run_push(recipe, first, "--tag", "v1")
    first.stop()
    assert crashed.exit_code == 1
    # (above the error: the client's progress bars and retry warnings)
    assert crashed.output.splitlines()[-1] == f"Error: cannot reach {first.endpoint}: is it running? check --endpoint / HF_ENDPOINT and your network"
    stored_before = {p.name for p in (data / "lfs").iterdir() if not p.name.startswith(".")}
    assert len(stored_before) == 1

    second = start_devhub(data)
    try:
        branches, tags = refs(second)
        assert tags == {} and [c.title for c in commits(second)] == ["initial commit"]  # nothing half-committed
        result = run_push(recipe, second, "--tag", "v1")
        assert result.exit_code == 0, result.output
        assert second.stats["lfs_puts"] == 3 - len(stored_before)  # what survived the crash is not re-sent
        assert len(commits(second)) == 2
        branches, tags = refs(second)
        assert tags["v1"] == branches["main"]
        local = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert set(remote_files(second, "v1")) == local | {".gitattributes"}
    finally:
        second.stop()


# ----------------------------------------------------------------------------- options
def test_revision_branch_create_pr_and_delete_missing(release, devhub):
    recipe, folder = release
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    main_head = refs(devhub)[0]["main"]
    write_card(folder, "# on a branch\n")
    assert run_push(recipe, devhub, "--revision", "dev").exit_code == 0
    branches, _ = refs(devhub)
    assert branches["main"] == main_head and branches["dev"] != main_head

    write_card(folder, "# as a PR\n")
    result = run_push(recipe, devhub, "--create-pr")
    assert result.exit_code == 0, result.output
    assert f"pull request  {devhub.endpoint}/{REPO}/discussions/1" in result.output
    assert refs(devhub)[0]["main"] == main_head

    (folder / "tokenizer_config.json").unlink()
    write_card(folder, "# without the tokenizer config\n")
    assert run_push(recipe, devhub).exit_code == 0
    assert "tokenizer_config.json" in remote_files(devhub, "main")  # kept unless asked
    write_card(folder, "# now deleted\n")
    assert run_push(recipe, devhub, "--delete-missing").exit_code == 0
    assert "tokenizer_config.json" not in remote_files(devhub, "main")


def test_tag_with_create_pr_is_refused(release, devhub):
    recipe, _ = release
    result = run_push(recipe, devhub, "--tag", "v1", "--create-pr")
    assert result.output == ("Error: tag 'v1' with --create-pr: a tag would point at an unmerged PR commit; push the PR"
                             " without a tag, tag after merging\n")
    assert devhub.requests == []


def test_remote_change_since_the_plan_is_412_with_the_fix(devhub):
    from huggingface_hub import CommitOperationAdd

    from hubpub.hub._client import hub_errors

    api = api_for(devhub)
    with hub_client(devhub.endpoint):
        api.create_repo(REPO)
        stale = api.list_repo_refs(REPO).branches[0].target_commit
        api.create_commit(REPO, [CommitOperationAdd("a.txt", b"a")], commit_message="someone else")
        with pytest.raises(PushError) as err, hub_errors(devhub.endpoint, REPO):
            api.create_commit(REPO, [CommitOperationAdd("b.txt", b"b")], commit_message="late", parent_commit=stale)
    assert str(err.value) == f"{REPO} changed on the remote since the plan (412): re-run `hubpub push` to plan against the new state"


# ----------------------------------------------------------------------------- history
def test_fetch_previous_release_reads_v1_files_at_the_tag(release, devhub):
    recipe, folder = release
    v1_metrics = (folder / artifacts.METRICS).read_text()
    assert run_push(recipe, devhub, "--tag", "v1").exit_code == 0
    (folder / artifacts.METRICS).write_text(v1_metrics.replace('"validity": 1.0', '"validity": 0.5'))
    write_card(folder, "# v2\n")
    assert run_push(recipe, devhub, "--tag", "v2").exit_code == 0
    metrics_text, recipe_copy = fetch_previous_release(REPO, "v1", endpoint=devhub.endpoint)
    assert metrics_text == v1_metrics
    assert recipe_copy == (folder / artifacts.RECIPE_COPY).read_text()
    with pytest.raises(PushError) as err:
        fetch_previous_release(REPO, "v9", endpoint=devhub.endpoint)
    assert str(err.value) == f"tag 'v9' not found in {REPO} at {devhub.endpoint}: check card.previous_tag"


def test_push_help_has_an_example():
    for command in ("push", "devhub"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output
