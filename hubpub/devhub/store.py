"""devhub's persistence: content-addressed blobs, commits with parent links, refs per repo.

Layout of the data folder (every file written atomically, so a crash never leaves half a file)::

    lfs/<sha256>                 LFS objects (weights, images), by content sha256
    git/<sha1>                   regular files, by git blob sha1
    commits/<oid>.json           {"id", "parent", "title", "message", "date", "author", "files"}
    repos/<owner>/<name>.json    {"owner", "name", "private", "branches", "tags", "prs"}

A commit stores the whole tree: {path: {"size", "oid", "lfs": {"oid", "size", "pointerSize"}?}},
where ``oid`` is the git blob sha1 (of the pointer file for LFS entries), as the Hub reports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

EMPTY_TREE: dict[str, dict[str, Any]] = {}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StoreError(Exception):
    """A request the store refuses; ``status`` and ``code`` become the HTTP answer."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        for sub in ("lfs", "git", "commits", "repos"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # One lock for every read-modify-write of refs: commits and tags are atomic per server.
        self.lock = threading.RLock()

    # -- blobs ---------------------------------------------------------------------------
    def lfs_path(self, sha256: str) -> Path:
        return self.root / "lfs" / sha256

    def has_lfs(self, sha256: str, size: int | None = None) -> bool:
        path = self.lfs_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_git_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.root / "git" / oid
        if not path.exists():
            _write_atomic(path, data)
        return oid

    def read_entry(self, entry: dict[str, Any]) -> Path:
        if entry.get("lfs"):
            return self.lfs_path(entry["lfs"]["oid"])
        return self.root / "git" / entry["oid"]

    # -- repos ---------------------------------------------------------------------------
    def _repo_file(self, repo_id: str) -> Path:
        owner, name = repo_id.split("/", 1)
        return self.root / "repos" / owner / f"{name}.json"

    def repo(self, repo_id: str) -> dict[str, Any] | None:
        path = self._repo_file(repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, repo: dict[str, Any]) -> None:
        _write_atomic(self._repo_file(f"{repo['owner']}/{repo['name']}"), json.dumps(repo, indent=1).encode())

    def create_repo(self, repo_id: str, *, private: bool, author: str) -> dict[str, Any]:
        """A new repo with the Hub's first commit: a .gitattributes that routes weights to LFS."""
        owner, name = repo_id.split("/", 1)
        oid = self.put_git_blob(GITATTRIBUTES)
        files = {".gitattributes": {"size": len(GITATTRIBUTES), "oid": oid}}
        commit = self.write_commit(parent=None, title="initial commit", message="", author=author, files=files)
        repo = {"owner": owner, "name": name, "private": private, "created": time.time(),
                "branches": {"main": commit["id"]}, "tags": {}, "prs": {}}
        self.save_repo(repo)
        return repo

    # -- commits -------------------------------------------------------------------------
    def commit(self, oid: str) -> dict[str, Any] | None:
        path = self.root / "commits" / f"{oid}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def write_commit(self, *, parent: str | None, title: str, message: str, author: str,
                     files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        body = {"parent": parent, "title": title, "message": message, "author": author,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "files": files}
        body["id"] = hashlib.sha1(json.dumps(body, sort_keys=True).encode() + os.urandom(8)).hexdigest()
        _write_atomic(self.root / "commits" / f"{body['id']}.json", json.dumps(body).encode())
        return body

    def resolve(self, repo: dict[str, Any], revision: str) -> str | None:
        """Branch, tag, refs/pr/N, or a full/short commit oid -> commit oid."""
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["tags"]:
            return repo["tags"][revision]
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
