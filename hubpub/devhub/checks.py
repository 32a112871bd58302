"""Input checks shared by devhub's store and server: oids, sizes, names, paths, JSON fields.

Every value that comes from a request goes through one of these before it reaches the file system
or a stored record; a bad value is a ``StoreError(400, ...)`` (the server answers it as JSON).
Names follow huggingface_hub's ``validate_repo_id`` (and the Hub's) rules; file paths follow the
client's ``_validate_path_in_repo`` plus what a server must refuse on top (absolute paths, empty
segments, NUL, backslashes).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any


SHA256 = re.compile(r"[0-9a-f]{64}")
SHA1 = re.compile(r"[0-9a-f]{40}")
HEX_PREFIX = re.compile(r"[0-9a-f]{7,40}")
# a namespace or repo name: ASCII word characters, '-' and '.', 1-96 long, starting and ending with a
# word character (the client's REPO_ID_REGEX with its \b anchors), no '--' / '..', not ending '.git'
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?")
_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,199}")
FORBIDDEN_FOLDERS = (".git", ".cache")  # huggingface_hub refuses these too
MAX_PATH = 1000


class StoreError(Exception):
    """A request devhub refuses; ``status`` and ``code`` become the HTTP answer."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def short(value: Any, limit: int = 80) -> str:
    """repr() of a client value for an error message, never longer than ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


def is_name(name: Any) -> bool:
    return (isinstance(name, str) and _NAME.fullmatch(name) is not None and "--" not in name
            and ".." not in name and not name.endswith(".git"))


def check_name(name: Any, what: str = "name") -> str:
    if not is_name(name):
        raise StoreError(400, f"invalid {what} {short(name)}: use 1-96 ASCII letters, digits, '-', '_' or '.',"
                              " starting and ending with a letter or digit, without '--', '..' or a '.git' ending")
    return name


def is_repo_id(repo_id: Any) -> bool:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        return False
    owner, name = repo_id.split("/")
    return is_name(owner) and is_name(name)


def check_oid(oid: Any) -> str:
    """An LFS oid: 64 lowercase hex digits (sha256)."""
    if not isinstance(oid, str) or not SHA256.fullmatch(oid):
        raise StoreError(400, f"invalid LFS oid {short(oid)}: expected 64 lowercase hex digits (sha256)")
    return oid


def check_size(size: Any, what: str = "size") -> int:
    """A byte count: a JSON integer >= 0 (not a bool, not a float, not a string)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise StoreError(400, f"invalid {what} {short(size)}: expected a non-negative integer")
    return size


def check_path(path: Any, *, folder: bool = False) -> str:
    """A file path inside a repo, as the Hub accepts it: relative, '/'-separated, no '.', '..' or
    empty segment, no NUL / control character / backslash, not under .git/ or .cache/.
    ``folder``: a trailing '/' is allowed (and dropped)."""
    if not isinstance(path, str):
        raise StoreError(400, f"invalid path {short(path)}: expected a string")
    clean = path[:-1] if folder and path.endswith("/") else path
    parts = clean.split("/")
    bad = (not clean or len(clean.encode("utf-8", "surrogatepass")) > MAX_PATH or clean.startswith("/")
           or any(part in ("", ".", "..") for part in parts) or "\\" in clean
           or any(ord(c) < 32 or ord(c) == 127 for c in clean) or any(p in FORBIDDEN_FOLDERS for p in parts))
    if bad:
        raise StoreError(400, f"invalid path in repo {short(path)}: use a relative '/'-separated path without"
                              " '.', '..' or empty segments, backslashes, control characters or a .git/.cache folder")
    return clean


def check_ref_name(name: Any, what: str) -> str:
    """A branch or tag name."""
    if (not isinstance(name, str) or not _REF.fullmatch(name) or ".." in name or "//" in name
            or name.endswith(("/", ".lock", ".")) or SHA1.fullmatch(name)):
        raise StoreError(400, f"invalid {what} name {short(name)}")
    return name


def b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise StoreError(400, f"{what}: expected a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise StoreError(400, f"{what}: not valid base64") from None


def field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], *, required: bool = False,
          default: Any = None, where: str = "request body") -> Any:
    """``data[key]`` checked against ``kind`` (a JSON null counts as missing)."""
    value = data.get(key)
    if value is None:
        if required:
            raise StoreError(400, f"{where}: missing {key!r}")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # True is an int to Python, not to JSON
        raise StoreError(400, f"{where}: {key!r} must be {_names(kinds)}, got {short(value)}")
    if not isinstance(value, kinds):
        raise StoreError(400, f"{where}: {key!r} must be {_names(kinds)}, got {short(value)}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    words = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object", float: "a number"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)
