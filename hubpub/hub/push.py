"""`hubpub push`: publish a release folder as ONE tagged, verified commit.

Order of work, so that a refusal never leaves anything half done on the Hub:
1. offline checks: repo_id, tag, the release folder (metrics present and passed, README.md newer
   than the outputs it describes, no file pointing outside the folder);
2. the plan (GET requests only); an existing tag is refused here, before any upload;
3. create the repo / branch if missing, then one create_commit with every file (the client
   skips files whose remote oid matches, so unchanged weights are not re-sent), with the plan's
   head as parentCommit (the remote moved meanwhile -> 412);
4. tag the new commit, then verify: the remote tree at that commit matches every local file's
   size and sha256 / blob sha1, and README.md reads back byte for byte.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .. import artifacts
from ..errors import PushError
from ..events import step
from ..naming import TAG_HINT, is_tag_name
from ._client import hub_client, hub_errors, resolve_endpoint, resolve_token
from .plan import HUB_MANAGED, LocalFile, PushPlan, build_plan, hash_file, remote_matches, remote_tree, scan_release

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from ..events import EventSink
    from ..recipe import Recipe



@dataclass
class PushResult:
    repo_url: str
    commit_url: str | None  # None for a dry run
    commit_oid: str | None
    tag: str | None
    plan: PushPlan
    bytes_uploaded: int  # bytes of the files added or changed by the commit
    verified: bool
    dry_run: bool = False
    pr_url: str | None = None
    commit_message: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. "tag v1 already holds this release: nothing pushed"


@dataclass(frozen=True)
class PushSettings:
    repo_id: str
    revision: str
    tag: str | None
    create_pr: bool
    delete_missing: bool
    private: bool


def push(recipe: "Recipe", *, output_dir: str | Path | None = None, tag: str | None = None,
         revision: str | None = None, create_pr: bool | None = None, delete_missing: bool | None = None,
         dry_run: bool = False, endpoint: str | None = None, events: "EventSink | None" = None) -> PushResult:
    settings = _settings(recipe, tag=tag, revision=revision, create_pr=create_pr, delete_missing=delete_missing)
    folder = Path(output_dir) if output_dir is not None else recipe.output_path
    metrics, manifest = check_release(folder, recipe)
    local = scan_release(folder)
    return _publish(settings, local, folder, lambda: commit_message(recipe, settings.tag, metrics, manifest),
                    dry_run=dry_run, endpoint=endpoint, events=events)


def _publish(settings: PushSettings, local: list[LocalFile], folder: Path, message_of: Any, *, dry_run: bool,
             endpoint: str | None, events: "EventSink | None") -> PushResult:
    """Plan, then one commit of ``local`` (README.md read back from ``folder``), tag, verify."""
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(required=not dry_run)
    repo_id = settings.repo_id

    with hub_client(endpoint), hub_errors(endpoint, repo_id, revision=settings.revision, tag=settings.tag), _quiet_client():
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        if not dry_run:
            api.whoami()  # a bad token or a dead server fails here, before hashing work is wasted
        plan = build_plan(api, repo_id=repo_id, endpoint=endpoint, revision=settings.revision, tag=settings.tag,
                          local=local, delete_missing=settings.delete_missing, private=settings.private)
        repo_url = f"{endpoint}/{repo_id}"
        if dry_run:
            return PushResult(repo_url, None, None, settings.tag, plan, plan.bytes_to_send, False, dry_run=True)
        if plan.refusal:
            raise PushError(plan.refusal)
        if plan.already_published:
            # the same release pushed again (a re-run): nothing to send, nothing to move
            assert plan.tag_commit is not None
            verify_remote(api, repo_id, plan.tag_commit, local, folder, exact=settings.delete_missing)
            note = f"tag {settings.tag} already points at this release ({plan.tag_commit[:12]}): nothing pushed"
            return PushResult(repo_url, f"{repo_url}/commit/{plan.tag_commit}", plan.tag_commit, settings.tag, plan, 0, True,
                              notes=[note])
        message, description = message_of()
        with step(events, "push", "upload", total=plan.bytes_to_send, unit="B") as upload:
            commit_oid, commit_url, pr_url = _commit(api, settings, plan, local, message, description)
            upload.set(plan.bytes_to_send)
        if settings.tag:
            api.create_tag(repo_id, tag=settings.tag, revision=commit_oid, tag_message=message)
        verify_remote(api, repo_id, commit_oid, local, folder, exact=settings.delete_missing)
    sent = plan.bytes_to_send if plan.has_changes else 0
    return PushResult(repo_url, commit_url, commit_oid, settings.tag, plan, sent, True, pr_url=pr_url, commit_message=message)


def push_family(recipe: "Recipe", members: list[tuple[str, "Recipe"]], folder: Path, root_files: list[str], *,
                tag: str | None = None, with_members: bool = True, dry_run: bool = False, endpoint: str | None = None,
                events: "EventSink | None" = None) -> PushResult:
    """A family as ONE commit to the family repo ([push] of ``recipe``): the family README's files
    (``root_files``, relative to ``folder``) at the root and, ``with_members``, each variant's release
    folder under ``<name>/`` (the subfolders layout). Tagged, then verified like a single push.
    ``with_members=False`` publishes the family README alone (the branches layout's main branch; no tag)."""
    from dataclasses import replace

    settings = _settings(recipe, tag=tag, revision=None, create_pr=None, delete_missing=None)
    if not with_members:
        settings = replace(settings, tag=None)
    local: list[LocalFile] = []
    for rel in root_files:
        path = folder / rel
        if path.is_file():
            size, sha256, git_oid = hash_file(path)
            local.append(LocalFile(rel, path, size, sha256, git_oid))
    if not any(f.path == artifacts.CARD for f in local):
        raise PushError(f"{folder / artifacts.CARD}: missing; run `hubpub release {recipe.path.name}` to write the family README first")
    checked = []
    if with_members:
        for name, member in members:
            metrics, manifest = check_release(member.output_path, member)
            checked.append((name, metrics, manifest))
            local += [replace(f, path=f"{name}/{f.path}") for f in scan_release(member.output_path)]

    def message() -> tuple[str, str]:
        names = [name for name, _ in members]
        if recipe.push.commit_message:
            summary = recipe.push.commit_message
        elif with_members:
            summary = f"{recipe.model.display_name} {settings.tag or 'release'}: {len(names)} variants ({', '.join(names)})"
        else:
            summary = f"{recipe.model.display_name} family README: {len(names)} variants on their own branches"
        version = checked[0][1].hubpub_version if checked else ""
        gates = "; ".join(f"{name}: gates {'ok' if m.passed else 'FAILED'}" for name, m, _ in checked)
        description = (f"Published by hubpub {version} from {recipe.path.name} (layout {recipe.push.layout})."
                       + (f" {gates}." if gates else ""))
        return summary, description

    return _publish(settings, local, folder, message, dry_run=dry_run, endpoint=endpoint, events=events)


@contextlib.contextmanager
def _quiet_client() -> Iterator[None]:
    """huggingface_hub's own tqdm bars ("Upload 0 LFS files") would leak past hubpub's progress."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def _settings(recipe: "Recipe", **given: Any) -> PushSettings:
    from huggingface_hub.utils import validate_repo_id
    from huggingface_hub.errors import HFValidationError

    section = recipe.push
    repo_id = section.repo_id
    if not repo_id:
        raise PushError(f'{recipe.path}: push.repo_id: missing; add repo_id = "owner/name" under [push]')
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise PushError(f"{recipe.path}: push.repo_id: {str(exc).splitlines()[0]}") from None
    tag = given["tag"] if given["tag"] is not None else section.tag
    if tag is not None and not is_tag_name(tag):
        raise PushError(f"--tag {tag!r}: not a git tag name; {TAG_HINT}")
    create_pr = section.create_pr if given["create_pr"] is None else given["create_pr"]
    if create_pr and tag:
        raise PushError(f"tag {tag!r} with --create-pr: a tag would point at an unmerged PR commit; push the PR without a tag, tag after merging")
    return PushSettings(
        repo_id=repo_id,
        revision=given["revision"] or section.revision,
        tag=tag,
        create_pr=create_pr,
        delete_missing=section.delete_missing if given["delete_missing"] is None else given["delete_missing"],
        private=section.private,
    )


def check_release(folder: Path, recipe: "Recipe") -> tuple[artifacts.Metrics, artifacts.Manifest | None]:
    """Refuse a release that validate did not pass or whose card is stale (no network)."""
    shown = recipe.path.name
    if not folder.is_dir():
        raise PushError(f"{folder}: release folder not found; run `hubpub release {shown}` (or quantize, validate and card) first")
    metrics_path, readme = folder / artifacts.METRICS, folder / artifacts.CARD
    if not metrics_path.is_file():
        raise PushError(f"{metrics_path}: missing; run `hubpub validate {shown}` before pushing")
    try:
        metrics = artifacts.Metrics.read(metrics_path)
    except ValueError as exc:
        raise PushError(f"{metrics_path}: not a hubpub metrics file ({str(exc).splitlines()[0]}); re-run `hubpub validate {shown}`") from None
    if not metrics.passed:
        raise PushError(f"{metrics_path}: validate failed (passed = false); fix the failing checks and re-run `hubpub validate {shown}`")
    if not readme.is_file():
        raise PushError(f"{readme}: missing; run `hubpub card {shown}` before pushing")
    manifest_path = folder / artifacts.MANIFEST
    manifest = None
    if manifest_path.is_file():
        try:
            manifest = artifacts.Manifest.read(manifest_path)
        except ValueError as exc:
            raise PushError(f"{manifest_path}: not a hubpub manifest ({str(exc).splitlines()[0]}); re-run `hubpub quantize {shown}`") from None
    for described in (metrics_path, manifest_path):
        if described.is_file() and readme.stat().st_mtime_ns < described.stat().st_mtime_ns:
            raise PushError(f"{readme}: older than {described.name}, so it describes other outputs; run `hubpub card {shown}` again")
    return metrics, manifest


def headline(metrics: artifacts.Metrics, manifest: artifacts.Manifest | None) -> list[str]:
    """The numbers a reader of the commit log wants: scheme, size, quality."""
    parts = []
    if manifest is not None:
        group = "per-channel" if manifest.group_size == -1 else f"g{manifest.group_size}"
        parts.append(f"W{manifest.bits} {group} {manifest.format}")
    if metrics.base is not None and metrics.quantized.weight_bytes:
        parts.append(f"{metrics.base.weight_bytes / metrics.quantized.weight_bytes:.1f}x smaller")
    for ev in metrics.evals:
        ppl = ev.metrics.get("perplexity")
        if ppl and ppl.get("base") and ppl.get("quantized") is not None:
            parts.append(f"ppl {ppl['base']:.2f} -> {ppl['quantized']:.2f}")
            break
    if metrics.quantized.validity is not None:
        parts.append(f"validity {metrics.quantized.validity:.0%}")
    return parts


def commit_message(recipe: "Recipe", tag: str | None, metrics: artifacts.Metrics,
                   manifest: artifacts.Manifest | None) -> tuple[str, str]:
    if recipe.push.commit_message:
        summary = recipe.push.commit_message
    else:
        name = manifest.model_name if manifest is not None else recipe.model.display_name
        numbers = headline(metrics, manifest)
        summary = f"{name} {tag or 'release'}" + (f": {', '.join(numbers)}" if numbers else "")
    gates = ", ".join(f"{g.name} {'ok' if g.passed else 'FAILED'}" for g in metrics.gates)
    description = f"Published by hubpub {metrics.hubpub_version} from {recipe.path.name}." + (f" Gates: {gates}." if gates else "")
    return summary, description


def _commit(api: "HfApi", settings: PushSettings, plan: PushPlan, local: list[LocalFile], message: str,
            description: str) -> tuple[str, str, str | None]:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    repo_id = settings.repo_id
    if not plan.repo_exists:
        api.create_repo(repo_id, private=settings.private, exist_ok=True)
    if settings.revision != "main" and not plan.branch_exists and not settings.create_pr:
        api.create_branch(repo_id, branch=settings.revision, revision=plan.remote_commit)
    operations: list[Any] = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.source)) for f in local]
    if settings.delete_missing:
        operations += [CommitOperationDelete(path_in_repo=f.path) for f in plan.delete]
    # With nothing changed the client makes no commit and returns the head; its preupload request
    # still proves write access, so a push never "succeeds" for someone who may not write.
    info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                             revision=settings.revision, create_pr=settings.create_pr, parent_commit=plan.remote_commit)
    return info.oid, info.commit_url, info.pr_url


def verify_remote(api: "HfApi", repo_id: str, commit_oid: str, local: list[LocalFile], folder: Path, *, exact: bool) -> None:
    """The remote tree at the new commit holds exactly what was meant; README.md reads back."""
    at = f"{repo_id}@{commit_oid[:12]}"
    remote = remote_tree(api, repo_id, commit_oid)
    for item in local:
        theirs = remote.get(item.path)
        if theirs is None:
            raise PushError(f"verification failed: {item.path} is missing in {at}; re-run `hubpub push`")
        if not remote_matches(item, theirs):
            raise PushError(f"verification failed: {item.path} differs in {at} (remote {theirs.size} B, local {item.size} B); re-run `hubpub push`")
    if exact:
        extra = sorted(set(remote) - {f.path for f in local} - set(HUB_MANAGED))
        if extra:
            raise PushError(f"verification failed: {at} still holds {extra[0]} (not in the release); re-run `hubpub push --delete-missing`")
    with tempfile.TemporaryDirectory(prefix="hubpub-verify-") as cache:
        readme = Path(api.hf_hub_download(repo_id, artifacts.CARD, revision=commit_oid, cache_dir=cache))
        if readme.read_bytes() != (folder / artifacts.CARD).read_bytes():
            raise PushError(f"verification failed: README.md read back from {at} differs from {folder / artifacts.CARD}; re-run `hubpub push`")


def confirm_published(recipe: "Recipe", folder: Path, *, endpoint: str | None, tag: str | None,
                      commit_oid: str | None) -> str | None:
    """Is the release a cached push reported still on the remote? None if so, else why not.

    GET requests only: the tag (or the revision's head) must still point at the commit the last
    push made, holding these files. A wiped or moved remote makes the push run again."""
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id, revision = recipe.push.repo_id, recipe.push.revision
    if not repo_id or not commit_oid:
        return "no record of the last push"
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(required=False)
    with hub_client(endpoint), hub_errors(endpoint, repo_id, revision=revision, tag=tag):
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        try:
            refs = api.list_repo_refs(repo_id)
        except RepositoryNotFoundError:
            return f"{repo_id} not found at {endpoint}"
        tags = {ref.name: ref.target_commit for ref in refs.tags}
        branches = {ref.name: ref.target_commit for ref in refs.branches}
        if tag:
            if tag not in tags:
                return f"tag {tag} not found in {repo_id} at {endpoint}"
            if tags[tag] != commit_oid:
                return f"tag {tag} points at {tags[tag][:12]}, not the pushed {commit_oid[:12]}"
            return None
        head = branches.get(revision)
        if head is None:
            return f"revision {revision} not found in {repo_id} at {endpoint}"
        if head == commit_oid:
            return None
        from .plan import holds_exactly

        if holds_exactly(remote_tree(api, repo_id, head), scan_release(folder), exact=recipe.push.delete_missing):
            return None
        return f"{repo_id}@{revision} moved to {head[:12]} and no longer holds this release"
