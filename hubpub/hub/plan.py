"""The push plan (also `hubpub push --dry-run`): local release folder vs the remote tree.

``scan_release`` hashes every file of the release folder (sha256 for LFS, git blob sha1 for
regular files, in one read) and refuses anything that points outside it. ``plan_push`` lists
the remote tree and refs with GET requests only: it never writes to the Hub.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PushError
from ..naming import is_hidden
from ..units import human_bytes

if TYPE_CHECKING:
    from huggingface_hub import HfApi

# Files the Hub itself manages; a release never deletes them.
HUB_MANAGED = (".gitattributes",)


@dataclass(frozen=True)
class LocalFile:
    path: str  # path in the repo (posix)
    source: Path
    size: int
    sha256: str
    git_oid: str  # git blob sha1 of the content


@dataclass(frozen=True)
class FileChange:
    path: str
    size: int  # local size; the remote size for deletions
    remote_size: int | None = None


@dataclass
class PushPlan:
    repo_id: str
    endpoint: str
    revision: str
    tag: str | None
    repo_exists: bool
    branch_exists: bool
    remote_commit: str | None  # head of the revision the plan was made against
    tag_commit: str | None  # where `tag` points already
    add: list[FileChange] = field(default_factory=list)
    change: list[FileChange] = field(default_factory=list)
    delete: list[FileChange] = field(default_factory=list)
    unchanged: list[FileChange] = field(default_factory=list)
    delete_missing: bool = False
    local: list[LocalFile] = field(default_factory=list)
    tag_holds_release: bool = False  # the existing tag's tree already holds exactly these files
    remote_private: bool | None = None  # visibility of the existing repo
    private: bool | None = None  # visibility the recipe asks for

    @property
    def visibility_conflict(self) -> bool:
        return self.repo_exists and self.private is not None and self.remote_private is not None and self.remote_private != self.private

    @property
    def refusal(self) -> str | None:
        """Why the push would be refused, or None (checked before any upload)."""
        if self.visibility_conflict:
            have, want = ("private", "public") if self.remote_private else ("public", "private")
            return (f"{self.repo_id} exists and is {have}, but [push] private = {str(self.private).lower()} asks for {want}:"
                    f" change its visibility on the Hub (Settings) or set [push] private = {str(bool(self.remote_private)).lower()}."
                    " Nothing was pushed")
        if self.tag and self.tag_commit and not self.tag_holds_release:
            return (f"tag {self.tag!r} already exists in {self.repo_id} (at {self.tag_commit[:12]}) and holds another release:"
                    " hubpub never moves a tag; bump the tag ([push] tag) or pass --tag. Nothing was pushed")
        return None

    @property
    def already_published(self) -> bool:
        """The tag already points at a commit holding exactly this release: pushing is a no-op."""
        return bool(self.tag and self.tag_commit and self.tag_holds_release)

    @property
    def bytes_to_send(self) -> int:
        return sum(f.size for f in self.add + self.change)

    @property
    def has_changes(self) -> bool:
        return bool(self.add or self.change or (self.delete and self.delete_missing))

    def lines(self) -> list[str]:
        """The plan as a reader sees it (dry-run output): exactly what the push will do."""
        where = f"{self.endpoint}/{self.repo_id}"
        state = "exists" if self.repo_exists else "will be created"
        if self.repo_exists and self.remote_private is not None:
            state += ", private" if self.remote_private else ", public"
        elif not self.repo_exists and self.private is not None:
            state += ", private" if self.private else ", public"
        out = [f"repo {where} ({state}), revision {self.revision}"
               + ("" if self.branch_exists or not self.repo_exists else " (branch will be created)")]
        refusal = self.refusal
        if refusal:
            out.append(f"  REFUSED: {refusal}")
        for label, items in (("add", self.add), ("change", self.change)):
            for item in items:
                out.append(f"  {label:<7} {item.path}  {human_bytes(item.size)}")
        for item in self.delete:
            verb = "delete" if self.delete_missing else "keep"
            out.append(f"  {verb:<7} {item.path}  {human_bytes(item.size)}" + ("" if self.delete_missing else "  (not in the release; --delete-missing removes it)"))
        out.append(f"  unchanged: {len(self.unchanged)} file(s), not re-sent")
        if self.already_published:
            out.append(f"  tag {self.tag}: exists at {self.tag_commit[:12]} and already holds this release: nothing to do")  # type: ignore[index]
            out.append("  commit: none")
            return out
        if self.has_changes:
            out.append(f"  commit: a new commit on {self.revision}" + (f" (parent {self.remote_commit[:12]})" if self.remote_commit else ""))
        else:
            out.append(f"  commit: none (the remote {self.revision} already holds these files"
                       + (f", at {self.remote_commit[:12]})" if self.remote_commit else ")"))
        if self.tag and self.tag_commit:
            out.append(f"  tag {self.tag}: EXISTS at {self.tag_commit[:12]} with other content; push will refuse (tags are never moved)")
        elif self.tag:
            on = "the new commit" if self.has_changes or not self.remote_commit else f"the existing commit {self.remote_commit[:12]}"
            out.append(f"  tag {self.tag}: will be created on {on}")
        out.append(f"  to send: {human_bytes(self.bytes_to_send)} in {len(self.add) + len(self.change)} file(s)")
        return out


def hash_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256, git blob sha1) in one pass over the file."""
    size = path.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            sha256.update(chunk)
            sha1.update(chunk)
    return size, sha256.hexdigest(), sha1.hexdigest()


def scan_release(folder: Path) -> list[LocalFile]:
    """Every file of the release folder; symlinks and anything resolving outside it are refused.
    Hidden names (temp files of atomic writes, caches) are not part of a release, except
    naming.PUBLISHED_HIDDEN (.eval_results/, which the Hub reads)."""
    root = folder.resolve()
    files: list[LocalFile] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        for name in [*dirnames, *filenames]:
            entry = base / name
            rel = entry.relative_to(folder).as_posix()
            if entry.is_symlink():
                raise PushError(f"{entry}: is a symlink; a release folder may hold only real files inside it: copy the file in instead")
            if not entry.resolve().is_relative_to(root) or ".." in rel.split("/"):
                raise PushError(f"{entry}: resolves outside the release folder {folder}; move it inside")
        dirnames[:] = sorted(d for d in dirnames if not is_hidden([d]))
        for name in sorted(filenames):
            if is_hidden([name]):
                continue
            source = base / name
            size, sha256, git_oid = hash_file(source)
            files.append(LocalFile(source.relative_to(folder).as_posix(), source, size, sha256, git_oid))
    return files


def remote_matches(local: LocalFile, remote: Any) -> bool:
    """Same content? LFS entries carry the sha256, regular ones the git blob sha1."""
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        return lfs.sha256 == local.sha256 and lfs.size == local.size
    return remote.blob_id == local.git_oid and remote.size == local.size


def remote_tree(api: "HfApi", repo_id: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    return {item.path: item for item in api.list_repo_tree(repo_id, revision=revision, recursive=True) if isinstance(item, RepoFile)}


def build_plan(api: "HfApi", *, repo_id: str, endpoint: str, revision: str, tag: str | None,
               local: list[LocalFile], delete_missing: bool, private: bool | None = None) -> PushPlan:
    """Compare with the remote using GET requests only (refs + tree)."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id)
    except RepositoryNotFoundError:
        refs = None
    plan = PushPlan(repo_id=repo_id, endpoint=endpoint, revision=revision, tag=tag, repo_exists=refs is not None,
                    branch_exists=False, remote_commit=None, tag_commit=None, delete_missing=delete_missing, local=local, private=private)
    remote: dict[str, Any] = {}
    if refs is not None:
        branches = {ref.name: ref.target_commit for ref in refs.branches}
        tags = {ref.name: ref.target_commit for ref in refs.tags}
        plan.branch_exists = revision in branches
        plan.tag_commit = tags.get(tag) if tag else None
        plan.remote_private = _is_private(api, repo_id)
        # a new branch starts from main, so that is what the release is compared with
        base = revision if plan.branch_exists else "main"
        if base in branches:
            plan.remote_commit = branches[base]
            remote = remote_tree(api, repo_id, plan.remote_commit)
    local_paths = {f.path for f in local}
    for item in local:
        theirs = remote.get(item.path)
        if theirs is None:
            plan.add.append(FileChange(item.path, item.size))
        elif remote_matches(item, theirs):
            plan.unchanged.append(FileChange(item.path, item.size, theirs.size))
        else:
            plan.change.append(FileChange(item.path, item.size, theirs.size))
    for path, theirs in sorted(remote.items()):
        if path not in local_paths and path not in HUB_MANAGED:
            plan.delete.append(FileChange(path, theirs.size, theirs.size))
    if plan.tag_commit:
        tagged = remote if plan.tag_commit == plan.remote_commit else remote_tree(api, repo_id, plan.tag_commit)
        plan.tag_holds_release = holds_exactly(tagged, local, exact=delete_missing)
    return plan


def holds_exactly(remote: dict[str, Any], local: list[LocalFile], *, exact: bool) -> bool:
    """Every local file is in the remote tree with the same content (and nothing else, if exact)."""
    if any(item.path not in remote or not remote_matches(item, remote[item.path]) for item in local):
        return False
    return not exact or not (set(remote) - {f.path for f in local} - set(HUB_MANAGED))


def _is_private(api: "HfApi", repo_id: str) -> bool | None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        private = api.repo_info(repo_id).private
    except HfHubHTTPError:  # visibility unknown (a server without repo info): no conflict is claimed
        return None
    return None if private is None else bool(private)
