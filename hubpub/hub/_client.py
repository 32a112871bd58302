"""The huggingface_hub client as push, plan and remote use it: endpoint, token, error mapping.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET at import time, so
everything here passes ``endpoint=`` explicitly and adjusts the constants only for the duration
of a call (``hub_client``). Every exception the client raises becomes a one-line PushError that
says what to do; no message ever contains the token.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from typing import Any, Iterator
from urllib.parse import urlsplit

from ..errors import HubpubError, PushError

DEFAULT_ENDPOINT = "https://huggingface.co"
NO_TOKEN = "no Hugging Face token: set HF_TOKEN or run `hf auth login`"


# a dead endpoint fails in under 3 s: huggingface_hub itself retries 5 times over ~23 s
PROBE_TRIES = 2
PROBE_TIMEOUT_S = 1.0
PROBE_WAIT_S = 0.25


def shown_url(url: str) -> str:
    """The URL without any user:password@ part, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def resolve_endpoint(endpoint: str | None) -> str:
    """--endpoint, else HF_ENDPOINT, else the real Hub. Never a silent fallback to devhub."""
    chosen = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
    where = "--endpoint" if endpoint else "HF_ENDPOINT"
    try:
        parts = urlsplit(chosen)
        hostname, _ = parts.hostname, parts.port  # .port raises ValueError for a bad port
    except ValueError:
        raise PushError(f"{where} {shown_url(chosen)!r}: not a valid URL; use e.g. http://127.0.0.1:8765 or {DEFAULT_ENDPOINT}") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise PushError(f"{where} {shown_url(chosen)!r}: not an http(s) URL; use e.g. http://127.0.0.1:8765 or {DEFAULT_ENDPOINT}")
    if parts.username is not None or parts.password is not None:
        raise PushError(f"{where} {shown_url(chosen)!r} has credentials in it (user:password@): remove them;"
                        " hubpub sends the token from HF_TOKEN or `hf auth login`, never from a URL")
    return chosen


def probe_endpoint(endpoint: str) -> None:
    """Fail fast, with a message that says so, when nothing listens at the endpoint:
    PROBE_TRIES TCP connects of PROBE_TIMEOUT_S each. Skipped behind an HTTP(S) proxy."""
    import socket
    import time
    import urllib.request

    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return  # the proxy decides what is reachable
    started = time.monotonic()
    reason = "no answer"
    for attempt in range(PROBE_TRIES):
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                return
        except socket.timeout:
            reason = f"no answer within {PROBE_TIMEOUT_S:g} s"
        except socket.gaierror:
            reason = f"unknown host {host!r}"
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
        if attempt + 1 < PROBE_TRIES:
            time.sleep(PROBE_WAIT_S)
    elapsed = time.monotonic() - started
    raise PushError(f"cannot reach {shown_url(endpoint)}: is it running? check --endpoint / HF_ENDPOINT and your network"
                    f" ({reason}; {PROBE_TRIES} tries in {elapsed:.1f} s)")


def is_loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(*, required: bool) -> str | None:
    """HF_TOKEN, else the stored `hf auth login` token; checked, never printed."""
    token = os.environ.get("HF_TOKEN") or None
    where = "HF_TOKEN"
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
        where = "the Hugging Face token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN or the `hf auth login` token file)"
    if token is None:
        if required:
            raise PushError(NO_TOKEN)
        return None
    check_token(token, where)
    return token


def check_token(token: str, where: str = "HF_TOKEN") -> None:
    """A token that cannot be sent in an HTTP header is refused here, with a message that names
    where it came from and never shows it (not even a part of it)."""
    if token != token.strip():
        raise PushError(
            f"{where} starts or ends with whitespace or a newline (e.g. from `echo` or a file with a final newline):"
            " strip it, e.g. export HF_TOKEN=\"$(tr -d '[:space:]' < token.txt)\"")
    bad = next((i for i, c in enumerate(token) if not c.isascii()), None)
    if bad is not None:
        raise PushError(f"{where} has a non-ASCII character at position {bad + 1} of {len(token)}: tokens are plain ASCII"
                        " (hf_...); copy it again from https://huggingface.co/settings/tokens")
    bad = next((i for i, c in enumerate(token) if c.isspace() or ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise PushError(f"{where} has a space or control character at position {bad + 1} of {len(token)};"
                        " copy the token again from https://huggingface.co/settings/tokens")


@contextlib.contextmanager
def hub_client(endpoint: str) -> Iterator[None]:
    """Client settings for one call: a local devhub speaks plain LFS (no Xet) and is not 'the Hub'
    that HF_HUB_OFFLINE guards; any other endpoint under HF_HUB_OFFLINE=1 is refused."""
    from huggingface_hub import constants

    local = is_loopback(endpoint)
    if constants.HF_HUB_OFFLINE and not local:
        raise PushError(f"HF_HUB_OFFLINE=1 is set: unset it to reach {shown_url(endpoint)}")
    probe_endpoint(endpoint)
    saved = constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET
    if local:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET = False, True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET = saved


def _network_error(exc: BaseException) -> bool:
    import httpx2

    seen = exc
    while seen is not None:
        if isinstance(seen, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return True
        # a ConnectError in one upload thread closes the shared client under the others
        if isinstance(seen, RuntimeError) and "client has been closed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    return False


@contextlib.contextmanager
def hub_errors(endpoint: str, repo_id: str, *, revision: str | None = None, tag: str | None = None) -> Iterator[None]:
    """Turn the client's exceptions into one-line PushErrors with the fix."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except HubpubError:
        raise
    except RevisionNotFoundError:
        raise PushError(f"revision {revision!r} not found in {repo_id} at {endpoint} (404): check --revision / push.revision") from None
    except RepositoryNotFoundError:
        raise PushError(
            f"repo {repo_id} not found at {endpoint} (404), or it is private to another account:"
            " check push.repo_id and that HF_TOKEN belongs to its owner"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise PushError(_http_message(status, exc, endpoint, repo_id, tag)) from None
    except Exception as exc:
        if _network_error(exc):
            raise PushError(f"cannot reach {endpoint}: is it running? check --endpoint / HF_ENDPOINT and your network") from None
        raise


def _http_message(status: int | None, exc: Any, endpoint: str, repo_id: str, tag: str | None) -> str:
    if status == 401:
        return f"{endpoint} rejected the token (401): it is invalid or expired; set HF_TOKEN to a valid write token or run `hf auth login`"
    if status == 403:
        return (f"the token has no write access to {repo_id} (403): the repo belongs to another user/org or the"
                " token is read-only; use a write token of the owner or change push.repo_id")
    if status == 404:
        return f"{repo_id} or one of its revisions was not found at {endpoint} (404): check push.repo_id and push.revision"
    if status == 409:
        return f"tag {tag!r} already exists in {repo_id} (409): hubpub never moves a tag; pick a new one with --tag or [push] tag"
    if status == 412:
        return f"{repo_id} changed on the remote since the plan (412): re-run `hubpub push` to plan against the new state"
    server = str(getattr(exc, "server_message", "") or "").splitlines()
    detail = f": {server[0]}" if server and server[0] else ""
    return f"{endpoint} answered HTTP {status}{detail}; re-run later, or with HUBPUB_DEBUG=1 for details"
