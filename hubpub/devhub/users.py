"""devhub's accounts: NAME:TOKEN pairs from a file, an environment variable, or (discouraged) argv.

A token on the command line (``--user alice:TOKEN``) is visible to every local user in ``ps`` and
lands in shell history; ``--users-file FILE`` (one NAME:TOKEN a line, ``#`` comments) and the
``HUBPUB_DEVHUB_USERS`` environment variable (NAME:TOKEN entries separated by commas, spaces or
newlines) are not. Error messages never show a token.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import HubpubError
from .checks import is_name

ENV_VAR = "HUBPUB_DEVHUB_USERS"
ARGV_WARNING = ("--user puts the token on the command line, where `ps` and shell history show it to other"
                f" local users; use --users-file FILE (NAME:TOKEN lines) or {ENV_VAR}=NAME:TOKEN instead")


class DevhubError(HubpubError):
    """devhub cannot start (bad bind address, port in use, bad --user / --users-file)."""

    stage = "devhub"


def _token_ok(token: str) -> bool:
    return 8 <= len(token) <= 512 and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in token)


def parse_user(spec: str) -> tuple[str, str]:
    """``NAME:TOKEN`` from ``--user``: a Hub-valid user name and a token of 8+ characters."""
    name, sep, token = spec.partition(":")
    if not sep or not is_name(name) or not _token_ok(token):
        raise DevhubError(f"--user {name or spec!r}: expected NAME:TOKEN with a token of 8+ characters, e.g. --user alice:hf_alice_secret")
    return name, token


def _parse_entry(entry: str, where: str) -> tuple[str, str]:
    name, sep, token = entry.partition(":")
    if not sep or not is_name(name) or not _token_ok(token):
        # the entry itself is not shown: it may be a token missing its NAME:
        raise DevhubError(f"{where}: expected NAME:TOKEN (a Hub user name, a colon, a token of 8+ characters"
                          " without spaces), e.g. alice:hf_alice_secret")
    return name, token


def load_users(users_file: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
               specs: Iterable[str] = ()) -> tuple[dict[str, str], list[str]]:
    """All accounts from ``users_file``, the ``HUBPUB_DEVHUB_USERS`` variable of ``env`` and ``specs``
    (``--user`` values); returns (users, warnings). A name given twice, or one token shared by two
    users, is an error."""
    entries: list[tuple[str, str, str]] = []  # (name, token, where)
    warnings: list[str] = []
    if users_file is not None:
        path = Path(users_file)
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise DevhubError(f"--users-file {path}: cannot read it ({reason}); write NAME:TOKEN lines to a file you own") from None
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(f"--users-file {path} is readable by other users; run `chmod 600 {path}`")
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((*_parse_entry(line, f"{path}:{number}"), f"{path}:{number}"))
    value = (os.environ if env is None else env).get(ENV_VAR, "")
    for index, item in enumerate(re.split(r"[\s,]+", value.strip()) if value.strip() else [], 1):
        entries.append((*_parse_entry(item, f"{ENV_VAR} entry {index}"), f"{ENV_VAR} entry {index}"))
    for spec in specs:
        entries.append((*parse_user(spec), "--user"))
    users: dict[str, str] = {}
    seen_at: dict[str, str] = {}
    owners: dict[str, str] = {}
    for name, token, where in entries:
        if name in users:
            raise DevhubError(f"user {name} is given twice ({seen_at[name]} and {where}); keep one NAME:TOKEN per user")
        if token in owners:
            raise DevhubError(f"users {owners[token]} and {name} have the same token ({where}); give each user its own token")
        users[name], seen_at[name], owners[token] = token, where, name
    return users, warnings
