"""devhub: a local Hub-compatible HTTP server for tests and rehearsal pushes.

Standard library only (http.server.ThreadingHTTPServer), bound to the loopback interface only.
It speaks the subset of the Hub protocol huggingface_hub 2.4 uses for publishing and reading a
model repo (see docs/devhub.md): whoami, repo create/info, preupload, LFS batch + one-time
pre-signed PUT URLs + verify, ndjson commits (with parentCommit -> 412 and create_pr), tags,
branches, refs, paged trees, paths-info, commits, resolve (HEAD/GET, Range); and, only when started
with ``jobs=True`` (``--jobs``), the Jobs API served by local subprocesses (jobs.py).

Users are NAME:TOKEN pairs; a user owns the namespace of its name. A wrong token is a 401, a
write to another user's repo a 403, another user's private repo a 404 RepoNotFound.

Hardening (docs/devhub.md, "Security model"):
- the token is checked before any byte of a body is read: a write without a valid token is a 401
  and the connection is closed (the body is never read); bodies have caps (413);
- every oid, size, name and path is checked (checks.py) before it reaches the store, whose paths
  resolve strictly inside the data folder; LFS objects belong to the repos they were uploaded to;
- every malformed request gets a 4xx with a JSON ``{"error": ...}`` body, never a dropped
  connection or a traceback (a bug is a 500 with a JSON body).

For tests and benches the server counts requests, LFS PUTs and bytes received (``stats``, also
``GET /api/_devhub/stats``), keeps a request log (``requests``: method, path, status, write) and
can crash after N stored LFS objects (``crash_after_lfs_puts``) to test resumed pushes.
Models only: dataset and space repos answer 404.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from . import checks
from .checks import StoreError, check_name, check_oid, check_path, check_ref_name, check_size, field, short
from .jobs import JobManager
from .store import Store, git_blob_sha1, lfs_pointer
from .users import DevhubError, parse_user

__all__ = ["DevHub", "DevhubError", "RequestRecord", "check_loopback", "parse_user"]

# Like the Hub: these go to LFS whatever their size; so does any binary or >= 10 MiB file.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5", ".ckpt",
                ".npz", ".npy", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".model", ".tar", ".gz", ".zip")
LFS_MIN_SIZE = 10 * 1024 * 1024
MAX_JSON_BYTES = 8 << 20        # JSON / form bodies (preupload, LFS batch, tags, jobs...)
MAX_COMMIT_BYTES = 128 << 20    # an ndjson commit carries the base64 of every regular (< 10 MiB) file
MAX_LFS_BYTES = 5 << 30         # one LFS object (= the Hub's single-PUT limit and hubpub's shard size)
SMALL_BODY = 64 << 10           # a body an endpoint does not use is drained (keep-alive) up to this size
LINGER_S, LINGER_BYTES = 2.0, 16 << 20  # after an early answer: discard what the client still sends, then close
TICKET_TTL_S, MAX_TICKETS = 3600.0, 100_000
MAX_BATCH_OBJECTS = 10_000
SEG = r"[^/]+"
REPO = rf"(?P<owner>{SEG})/(?P<name>{SEG})"
API = rf"/api/(?P<type>models|datasets|spaces)/{REPO}"
JOB = rf"/api/jobs/(?P<ns>{SEG})/(?P<job>{SEG})"


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str  # without the query string; never holds a token
    status: int
    write: bool  # True for requests that change or upload anything


@dataclass(frozen=True)
class _Route:
    methods: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: str
    auth: str = "none"  # "user": a valid token before the body is read; "ticket": the URL is the credential
    write: bool = False


def _route(methods: str, pattern: str, handler: str, auth: str = "none", write: bool = False) -> _Route:
    return _Route(tuple(methods.split()), re.compile(pattern + "$"), handler, auth, write)


ROUTES = (
    _route("GET", r"/api/whoami-v2", "_whoami", "user"),
    _route("POST", r"/api/repos/create", "_create_repo", "user", True),
    _route("POST", r"/api/validate-yaml", "_validate_yaml"),
    _route("GET", r"/api/_devhub/stats", "_stats"),
    _route("GET", rf"{API}", "_repo_info"),
    _route("GET", rf"{API}/revision/(?P<rev>{SEG})", "_repo_info"),
    _route("POST", rf"{API}/preupload/(?P<rev>{SEG})", "_preupload", "user"),
    _route("POST", rf"{API}/commit/(?P<rev>{SEG})", "_commit", "user", True),
    _route("POST", rf"{API}/paths-info/(?P<rev>{SEG})", "_paths_info"),
    _route("GET", rf"{API}/tree/(?P<rev>{SEG})(?:/(?P<rest>.*))?", "_tree"),
    _route("GET", rf"{API}/commits/(?P<rev>{SEG})", "_commits"),
    _route("GET", rf"{API}/refs", "_refs"),
    _route("POST", rf"{API}/tag/(?P<rev>{SEG})", "_create_tag", "user", True),
    _route("DELETE", rf"{API}/tag/(?P<rev>{SEG})", "_delete_tag", "user", True),
    _route("POST", rf"{API}/branch/(?P<rev>{SEG})", "_create_branch", "user", True),
    _route("DELETE", rf"{API}/branch/(?P<rev>{SEG})", "_delete_branch", "user", True),
    _route("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "_lfs_batch", "user", True),
    _route("PUT", r"/_devhub/lfs/(?P<ticket>[0-9a-f]{32})", "_lfs_put", "ticket", True),
    _route("POST", rf"/_devhub/lfs-verify/{REPO}", "_lfs_verify", "user", True),
    _route("GET HEAD", rf"/{REPO}/resolve/(?P<rev>{SEG})/(?P<file>.+)", "_resolve"),
    _route("GET", r"/api/jobs/hardware", "_jobs_hardware"),
    _route("POST", rf"/api/jobs/(?P<ns>{SEG})", "_job_create", "user", True),
    _route("GET", rf"/api/jobs/(?P<ns>{SEG})", "_job_list", "user"),
    _route("GET", rf"{JOB}", "_job_inspect", "user"),
    _route("GET", rf"{JOB}/logs", "_job_logs", "user"),
    _route("POST", rf"{JOB}/cancel", "_job_cancel", "user", True),
    _route("POST", rf"{JOB}/duplicate", "_job_duplicate", "user", True),
)


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
    """A devhub server: ``DevHub(data_dir, users).start()`` serves in a thread; ``stop()`` ends it.

    ``jobs=True`` serves the Jobs API by running each job's command as a local subprocess (anyone
    with a token can then run commands as this OS user). The ``max_*`` caps answer 413 beyond them.
    """

    def __init__(self, data_dir: str | os.PathLike[str], users: dict[str, str], *, host: str = "127.0.0.1",
                 port: int = 0, page_size: int = 1000, jobs: bool = False, max_json_bytes: int = MAX_JSON_BYTES,
                 max_commit_bytes: int = MAX_COMMIT_BYTES, max_lfs_bytes: int = MAX_LFS_BYTES,
                 job_timeout: int = 1800, max_running_jobs: int = 4, request_log_limit: int | None = None):
        self.store = Store(Path(data_dir))
        self._tokens = [(token.encode(), name) for name, token in users.items()]
        self.page_size = page_size
        self.max_json_bytes, self.max_commit_bytes, self.max_lfs_bytes = max_json_bytes, max_commit_bytes, max_lfs_bytes
        self.stats: dict[str, int] = {"requests": 0, "write_requests": 0, "lfs_puts": 0, "lfs_bytes": 0,
                                      "commits": 0, "commit_bytes": 0}
        self.requests: list[RequestRecord] = []
        self.request_log_limit = request_log_limit  # None: keep every record (tests slice the list)
        self.crash_after_lfs_puts: int | None = None  # tests: die like a killed process after N PUTs
        self._tickets: dict[str, tuple[str, str, int, float]] = {}  # ticket -> (repo_id, oid, size, expiry)
        self._stats_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.stopped = False
        bind = check_loopback(host)
        try:
            self.httpd = _Server((bind, port), _Handler, self)
        except OSError as exc:
            raise DevhubError(f"cannot listen on {bind}:{port}: {exc.strerror}; pick another --port") from None
        self.host, self.port = self.httpd.server_address[:2]
        self.jobs = JobManager(self.store.root / "jobs", enabled=jobs, endpoint=lambda: self.endpoint,
                               default_timeout=job_timeout, max_running=max_running_jobs)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "DevHub":
        # a short poll: stop() returns at once (tests start and stop hundreds of servers)
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="devhub", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self.jobs.shutdown()
            self.httpd.server_close()

    def stop(self, *, force: bool = False) -> None:
        """Stop at once, like a crash: refuse new requests, cut open connections, kill running jobs."""
        if self.stopped and not force:
            return
        self.stopped = True
        self.jobs.shutdown()
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

    def user_for(self, token: str) -> str | None:
        """The user a token belongs to, compared in constant time."""
        given, found = token.encode("utf-8", "replace"), None
        for known, name in self._tokens:
            if hmac.compare_digest(known, given):
                found = name
        return found

    def new_ticket(self, repo_id: str, oid: str, size: int) -> str:
        now = time.monotonic()
        with self._stats_lock:
            if len(self._tickets) >= MAX_TICKETS:
                for key in [k for k, v in self._tickets.items() if v[3] < now]:
                    del self._tickets[key]
            if len(self._tickets) >= MAX_TICKETS:
                raise StoreError(429, "too many pending LFS uploads; finish them or wait an hour")
            ticket = secrets.token_hex(16)
            self._tickets[ticket] = (repo_id, oid, size, now + TICKET_TTL_S)
        return ticket

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


def _header_safe(text: str) -> str:
    """A header value that cannot break the response: printable ASCII, one line, bounded."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:400]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects
    disable_nagle_algorithm = True  # else every request stalls ~40 ms
    timeout = 60
    server: _Server
    server_version = "devhub"
    # defaults, so that a request refused before _dispatch (bad request line) is recorded too
    command = ""
    requestline = ""
    raw_path = ""
    is_write = False
    status_sent = 0
    headers_sent = False
    body_pending = False
    framing_ok = True
    user: str | None = None

    # -- plumbing ------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # the request log replaces stderr noise
        pass

    @property
    def hub(self) -> DevHub:
        return self.server.hub

    def _reset(self) -> None:
        self.raw_path, self.query = "", {}
        self.status_sent, self.headers_sent, self.is_write, self.user = 0, False, False, None
        self.body_pending, self.framing_ok, self.chunked, self.body_length = False, True, False, 0
        self.expect_continue = False

    def handle_one_request(self) -> None:
        """BaseHTTPRequestHandler's, but every method reaches _dispatch (no bare 501s)."""
        try:
            for _ in range(4):  # RFC 9112: ignore empty lines before a request line
                self.raw_requestline = self.rfile.readline(65537)
                if self.raw_requestline not in (b"\r\n", b"\n"):
                    break
            self._reset()
            self.command, self.request_version = "", "HTTP/1.1"
            if len(self.raw_requestline) > 65536:
                self.send_error(414, "request line too long")
                return
            if not self.raw_requestline.strip():
                self.close_connection = True
                return
            if not self.parse_request():
                return
            if self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.1"
                self.send_error(400, "HTTP/0.9 is not supported: send an HTTP/1.1 request")
                return
            self._dispatch()
            self.wfile.flush()
        except (TimeoutError, socket.timeout, ConnectionError):
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        self.expect_continue = True  # sent only once the token was checked and the body is wanted
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """parse_request's refusals (bad request line, header too long...), as JSON 4xx."""
        if code >= 500:
            code = 400  # e.g. 505: an unsupported HTTP version is the client's error here
        if not str(self.request_version or "").startswith("HTTP/1."):
            self.request_version = "HTTP/1.1"
        self.framing_ok = False
        try:
            self._error(code, message or HTTPStatus(code).phrase, close=True)
        except OSError:
            pass
        self.close_connection = True
        self._linger()

    def _dispatch(self) -> None:
        if self.hub.stopped:
            self.close_connection = True
            return
        try:
            target = self.path
            if not target.startswith("/"):
                if not re.match(r"https?://", target):
                    raise StoreError(400, "request target must be a path starting with '/'")
                target = urlsplit(target).path or "/"  # absolute-form
            path, _, query = target.partition("?")
            self.raw_path = path.partition("#")[0]
            try:
                self.query = parse_qs(query.partition("#")[0], max_num_fields=1000)
            except ValueError:
                raise StoreError(400, "too many query parameters") from None
            self._check_framing()
            self._authenticate()
            route, args = self._match()
            self.is_write = route.write
            if route.auth == "user" and self.user is None:
                raise StoreError(401, "You must be authenticated: pass a token (Authorization: Bearer <token>)")
            getattr(self, route.handler)(**args)
            if self.body_pending and not self._drain_small():
                self.close_connection = True
        except StoreError as exc:
            self._fail(exc)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception as exc:  # a devhub bug: still a JSON answer, and the traceback on stderr
            traceback.print_exc(file=sys.stderr)
            self._fail(StoreError(500, f"devhub internal error: {type(exc).__name__}"))
        if not self.status_sent:  # no answer went out (client hung up, server stopped)
            self._record(0)

    def _match(self) -> tuple[_Route, dict[str, str]]:
        method = "GET" if self.command == "HEAD" else self.command
        allowed: set[str] = set()
        for route in ROUTES:
            m = route.pattern.match(self.raw_path)
            if not m:
                continue
            if method in route.methods or self.command in route.methods:
                return route, {k: unquote(v) if v is not None else "" for k, v in m.groupdict().items()}
            allowed.update(route.methods)
        if allowed:
            methods = ", ".join(sorted(allowed))
            raise StoreError(405, f"method {short(self.command, 20)} not allowed on {short(self.raw_path, 120)}; use {methods}",
                             headers={"Allow": methods})
        raise StoreError(404, f"devhub has no route for {short(self.command, 20)} {short(self.raw_path, 120)}")

    def send_response(self, code: int, message: str | None = None) -> None:
        # logged before the answer leaves, so a client that got it always finds it in the log
        self._record(code)
        super().send_response(code, message)

    def _record(self, status: int) -> None:
        self.status_sent = status
        hub = self.hub
        with hub._stats_lock:
            hub.stats["requests"] += 1
            hub.stats["write_requests"] += int(self.is_write)
            hub.requests.append(RequestRecord(self.command or "", self.raw_path, status, self.is_write))
            if hub.request_log_limit and len(hub.requests) > hub.request_log_limit:
                del hub.requests[: len(hub.requests) // 2]

    # -- bodies ----------------------------------------------------------------------------
    def _check_framing(self) -> None:
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if encodings:
            self.body_pending = True
            if lengths:
                self.framing_ok = False
                raise StoreError(400, "send Transfer-Encoding or Content-Length, not both")
            codings = [c.strip().lower() for c in ",".join(encodings).split(",")]
            if codings != ["chunked"]:
                self.framing_ok = False
                raise StoreError(400, f"unsupported Transfer-Encoding {short(','.join(encodings), 60)}: only 'chunked'")
            self.chunked, self.body_length = True, None
            return
        if lengths:
            values = {v.strip() for v in lengths}
            value = values.pop()
            if values or not re.fullmatch(r"[0-9]{1,18}", value):
                self.body_pending, self.framing_ok = True, False
                raise StoreError(400, f"invalid Content-Length {short(','.join(lengths), 60)}")
            self.body_length = int(value)
            self.body_pending = self.body_length > 0

    def _body_chunks(self, limit: int) -> Iterator[bytes]:
        """The request body, read once; more than ``limit`` bytes is a 413."""
        if not self.body_pending:
            return
        if self.body_length is not None and self.body_length > limit:
            raise StoreError(413, f"request body of {self.body_length} bytes is over devhub's limit of {limit} bytes for this endpoint")
        if self.expect_continue:
            self.expect_continue = False
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.chunked:
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise ConnectionError("client hung up") if not line else StoreError(400, "bad chunk size line")
                size_text = line.split(b";")[0].strip()
                if not re.fullmatch(rb"[0-9a-fA-F]{1,15}", size_text):
                    self.framing_ok = False
                    raise StoreError(400, "bad chunk size in chunked body")
                size = int(size_text, 16)
                if size == 0:
                    for _ in range(100):  # trailers
                        if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                            break
                    self.body_pending = False
                    return
                total += size
                if total > limit:
                    raise StoreError(413, f"request body is over devhub's limit of {limit} bytes for this endpoint")
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 1 << 20))
                    if not chunk:
                        raise ConnectionError("client hung up")
                    left -= len(chunk)
                    yield chunk
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    self.framing_ok = False
                    raise StoreError(400, "chunk not followed by CRLF")
        else:
            left = self.body_length or 0
            while left > 0:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    raise ConnectionError("client hung up")
                left -= len(chunk)
                yield chunk
            self.body_pending = False

    def _read(self, limit: int | None = None) -> bytes:
        return b"".join(self._body_chunks(self.hub.max_json_bytes if limit is None else limit))

    def _drain_small(self) -> bool:
        """Read and drop a small unused body (keep-alive stays in sync); False when it is too big."""
        if not self.body_pending:
            return True
        if not self.framing_ok or self.body_length is None or self.body_length > SMALL_BODY:
            return False
        try:
            for _ in self._body_chunks(SMALL_BODY):
                pass
        except (StoreError, ConnectionError, OSError):
            return False
        return True

    def _no_body(self) -> None:
        if not self._drain_small():
            raise StoreError(413, "this endpoint takes no request body")

    def _json(self, limit: int | None = None) -> Any:
        raw = self._read(limit)
        try:
            return json.loads(raw or b"{}")
        except (ValueError, RecursionError):
            raise StoreError(400, "request body is not JSON") from None

    def _json_object(self) -> dict[str, Any]:
        data = self._json()
        if not isinstance(data, dict):
            raise StoreError(400, "request body must be a JSON object")
        return data

    # -- answers -----------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.headers_sent = True
        if self.command != "HEAD":
            self.wfile.write(body)

    def _ok(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None,
               *, close: bool = False, headers: dict[str, str] | None = None) -> None:
        headers = {**(headers or {}), "X-Error-Message": _header_safe(message)}
        if code:
            headers["X-Error-Code"] = code
        if close:
            headers["Connection"] = "close"
        self._ok({"error": message, **(extra or {})}, status, headers)

    def _fail(self, exc: StoreError) -> None:
        if self.headers_sent:  # mid-answer: nothing to say any more, only to hang up
            self.close_connection = True
            return
        # An unread body is not read for a refused token or an oversized body, nor beyond a small size:
        # the answer goes out at once and the connection closes.
        close = self.body_pending and (exc.status in (401, 413) or not self._drain_small())
        close = close or not self.framing_ok
        try:
            self._error(exc.status, str(exc), exc.code, close=close, headers=exc.headers)
        except OSError:
            self.close_connection = True
            return
        if close:
            self.close_connection = True
            self._linger()

    def _linger(self) -> None:
        """Half-close, then drop what the client is still sending for a moment, so that it reads our
        answer instead of a connection reset; the body is never buffered."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline, left = time.monotonic() + LINGER_S, LINGER_BYTES
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                data = self.connection.recv(1 << 16)
                if not data:
                    break
                left -= len(data)
        except OSError:
            pass

    # -- auth ----------------------------------------------------------------------------
    def _authenticate(self) -> None:
        values = self.headers.get_all("Authorization") or []
        if not values:
            return
        scheme, _, token = values[0].strip().partition(" ")
        user = self.hub.user_for(token.strip()) if len(values) == 1 and scheme.lower() == "bearer" and token.strip() else None
        if user is None:
            raise StoreError(401, "Invalid credentials in Authorization header")
        self.user = user

    def _repo_id(self, type: str, owner: str, name: str) -> str:
        if type != "models":
            raise StoreError(404, "devhub serves model repos only", "RepoNotFound")
        repo_id = f"{owner}/{name}"
        if not checks.is_repo_id(repo_id):
            raise StoreError(400, f"invalid repo id {short(repo_id)}")
        return repo_id

    def _repo(self, repo_id: str, *, write: bool = False) -> dict[str, Any]:
        if not checks.is_repo_id(repo_id):
            raise StoreError(400, f"invalid repo id {short(repo_id)}")
        user = self.user
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
            raise StoreError(404, f"Invalid rev id: {short(revision, 100)}", "RevisionNotFound")
        return commit

    # -- endpoints -----------------------------------------------------------------------
    def _whoami(self) -> None:
        self._no_body()
        self._ok({"type": "user", "name": self.user, "fullname": self.user, "orgs": [],
                  "auth": {"type": "access_token", "accessToken": {"displayName": "devhub", "role": "write"}}})

    def _stats(self) -> None:
        self._no_body()
        with self.hub._stats_lock:
            stats = dict(self.hub.stats)
        self._ok(stats)

    def _validate_yaml(self) -> None:
        self._json_object()
        self._ok({"errors": [], "warnings": []})

    def _create_repo(self) -> None:
        data = self._json_object()
        user = self.user
        assert user is not None
        if field(data, "type", str, default="model") != "model":
            raise StoreError(400, "devhub serves model repos only")
        owner = check_name(field(data, "organization", str, default=user), "namespace")
        name = check_name(field(data, "name", str, required=True), "repo name")
        visibility = field(data, "visibility", str)
        if visibility not in (None, "public", "private", "protected"):
            raise StoreError(400, f"invalid visibility {short(visibility)}: 'public' or 'private'")
        private = bool(field(data, "private", bool, default=False)) or visibility == "private"
        repo_id = f"{owner}/{name}"
        url = f"{self.hub.endpoint}/{repo_id}"
        if owner != user:
            raise StoreError(403, f"You don't have the rights to create a repo under {owner}")
        with self.hub.store.lock:
            if self.hub.store.repo(repo_id) is not None:
                return self._error(409, "You already created this model repo", None, {"url": url})
            self.hub.store.create_repo(repo_id, private=private, author=user)
        self._ok({"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, type: str, owner: str, name: str, rev: str = "") -> None:
        self._no_body()
        repo = self._repo(self._repo_id(type, owner, name))
        commit = self._commit_at(repo, rev or "main")
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sib: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
            if entry.get("lfs"):
                sib["lfs"] = {"sha256": entry["lfs"]["oid"], "size": entry["lfs"]["size"],
                              "pointerSize": entry["lfs"]["pointerSize"]}
            siblings.append(sib)
        repo_id = f"{repo['owner']}/{repo['name']}"
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo["created"]))
        self._ok({"id": repo_id, "_id": repo_id, "modelId": repo_id, "author": repo["owner"], "sha": commit["id"],
                  "private": repo["private"], "disabled": False, "gated": False, "tags": [], "downloads": 0,
                  "likes": 0, "lastModified": commit["date"], "createdAt": created, "siblings": siblings})

    def _refs(self, type: str, owner: str, name: str) -> None:
        self._no_body()
        repo = self._repo(self._repo_id(type, owner, name))

        def refs(kind: str, prefix: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": oid} for n, oid in sorted(repo[kind].items())]

        self._ok({"branches": refs("branches", "refs/heads/"), "tags": refs("tags", "refs/tags/"), "converts": [],
                  "pullRequests": [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid}
                                   for n, oid in sorted(repo["prs"].items(), key=lambda kv: int(kv[0]))]})

    def _commits(self, type: str, owner: str, name: str, rev: str) -> None:
        self._no_body()
        repo = self._repo(self._repo_id(type, owner, name))
        commit = self._commit_at(repo, rev)
        self._ok([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                   "authors": [{"user": c["author"]}]} for c in self.hub.store.history(commit["id"])])

    @staticmethod
    def _tree_items(files: dict[str, dict[str, Any]], under: str, *, recursive: bool) -> list[dict[str, Any]]:
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

    def _tree(self, type: str, owner: str, name: str, rev: str, rest: str = "") -> None:
        self._no_body()
        repo = self._repo(self._repo_id(type, owner, name))
        under = check_path(rest, folder=True) if rest.strip("/") else ""
        files = self._commit_at(repo, rev)["files"]
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        items = self._tree_items(files, under, recursive=recursive)
        if under and not items:
            raise StoreError(404, f"{under} does not exist in this revision", "EntryNotFound")
        cursor = self.query.get("cursor", ["0"])[0] or "0"
        if not re.fullmatch(r"[0-9]{1,12}", cursor):
            raise StoreError(400, f"invalid cursor {short(cursor)}")
        start = int(cursor)
        page = items[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(items):
            query = f"recursive={str(recursive).lower()}&cursor={start + self.hub.page_size}"
            headers["Link"] = f'<{self.hub.endpoint}{self.raw_path}?{query}>; rel="next"'
        self._ok(page, headers=headers)

    def _paths_info(self, type: str, owner: str, name: str, rev: str) -> None:
        raw = self._read()
        repo = self._repo(self._repo_id(type, owner, name))
        if "json" in self.headers.get("Content-Type", ""):
            try:
                data = json.loads(raw or b"{}")
            except (ValueError, RecursionError):
                raise StoreError(400, "request body is not JSON") from None
            wanted_list = data.get("paths", []) if isinstance(data, dict) else None
        else:
            try:
                wanted_list = parse_qs(raw.decode("utf-8"), max_num_fields=100_000).get("paths", [])
            except (UnicodeDecodeError, ValueError):
                raise StoreError(400, "paths-info body must be a form (paths=...&expand=...)") from None
        if not isinstance(wanted_list, list) or not all(isinstance(p, str) for p in wanted_list):
            raise StoreError(400, "paths-info: 'paths' must be a list of strings")
        files = self._commit_at(repo, rev)["files"]
        items = self._tree_items(files, "", recursive=True)
        wanted = {p.strip("/") for p in wanted_list}
        self._ok([item for item in items if item["path"] in wanted])

    def _preupload(self, type: str, owner: str, name: str, rev: str) -> None:
        repo_id = self._repo_id(type, owner, name)
        data = self._json_object()
        repo = self._repo(repo_id, write=True)
        base = self.hub.store.resolve(repo, rev)
        files = (self.hub.store.commit(base) or {}).get("files", {}) if base else {}
        items = field(data, "files", list, default=[])
        if len(items) > MAX_BATCH_OBJECTS:
            raise StoreError(413, f"at most {MAX_BATCH_OBJECTS} files per preupload request")
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise StoreError(400, "preupload: each entry of 'files' must be an object")
            path = check_path(item.get("path"))
            size = check_size(item.get("size", 0))
            sample = checks.b64decode(item.get("sample", ""), f"preupload sample of {short(path)}")
            lfs = path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample
            remote = files.get(path)
            oid = (remote["lfs"]["oid"] if remote.get("lfs") else remote["oid"]) if remote else None
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._ok({"files": out})

    def _lfs_batch(self, owner: str, name: str) -> None:
        repo_id = self._repo_id("models", owner, name)
        data = self._json_object()
        repo = self._repo(repo_id, write=True)
        if data.get("operation") != "upload":
            raise StoreError(400, "devhub's LFS batch supports operation 'upload' only")
        objects_in = field(data, "objects", list, default=[])
        if len(objects_in) > MAX_BATCH_OBJECTS:
            raise StoreError(413, f"at most {MAX_BATCH_OBJECTS} objects per LFS batch")
        store, cache, objects = self.hub.store, {}, []
        for obj in objects_in:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            try:
                check_oid(oid)
                check_size(size)
            except StoreError as exc:
                objects.append({"oid": oid if isinstance(oid, str) else "", "size": size if isinstance(size, int) and size >= 0 else 0,
                                "error": {"code": 422, "message": str(exc)}})
                continue
            if size > self.hub.max_lfs_bytes:
                objects.append({"oid": oid, "size": size, "error": {"code": 413, "message":
                                f"object of {size} bytes is over devhub's limit of {self.hub.max_lfs_bytes} bytes (--max-lfs-size)"}})
            elif store.owns_lfs(repo, oid, cache=cache) and store.has_lfs(oid, size):
                objects.append({"oid": oid, "size": size})  # this repo has it already: no actions, nothing is sent
            else:  # unknown here, even if another repo stored the same bytes: the client proves it has them
                ticket = self.hub.new_ticket(repo_id, oid, size)
                objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {
                    "upload": {"href": f"{self.hub.endpoint}/_devhub/lfs/{ticket}"},
                    "verify": {"href": f"{self.hub.endpoint}/_devhub/lfs-verify/{repo_id}"}}})
        self._ok({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_put(self, ticket: str) -> None:
        hub = self.hub
        with hub._stats_lock:  # one-time URL: no Authorization header comes
            expected = hub._tickets.pop(ticket, None)
        if expected is None or expected[3] < time.monotonic():
            raise StoreError(403, "upload URL unknown, expired or already used: ask the LFS batch endpoint for a new one")
        repo_id, oid, size, _ = expected
        done = False
        try:
            if self.body_length is not None and self.body_length != size:
                raise StoreError(400, f"Content-Length {self.body_length} is not the size {size} given to the LFS batch")
            target = hub.store.lfs_path(oid)
            digest, received = hashlib.sha256(), 0
            fd, tmp = tempfile.mkstemp(prefix=f".{oid}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    for chunk in self._body_chunks(size):
                        digest.update(chunk)
                        received += len(chunk)
                        fh.write(chunk)
                hub.count("lfs_bytes", received)
                if digest.hexdigest() != oid or received != size:
                    done = True  # the bytes were wrong: this URL is spent
                    raise StoreError(400, f"uploaded content does not match oid {oid} / size {size}")
                with hub._stats_lock:  # serialised, so a crash after N PUTs stores exactly N objects
                    if hub.stopped:
                        raise ConnectionError("server stopped")  # an in-flight upload dies with the server
                    os.replace(tmp, target)
                    hub.store.add_lfs_owner(repo_id, oid)
                    hub.stats["lfs_puts"] += 1
                    crash = hub.stats["lfs_puts"] == hub.crash_after_lfs_puts
                    if crash:
                        hub.stopped = True
                    done = True
            finally:
                Path(tmp).unlink(missing_ok=True)
        finally:
            if not done:  # a failed upload (hang-up, bad length) may retry with the same URL
                with hub._stats_lock:
                    hub._tickets.setdefault(ticket, expected)
        self._ok({})
        if crash:
            threading.Thread(target=hub.stop, kwargs={"force": True}).start()

    def _lfs_verify(self, owner: str, name: str) -> None:
        repo_id = self._repo_id("models", owner, name)
        data = self._json_object()
        repo = self._repo(repo_id, write=True)
        oid, size = check_oid(data.get("oid")), check_size(data.get("size"))
        store = self.hub.store
        if not (store.owns_lfs(repo, oid) and store.has_lfs(oid, size)):  # says nothing of other repos' objects
            raise StoreError(404, f"LFS object {oid} was not uploaded to {repo_id}")
        self._ok({})

    def _commit(self, type: str, owner: str, name: str, rev: str) -> None:
        repo_id = self._repo_id(type, owner, name)
        raw = self._read(self.hub.max_commit_bytes)
        self.hub.count("commit_bytes", len(raw))
        lines = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except (ValueError, RecursionError):
                raise StoreError(400, f"commit payload line {number} is not JSON (the body is ndjson)") from None
            if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("value"), dict):
                raise StoreError(400, f"commit payload line {number}: expected {{\"key\": ..., \"value\": {{...}}}}")
            lines.append(item)
        if not lines or lines[0]["key"] != "header":
            raise StoreError(400, "commit needs a header line first, with a summary")
        header = lines[0]["value"]
        summary = field(header, "summary", str, required=True, where="commit header")
        description = field(header, "description", str, default="", where="commit header")
        parent = field(header, "parentCommit", str, where="commit header")
        if not summary.strip():
            raise StoreError(400, "commit needs a header line with a summary")
        if parent is not None and not checks.HEX_PREFIX.fullmatch(parent):
            raise StoreError(400, f"invalid parentCommit {short(parent)}: expected a commit oid")
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if not create_pr and rev not in repo["branches"]:
                raise StoreError(404, f"Invalid rev id: {short(rev, 100)} (commits go to a branch)", "RevisionNotFound")
            head = store.resolve(repo, rev)
            if head is None:
                raise StoreError(404, f"Invalid rev id: {short(rev, 100)}", "RevisionNotFound")
            if parent and not create_pr and not head.startswith(parent):
                raise StoreError(412, "A commit has happened since. Please refresh and try again.")
            start = (store.resolve(repo, parent) if create_pr and parent else head) or head
            files = dict(store.commit(start)["files"])  # type: ignore[index]
            cache: dict[str, Any] = {}
            for line in lines[1:]:
                self._apply(repo, files, line["key"], line["value"], cache)
            commit = store.write_commit(parent=start, title=summary, message=description,
                                        author=self.user or "", files=files)
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

    def _apply(self, repo: dict[str, Any], files: dict[str, dict[str, Any]], key: str, value: dict[str, Any],
               cache: dict[str, Any]) -> None:
        store = self.hub.store
        if key == "file":
            path = check_path(value.get("path"))
            content = value.get("content", "")
            if value.get("encoding") == "base64":
                data = checks.b64decode(content, f"content of {short(path)}")
            elif isinstance(content, str):
                data = content.encode("utf-8", "surrogatepass")
            else:
                raise StoreError(400, f"content of {short(path)} must be a string")
            files[path] = {"size": len(data), "oid": store.put_git_blob(data)}
        elif key == "lfsFile":
            path = check_path(value.get("path"))
            oid, size = check_oid(value.get("oid")), check_size(value.get("size"))
            if value.get("algo", "sha256") != "sha256":
                raise StoreError(400, f"lfsFile {short(path)}: algo must be 'sha256'")
            # only the objects uploaded to THIS repo (or already in its history): another repo's
            # private weights cannot be claimed by knowing their sha256
            if not (store.owns_lfs(repo, oid, cache=cache) and store.has_lfs(oid, size)):
                raise StoreError(400, f"LFS object {oid} for {path} was never uploaded to {repo['owner']}/{repo['name']}")
            pointer = lfs_pointer(oid, size)
            files[path] = {"size": size, "oid": git_blob_sha1(pointer),
                           "lfs": {"oid": oid, "size": size, "pointerSize": len(pointer)}}
        elif key == "deletedFile":
            path = check_path(value.get("path"))
            if files.pop(path, None) is None:
                raise StoreError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = check_path(value.get("path"), folder=True) + "/"
            for name in [n for n in files if n.startswith(prefix)]:
                del files[name]
        else:
            raise StoreError(400, f"unknown commit operation {short(key, 40)}")

    def _create_tag(self, type: str, owner: str, name: str, rev: str) -> None:
        repo_id = self._repo_id(type, owner, name)
        data = self._json_object()
        tag = check_ref_name(field(data, "tag", str, required=True), "tag")
        field(data, "message", str)
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if tag in repo["tags"]:
                raise StoreError(409, f"Tag {tag} already exists")
            repo["tags"][tag] = self._commit_at(repo, rev)["id"]
            store.save_repo(repo)
        self._ok({})

    def _delete_tag(self, type: str, owner: str, name: str, rev: str) -> None:
        repo_id = self._repo_id(type, owner, name)
        self._no_body()
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if repo["tags"].pop(rev, None) is None:
                raise StoreError(404, f"Tag {short(rev, 100)} not found", "RevisionNotFound")
            store.save_repo(repo)
        self._ok({})

    def _create_branch(self, type: str, owner: str, name: str, rev: str) -> None:
        repo_id = self._repo_id(type, owner, name)
        data = self._json_object()
        branch = check_ref_name(rev, "branch")
        start = field(data, "startingPoint", str, default="main")
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if branch in repo["branches"]:
                raise StoreError(409, f"Branch {branch} already exists")
            repo["branches"][branch] = self._commit_at(repo, start)["id"]
            store.save_repo(repo)
        self._ok({})

    def _delete_branch(self, type: str, owner: str, name: str, rev: str) -> None:
        repo_id = self._repo_id(type, owner, name)
        self._no_body()
        store = self.hub.store
        with store.lock:
            repo = self._repo(repo_id, write=True)
            if rev == "main":
                raise StoreError(403, "cannot delete branch main")
            if repo["branches"].pop(rev, None) is None:
                raise StoreError(404, f"cannot delete branch {short(rev, 100)}: no such branch", "RevisionNotFound")
            store.save_repo(repo)
        self._ok({})

    def _resolve(self, owner: str, name: str, rev: str, file: str) -> None:
        self._no_body()
        repo = self._repo(self._repo_id("models", owner, name))
        path = check_path(file)
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
        match = re.fullmatch(r"bytes=(\d{1,18})-", self.headers.get("Range", ""))
        status = 200
        if match and int(match[1]) < size:
            start, status = int(match[1]), 206
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.headers_sent = True
        if self.command == "GET":
            with open(blob, "rb") as fh:
                fh.seek(start)
                while chunk := fh.read(1 << 20):
                    self.wfile.write(chunk)

    # -- jobs (jobs.py; 404 "jobs are disabled" unless DevHub(jobs=True)) ----------------------
    def _namespace(self, ns: str) -> str:
        self.hub.jobs._check()
        if ns != self.user:
            raise StoreError(403, f"devhub runs jobs in your own namespace only: use {self.user}, not {short(ns, 100)}")
        return ns

    def _jobs_hardware(self) -> None:
        self._no_body()
        self._ok(self.hub.jobs.hardware())

    def _job_create(self, ns: str) -> None:
        owner = self._namespace(ns)
        self._ok(self.hub.jobs.create(owner, self._json()))

    def _job_list(self, ns: str) -> None:
        self._no_body()
        owner = self._namespace(ns)
        self._ok(self.hub.jobs.list(owner, self.query.get("stage", []), self.query.get("label", [])))

    def _job_inspect(self, ns: str, job: str) -> None:
        self._no_body()
        jobs = self.hub.jobs
        self._ok(jobs.info(jobs.get(self._namespace(ns), job)))

    def _job_cancel(self, ns: str, job: str) -> None:
        self._no_body()
        self._ok(self.hub.jobs.cancel(self._namespace(ns), job))

    def _job_duplicate(self, ns: str, job: str) -> None:
        self._no_body()
        self._ok(self.hub.jobs.duplicate(self._namespace(ns), job))

    def _job_logs(self, ns: str, job: str) -> None:
        self._no_body()
        jobs = self.hub.jobs
        found = jobs.get(self._namespace(ns), job)
        tail_text = self.query.get("tail", [None])[0]
        if tail_text is not None and not re.fullmatch(r"[0-9]{1,9}", tail_text):
            raise StoreError(400, f"invalid tail {short(tail_text)}: expected a number of lines")
        tail = int(tail_text) if tail_text is not None else None
        # an event stream: no length, the connection closes when the job (and so its log) ends
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.headers_sent = True
        self.close_connection = True
        if self.command == "HEAD":
            return
        for chunk in jobs.stream(found, tail):
            if self.hub.stopped:
                return
            self.wfile.write(chunk)
