"""devhub: a local Hub-compatible HTTP server for tests and rehearsal pushes.

Standard library only (http.server.ThreadingHTTPServer), bound to the loopback interface only.
It speaks the subset of the Hub protocol huggingface_hub 2.4 uses for publishing and reading a
model repo (see docs in /work/shared/hub-protocol.md): whoami, repo create/info, preupload,
LFS batch + one-time pre-signed PUT URLs + verify, ndjson commits (with parentCommit -> 412 and
create_pr), tags, branches, refs, paged trees, paths-info, commits, resolve (HEAD/GET, Range).

Users are NAME:TOKEN pairs; a user owns the namespace of its name. A wrong token is a 401, a
write to another user's repo a 403, another user's private repo a 404 RepoNotFound.

For tests and benches the server counts requests, LFS PUTs and bytes received (``stats``, also
``GET /api/_devhub/stats``), keeps a request log (``requests``: method, path, status, write) and
can crash after N stored LFS objects (``crash_after_lfs_puts``) to test resumed pushes.
Models only: dataset and space repos answer 404.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import HubpubError
from .store import Store, StoreError, git_blob_sha1, lfs_pointer

# Like the Hub: these go to LFS whatever their size; so does any binary or >= 10 MiB file.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5", ".ckpt",
                ".npz", ".npy", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".model", ".tar", ".gz", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024
REPO = r"(?P<owner>[\w.\-]+)/(?P<name>[\w.\-]+)"


class DevhubError(HubpubError):
    """devhub cannot start (bad bind address, port in use, bad --user)."""

    stage = "devhub"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # without the query string; never holds a token
    status: int
    write: bool  # True for requests that change or upload anything


def parse_user(spec: str) -> tuple[str, str]:
    name, sep, token = spec.partition(":")
    if not sep or not re.fullmatch(r"[\w.\-]+", name) or len(token) < 8:
        raise DevhubError(f"--user {name or spec!r}: expected NAME:TOKEN with a token of 8+ characters, e.g. --user alice:hf_alice_secret")
    return name, token


def check_loopback(host: str) -> str:
    """The address to bind; anything but the loopback interface is refused."""
    try:
        addr = ipaddress.ip_address(socket.gethostbyname(host) if host == "localhost" else host)
    except (ValueError, OSError):
        addr = None
    if addr is None or not addr.is_loopback:
        raise DevhubError(f"--host {host}: devhub binds to the loopback interface only (it has no TLS and test tokens); use --host 127.0.0.1")
    return str(addr)


class DevHub:
    """A devhub server: ``DevHub(data_dir, users).start()`` serves in a thread; ``stop()`` ends it."""

    def __init__(self, data_dir: str | os.PathLike[str], users: dict[str, str], *, host: str = "127.0.0.1",
                 port: int = 0, page_size: int = 1000):
        self.store = Store(Path(data_dir))
        self.tokens = {token: name for name, token in users.items()}
        self.page_size = page_size
        self.stats: dict[str, int] = {"requests": 0, "write_requests": 0, "lfs_puts": 0, "lfs_bytes": 0,
                                      "commits": 0, "commit_bytes": 0}
        self.requests: list[RequestRecord] = []
        self.crash_after_lfs_puts: int | None = None  # tests: die like a killed process after N PUTs
        self._tickets: dict[str, tuple[str, int]] = {}
        self._stats_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.stopped = False
        bind = check_loopback(host)
        try:
            self.httpd = _Server((bind, port), _Handler, self)
        except OSError as exc:
            raise DevhubError(f"cannot listen on {bind}:{port}: {exc.strerror}; pick another --port") from None
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "DevHub":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="devhub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def stop(self, *, force: bool = False) -> None:
        """Stop at once, like a crash: refuse new requests and cut open connections."""
        if self.stopped and not force:
            return
        self.stopped = True
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def count(self, key: str, amount: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += amount

    def __enter__(self) -> "DevHub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type, hub: DevHub):
        self.hub = hub
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.hub._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.hub._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.hub.stopped:  # a client that hung up is not worth a traceback
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    disable_nagle_algorithm = True  # else every request stalls ~40 ms
    timeout = 60
    server: _Server
    server_version = "devhub"

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr noise
        pass

    @property
    def hub(self) -> DevHub:
        return self.server.hub

    def _dispatch(self) -> None:
        if self.hub.stopped:
            self.close_connection = True
            return
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.raw_path = url.path
        self.status_sent = 0
        self.is_write = False
        self.body = b""
        self.body_read = False
        try:
            self._route(url.path)
        except StoreError as exc:
            self._drain()
            self._error(exc.status, str(exc), exc.code)
        except (ConnectionError, socket.timeout):
            self.close_connection = True
        if not self.status_sent:  # no answer went out (client hung up, server stopped)
            self._record(0)

    def send_response(self, code: int, message: str | None = None) -> None:
        # logged before the answer leaves, so a client that got it always finds it in the log
        self._record(code)
        super().send_response(code, message)

    def _record(self, status: int) -> None:
        self.status_sent = status
        with self.hub._stats_lock:
            self.hub.stats["requests"] += 1
            self.hub.stats["write_requests"] += int(self.is_write)
            self.hub.requests.append(RequestRecord(self.command, self.raw_path, status, self.is_write))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, read to the end (also on errors, or keep-alive desynchronises)."""
        if self.body_read:
            return
        self.body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    raise ConnectionError("client hung up")
                left -= len(chunk)
                yield chunk

    def _read(self) -> bytes:
        self.body = b"".join(self._body_chunks())
        return self.body

    def _drain(self) -> None:
        for _ in self._body_chunks():
            pass

    def _json(self) -> Any:
        try:
            return json.loads(self._read() or b"{}")
        except ValueError:
            raise StoreError(400, "request body is not JSON") from None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.status_sent = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _ok(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._ok({"error": message, **(extra or {})}, status, headers)

    # -- auth ----------------------------------------------------------------------------
    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        user = self.hub.tokens.get(token)
        if user is None:
            raise StoreError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_id: str, *, write: bool = False) -> dict[str, Any]:
        user = self._user()
        repo = self.hub.store.repo(repo_id)
        if repo is None or (repo["private"] and user != repo["owner"]):
            raise StoreError(404, "Repository not found", "RepoNotFound")
        if write and user is None:
            raise StoreError(401, "You must be authenticated to write to a repo: pass a token")
        if write and user != repo["owner"]:
            raise StoreError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit_at(self, repo: dict[str, Any], revision: str) -> dict[str, Any]:
        oid = self.hub.store.resolve(repo, revision)
        commit = self.hub.store.commit(oid) if oid else None
        if commit is None:
            raise StoreError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # -- routing -------------------------------------------------------------------------
    def _route(self, path: str) -> None:
        m = self.command, path
        api = re.match(rf"^/api/(?P<type>models|datasets|spaces)/{REPO}(?:/(?P<op>[\w\-]+)(?:/(?P<rev>[^/]+))?(?:/(?P<rest>.*))?)?$", path)
        if m == ("GET", "/api/whoami-v2"):
            return self._whoami()
        if m == ("POST", "/api/repos/create"):
            return self._create_repo()
        if m == ("POST", "/api/validate-yaml"):
            self._read()
            return self._ok({"errors": [], "warnings": []})
        if path == "/api/_devhub/stats":
            self._drain()
            return self._ok(dict(self.hub.stats))
        if api:
            if api["type"] != "models":
                self._drain()
                raise StoreError(404, "devhub serves model repos only", "RepoNotFound")
            repo_id = f"{api['owner']}/{api['name']}"
            rev = unquote(api["rev"]) if api["rev"] else None
            rest = unquote(api["rest"]) if api["rest"] else ""
            return self._api(self.command, api["op"], repo_id, rev, rest)
        lfs = re.match(rf"^/{REPO}\.git/info/lfs/objects/batch$", path)
        if lfs and self.command == "POST":
            return self._lfs_batch(f"{lfs['owner']}/{lfs['name']}")
        put = re.match(r"^/_devhub/lfs/(?P<ticket>[0-9a-f]{32})$", path)
        if put and self.command == "PUT":
            return self._lfs_put(put["ticket"])
        verify = re.match(rf"^/_devhub/lfs-verify/{REPO}$", path)
        if verify and self.command == "POST":
            return self._lfs_verify(f"{verify['owner']}/{verify['name']}")
        resolve = re.match(rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", path)
        if resolve and self.command in ("GET", "HEAD"):
            self._drain()
            return self._resolve(f"{resolve['owner']}/{resolve['name']}", unquote(resolve["rev"]), unquote(resolve["file"]))
        self._drain()
        raise StoreError(404, f"devhub has no route for {self.command} {path}")

    def _api(self, method: str, op: str | None, repo_id: str, rev: str | None, rest: str) -> None:
        store = self.hub.store
        if op is None and method == "GET":
            self._drain()
            return self._repo_info(repo_id, None)
        if op == "revision" and method == "GET":
            self._drain()
            return self._repo_info(repo_id, rev)
        if op == "preupload" and method == "POST":
            return self._preupload(repo_id, rev or "main")
        if op == "commit" and method == "POST":
            return self._commit(repo_id, rev or "main")
        if op == "paths-info" and method == "POST":
            form = parse_qs(self._read().decode())
            repo = self._repo(repo_id)
            files = self._commit_at(repo, rev or "main")["files"]
            items = self._tree_items(files, "", recursive=True)
            wanted = {p.strip("/") for p in form.get("paths", [])}
            return self._ok([item for item in items if item["path"] in wanted])
        if op in ("tree", "commits", "refs") and method == "GET":
            self._drain()
            repo = self._repo(repo_id)
            if op == "refs":
                return self._ok(self._refs(repo))
            commit = self._commit_at(repo, rev or "main")
            if op == "commits":
                return self._ok([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                                  "authors": [{"user": c["author"]}]} for c in store.history(commit["id"])])
            return self._tree(commit["files"], rest)
        if op == "tag" and rev:
            return self._tag(repo_id, rev, create=method == "POST")
        if op == "branch" and rev:
            return self._branch(repo_id, rev, create=method == "POST")
        self._drain()
        raise StoreError(404, f"devhub has no route for {method} {self.raw_path}")

    # -- endpoints -----------------------------------------------------------------------
    def _whoami(self) -> None:
        self._drain()
        user = self._user()
        if user is None:
            raise StoreError(401, "Invalid credentials in Authorization header")
        self._ok({"type": "user", "name": user, "fullname": user, "orgs": [],
                  "auth": {"type": "access_token", "accessToken": {"displayName": "devhub", "role": "write"}}})

    def _create_repo(self) -> None:
        self.is_write = True
        data = self._json()
        user = self._user()
        if user is None:
            raise StoreError(401, "You must be authenticated to create a repo: pass a token")
        if data.get("type", "model") not in (None, "model"):
            raise StoreError(400, "devhub serves model repos only")
        owner = data.get("organization") or user
        name = data.get("name") or ""
        if not re.fullmatch(r"[\w.\-]{1,96}", name):
            raise StoreError(400, f"invalid repo name {name!r}")
        repo_id = f"{owner}/{name}"
        url = f"{self.hub.endpoint}/{repo_id}"
        if owner != user:
            raise StoreError(403, f"You don't have the rights to create a repo under {owner}")
        private = bool(data.get("private")) or data.get("visibility") == "private"
        with self.hub.store.lock:
            if self.hub.store.repo(repo_id) is not None:
                return self._error(409, "You already created this model repo", None, {"url": url})
            self.hub.store.create_repo(repo_id, private=private, author=user)
        self._ok({"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo_id: str, rev: str | None) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, rev or "main")
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sib: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry.get("lfs"):
                sib["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["lfs"]["size"],
                              "pointerSize": entry["lfs"]["pointerSize"]}
            siblings.append(sib)
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo["created"]))
        self._ok({"id": repo_id, "_id": repo_id, "modelId": repo_id, "author": repo["owner"], "sha": commit["id"],
                  "private": repo["private"], "disabled": False, "gated": False, "tags": [], "downloads": 0,
                  "likes": 0, "lastModified": commit["date"], "createdAt": created, "siblings": siblings})

    def _refs(self, repo: dict[str, Any]) -> dict[str, Any]:
        def refs(kind: str, prefix: str) -> list[dict[str, str]]:
            return [{"name": name, "ref": f"{prefix}{name}", "targetCommit": oid} for name, oid in sorted(repo[kind].items())]

        return {"branches": refs("branches", "refs/heads/"), "tags": refs("tags", "refs/tags/"), "converts": [],
                "pullRequests": [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid}
                                 for n, oid in sorted(repo["prs"].items(), key=lambda kv: int(kv[0]))]}

    def _tree_items(self, files: dict[str, dict[str, Any]], under: str, *, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        items: dict[str, dict[str, Any]] = {}
        for path, entry in files.items():
            if not path.startswith(prefix):
                continue
            parts = PurePosixPath(path[len(prefix):]).parts
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    items.setdefault(folder, {"type": "directory", "path": folder,
                                              "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                item: dict[str, Any] = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
                if entry.get("lfs"):
                    item["lfs"] = dict(entry["lfs"])
                items[path] = item
        return [items[key] for key in sorted(items)]

    def _tree(self, files: dict[str, dict[str, Any]], under: str) -> None:
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        items = self._tree_items(files, under, recursive=recursive)
        if under.strip("/") and not items:
            raise StoreError(404, f"{under} does not exist in this revision", "EntryNotFound")
        start = int(self.query.get("cursor", ["0"])[0] or 0)
        page = items[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(items):
            query = f"recursive={str(recursive).lower()}&cursor={start + self.hub.page_size}"
            headers["Link"] = f'<{self.hub.endpoint}{self.raw_path}?{query}>; rel="next"'
        self._ok(page, headers=headers)

    def _preupload(self, repo_id: str, rev: str) -> None:
        data = self._json()
        repo = self._repo(repo_id, write=True)
        base = self.hub.store.resolve(repo, rev)
        files = (self.hub.store.commit(base) or {}).get("files", {}) if base else {}
        out = []
        for item in data.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample", ""))
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample
            remote = files.get(path)
            oid = (remote["lfs"]["oid"] if remote.get("lfs") else remote["oid"]) if remote else None
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._ok({"files": out})

    def _lfs_batch(self, repo_id: str) -> None:
        self.is_write = True
        data = self._json()
        self._repo(repo_id, write=True)
        if data.get("operation") != "upload":
            raise StoreError(400, "devhub's LFS batch supports operation 'upload' only")
        objects = []
        for obj in data.get("objects", []):
            oid, size = str(obj.get("oid", "")), int(obj.get("size", -1))
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or size < 0:
                objects.append({"oid": oid, "size": max(size, 0), "error": {"code": 422, "message": "invalid oid or size"}})
            elif self.hub.store.has_lfs(oid, size):
                objects.append({"oid": oid, "size": size})  # stored already: no actions, nothing is sent
            else:
                ticket = secrets.token_hex(16)
                self.hub._tickets[ticket] = (oid, size)
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{self.hub.endpoint}/_devhub/lfs/{ticket}"},
                    "verify": {"href": f"{self.hub.endpoint}/_devhub/lfs-verify/{repo_id}"}}})
        self._ok({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, ticket: str) -> None:
        self.is_write = True
        expected = self.hub._tickets.pop(ticket, None)  # one-time URL: no Authorization header comes
        if expected is None:
            self._drain()
            raise StoreError(403, "upload URL unknown or already used: ask the LFS batch endpoint for a new one")
        oid, size = expected
        target = self.hub.store.lfs_path(oid)
        digest, received = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(prefix=f".{oid}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in self._body_chunks():
                    digest.update(chunk)
                    received += len(chunk)
                    fh.write(chunk)
            self.hub.count("lfs_bytes", received)
            if digest.hexdigest() != oid or received != size:
                raise StoreError(400, f"uploaded content does not match oid {oid} / size {size}")
            with self.hub._stats_lock:  # serialised, so a crash after N PUTs stores exactly N objects
                if self.hub.stopped:
                    raise ConnectionError("server stopped")  # an in-flight upload dies with the server
                os.replace(tmp, target)
                self.hub.stats["lfs_puts"] += 1
                crash = self.hub.stats["lfs_puts"] == self.hub.crash_after_lfs_puts
                if crash:
                    self.hub.stopped = True
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._ok({})
        if crash:
            threading.Thread(target=self.hub.stop, kwargs={"force": True}).start()

    def _lfs_verify(self, repo_id: str) -> None:
        self.is_write = True
        data = self._json()
        self._repo(repo_id, write=True)
        if not self.hub.store.has_lfs(str(data.get("oid")), data.get("size")):
            raise StoreError(404, f"LFS object {data.get('oid')} was not uploaded")
        self._ok({})

    def _commit(self, repo_id: str, rev: str) -> None:
        self.is_write = True
        raw = self._read()
        self.hub.count("commit_bytes", len(raw))
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError:
            raise StoreError(400, "commit payload is not ndjson") from None
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if not header or not header.get("summary"):
            raise StoreError(400, "commit needs a header line with a summary")
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if not create_pr and rev not in repo["branches"]:
                raise StoreError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
            head = store.resolve(repo, rev)
            if head is None:
                raise StoreError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and not create_pr and not head.startswith(parent):
                raise StoreError(412, "A commit has happened since. Please refresh and try again.")
            start = (parent and store.resolve(repo, parent)) if create_pr and parent else head
            files = dict(store.commit(start)["files"])  # type: ignore[index]
            for line in lines:
                self._apply(files, line.get("key"), line.get("value") or {})
            commit = store.write_commit(parent=start, title=header["summary"], message=header.get("description", ""),
                                        author=self._user() or "", files=files)
            out = {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{commit['id']}", "commitOid": commit["id"]}
            if create_pr:
                number = str(len(repo["prs"]) + 1)
                repo["prs"][number] = commit["id"]
                out["pullRequestUrl"] = f"{self.hub.endpoint}/{repo_id}/discussions/{number}"
            else:
                repo["branches"][rev] = commit["id"]
            store.save_repo(repo)
        self.hub.count("commits")
        self._ok(out)

    def _apply(self, files: dict[str, dict[str, Any]], key: str | None, value: dict[str, Any]) -> None:
        path = str(value.get("path", ""))
        if key == "header":
            return
        parts = PurePosixPath(path).parts
        if not path or path.startswith("/") or ".." in parts or "\\" in path:
            raise StoreError(400, f"invalid path in commit: {path!r}")
        if key == "file":
            content = base64.b64decode(value.get("content", "")) if value.get("encoding") == "base64" else str(value.get("content", "")).encode()
            files[path] = {"size": len(content), "oid": self.hub.store.put_git_blob(content)}
        elif key == "lfsFile":
            oid, size = value.get("oid", ""), value.get("size")
            if not self.hub.store.has_lfs(oid, size):
                raise StoreError(400, f"LFS object {oid} for {path} was never uploaded")
            size = self.hub.store.lfs_path(oid).stat().st_size
            pointer = lfs_pointer(oid, size)
            files[path] = {"size": size, "oid": git_blob_sha1(pointer),
                           "lfs": {"oid": oid, "size": size, "pointerSize": len(pointer)}}
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise StoreError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            for name in [n for n in files if n.startswith(prefix)]:
                del files[name]
        else:
            raise StoreError(400, f"unknown commit operation {key!r}")

    def _tag(self, repo_id: str, name: str, *, create: bool) -> None:
        self.is_write = True
        data = self._json() if create else (self._drain() or {})
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if create:
                tag = str(data.get("tag", ""))
                if not re.fullmatch(r"[\w][\w.\-/]*", tag):
                    raise StoreError(400, f"invalid tag name {tag!r}")
                if tag in repo["tags"]:
                    raise StoreError(409, f"Tag {tag} already exists")
                repo["tags"][tag] = self._commit_at(repo, name)["id"]
            elif repo["tags"].pop(name, None) is None:
                raise StoreError(404, f"Tag {name} not found", "RevisionNotFound")
            store.save_repo(repo)
        self._ok({})

    def _branch(self, repo_id: str, name: str, *, create: bool) -> None:
        self.is_write = True
        data = self._json() if create else (self._drain() or {})
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if create:
                if name in repo["branches"]:
                    raise StoreError(409, f"Branch {name} already exists")
                repo["branches"][name] = self._commit_at(repo, data.get("startingPoint") or "main")["id"]
            else:
                if name == "main" or repo["branches"].pop(name, None) is None:
                    raise StoreError(404 if name != "main" else 403, f"cannot delete branch {name}", "RevisionNotFound")
            store.save_repo(repo)
        self._ok({})

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_at(repo, rev)
        entry = commit["files"].get(path)
        if entry is None:
            raise StoreError(404, f"Entry not found: {path}", "EntryNotFound")
        blob = self.hub.store.read_entry(entry)
        size = blob.stat().st_size
        headers = {"X-Repo-Commit": commit["id"], "Accept-Ranges": "bytes"}
        if entry.get("lfs"):
            headers["ETag"] = headers["X-Linked-Etag"] = f'"{entry["lfs"]["oid"]}"'
            headers["X-Linked-Size"] = str(size)
        else:
            headers["ETag"] = f'"{entry["oid"]}"'
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        status = 200
        if match and int(match[1]) < size:
            start, status = int(match[1]), 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        self.status_sent = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "GET":
            with open(blob, "rb") as fh:
                fh.seek(start)
                while chunk := fh.read(1 << 20):
                    self.wfile.write(chunk)
