"""devhub's persistence: content-addressed blobs, commits with parent links, refs per repo.

Layout of the data folder (every file written atomically, so a crash never leaves half a file)::

    lfs/<sha256>                 LFS objects (weights, images), by content sha256
    lfs-owners/<owner>/<name>/<sha256>
                                 empty markers: the LFS objects uploaded to (or referenced by) a repo;
                                 a commit may only reference its own repo's objects
    git/<sha1>                   regular files, by git blob sha1
    commits/<oid>.json           {"id", "parent", "title", "message", "date", "author", "files"}
    repos/<owner>/<name>.json    {"owner", "name", "private", "branches", "tags", "prs"}
    jobs/<id>/                   Jobs emulation (``--jobs``): job.json, logs.jsonl, work/ (scratch)

Every path is built from a checked oid or name (hex digits, Hub name rules) and resolved strictly
inside the data folder (``Store.inside``); nothing else is ever opened.

A commit stores the whole tree: {path: {"size", "oid", "lfs": {"oid", "size", "pointerSize"}?}},
where ``oid`` is the git blob sha1 (of the pointer file for LFS entries), as the Hub reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..artifacts import write_atomic
from .checks import SHA1 as _SHA1, SHA256 as _SHA256, StoreError, is_name as _is_name

__all__ = ["GITATTRIBUTES", "Store", "StoreError", "git_blob_sha1", "lfs_pointer"]

EMPTY_TREE: dict[str, dict[str, Any]] = {}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)  # private repos live here
        self.real_root = self.root.resolve()
        for sub in ("lfs", "lfs-owners", "git", "commits", "repos"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # One lock for every read-modify-write of refs: commits and tags are atomic per server.
        self.lock = threading.RLock()

    def inside(self, *parts: str) -> Path:
        """root/parts..., refused unless it resolves strictly inside the data folder."""
        path = self.root.joinpath(*parts)
        real = Path(os.path.realpath(path))
        if real == self.real_root or self.real_root not in real.parents:
            raise StoreError(400, "path outside the devhub data folder")
        return path

    # -- blobs ---------------------------------------------------------------------------
    def lfs_path(self, sha256: str) -> Path:
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise StoreError(400, "invalid LFS oid: expected 64 lowercase hex digits (sha256)")
        return self.inside("lfs", sha256)

    def has_lfs(self, sha256: str, size: int | None = None) -> bool:
        path = self.lfs_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_git_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.inside("git", oid)
        if not path.exists():
            write_atomic(path, data)
        return oid

    def read_entry(self, entry: dict[str, Any]) -> Path:
        if entry.get("lfs"):
            return self.lfs_path(entry["lfs"]["oid"])
        oid = entry["oid"]
        if not isinstance(oid, str) or not _SHA1.fullmatch(oid):
            raise StoreError(400, "invalid blob oid")
        return self.inside("git", oid)

    # -- LFS ownership: an object belongs to the repos it was uploaded to ---------------------
    def _owner_marker(self, repo_id: str, sha256: str) -> Path:
        owner, name = self._split(repo_id)
        self.lfs_path(sha256)  # checks the oid
        return self.inside("lfs-owners", owner, name, sha256)

    def add_lfs_owner(self, repo_id: str, sha256: str) -> None:
        marker = self._owner_marker(repo_id, sha256)
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(marker, b"")

    def owns_lfs(self, repo: dict[str, Any], sha256: str, *, cache: dict[str, Any] | None = None) -> bool:
        """Whether ``repo`` may reference the LFS object: uploaded to it, or already in its history
        (data folders written before ownership markers existed). ``cache``: a dict kept across the
        calls of one request, so that the history is read at most once."""
        repo_id = f"{repo['owner']}/{repo['name']}"
        if self._owner_marker(repo_id, sha256).exists():
            return True
        cache = {} if cache is None else cache
        if "referenced" not in cache:
            cache["referenced"] = self.referenced_lfs(repo)
        if sha256 in cache["referenced"]:
            self.add_lfs_owner(repo_id, sha256)
            return True
        return False

    def referenced_lfs(self, repo: dict[str, Any]) -> set[str]:
        oids: set[str] = set()
        for oid in self._reachable(repo):
            commit = self.commit(oid)
            for entry in (commit or {}).get("files", {}).values():
                if entry.get("lfs"):
                    oids.add(entry["lfs"]["oid"])
        return oids

    # -- repos ---------------------------------------------------------------------------
    @staticmethod
    def _split(repo_id: str) -> tuple[str, str]:
        owner, _, name = repo_id.partition("/")
        if not (_is_name(owner) and _is_name(name)):
            raise StoreError(400, f"invalid repo id {repo_id[:100]!r}")
        return owner, name

    def _repo_file(self, repo_id: str) -> Path:
        owner, name = self._split(repo_id)
        return self.inside("repos", owner, f"{name}.json")

    def repo(self, repo_id: str) -> dict[str, Any] | None:
        try:
            path = self._repo_file(repo_id)
        except StoreError:
            return None  # an invalid name names no repo
        return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, repo: dict[str, Any]) -> None:
        write_atomic(self._repo_file(f"{repo['owner']}/{repo['name']}"), json.dumps(repo, indent=1).encode())

    def create_repo(self, repo_id: str, *, private: bool, author: str) -> dict[str, Any]:
        """A new repo with the Hub's first commit: a .gitattributes that routes weights to LFS."""
        owner, name = self._split(repo_id)
        oid = self.put_git_blob(GITATTRIBUTES)
        files = {".gitattributes": {"size": len(GITATTRIBUTES), "oid": oid}}
        commit = self.write_commit(parent=None, title="initial commit", message="", author=author, files=files)
        repo = {"owner": owner, "name": name, "private": private, "created": time.time(),
                "branches": {"main": commit["id"]}, "tags": {}, "prs": {}}
        self.save_repo(repo)
        return repo

    # -- commits -------------------------------------------------------------------------
    def commit(self, oid: str) -> dict[str, Any] | None:
        if not isinstance(oid, str) or not _SHA1.fullmatch(oid):
            return None
        path = self.inside("commits", f"{oid}.json")
        return json.loads(path.read_text()) if path.is_file() else None

    def write_commit(self, *, parent: str | None, title: str, message: str, author: str,
                     files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        body = {"parent": parent, "title": title, "message": message, "author": author,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "files": files}
        body["id"] = hashlib.sha1(json.dumps(body, sort_keys=True).encode() + os.urandom(8)).hexdigest()
        write_atomic(self.inside("commits", f"{body['id']}.json"), json.dumps(body).encode())
        return body

    def resolve(self, repo: dict[str, Any], revision: str) -> str | None:
        """Branch, tag, refs/pr/N, or a full/short commit oid -> commit oid."""
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["tags"]:
            return repo["tags"][revision]
        if not isinstance(revision, str):
            return None
        if revision.startswith("refs/pr/") and revision[8:] in repo["prs"]:
            return repo["prs"][revision[8:]]
        if 7 <= len(revision) <= 40 and all(c in "0123456789abcdef" for c in revision):
            known = [c for c in self._reachable(repo) if c.startswith(revision)]
            if len(known) == 1:
                return known[0]
        return None

    def _reachable(self, repo: dict[str, Any]) -> set[str]:
        seen: set[str] = set()
        heads = [*repo["branches"].values(), *repo["tags"].values(), *repo["prs"].values()]
        while heads:
            oid = heads.pop()
            if oid in seen:
                continue
            seen.add(oid)
            commit = self.commit(oid)
            if commit and commit["parent"]:
                heads.append(commit["parent"])
        return seen

    def history(self, oid: str) -> list[dict[str, Any]]:
        out = []
        commit = self.commit(oid)
        while commit:
            out.append(commit)
            commit = self.commit(commit["parent"]) if commit["parent"] else None
        return out
