"""Secrets: tokens are checked with a clear message and never printed; URLs with credentials are
refused and redacted; a dead endpoint fails fast. Each failing command is searched for the token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.cli._app import redact
from hubserver import ALICE_TOKEN, devhub, recipe_text, write_release  # noqa: F401

SECRET = "hf_SECRETabcdefghijklmnopqrstuvwxyz0123"  # shaped like a real Hub token


@pytest.fixture(autouse=True)
def _no_stored_login(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def recipe(tmp_path, write_recipe):
    write_release(tmp_path / "release")
    return write_recipe(recipe_text())


def dead_endpoint() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def push(recipe, *args, token: str | None = ALICE_TOKEN, debug: bool = False):
    env = {"HF_TOKEN": token, "HUBPUB_DEBUG": "1" if debug else "0"}
    return CliRunner().invoke(cli, ["push", str(recipe), *args], env=env)


def assert_never_shown(result, *secrets: str) -> None:
    for secret in secrets:
        for stream in (result.stdout, result.stderr):
            assert stream.count(secret) == 0, stream
            assert stream.count(secret.strip()) == 0, stream


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("token,what", [
    (ALICE_TOKEN + "\n", "HF_TOKEN starts or ends with whitespace or a newline (e.g. from `echo` or a file with a final newline):"
                         " strip it, e.g. export HF_TOKEN=\"$(tr -d '[:space:]' < token.txt)\""),
    (" " + ALICE_TOKEN, "HF_TOKEN starts or ends with whitespace or a newline (e.g. from `echo` or a file with a final newline):"
                        " strip it, e.g. export HF_TOKEN=\"$(tr -d '[:space:]' < token.txt)\""),
    ("hf_alice_0123456789sécret", "HF_TOKEN has a non-ASCII character at position 21 of 25: tokens are plain ASCII (hf_...);"
                                  " copy it again from https://huggingface.co/settings/tokens"),
    ("hf_alice 0123456789secret", "HF_TOKEN has a space or control character at position 9 of 25;"
                                  " copy the token again from https://huggingface.co/settings/tokens"),
])
def test_bad_token_is_named_and_never_shown(recipe, devhub, token, what):
    for debug in (False, True):
        result = push(recipe, "--endpoint", devhub.endpoint, token=token, debug=debug)
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == f"Error: {what}"
        assert_never_shown(result, token, ALICE_TOKEN)


# ----------------------------------------------------------------------------- URLs with credentials
def test_endpoint_with_credentials_is_refused_and_redacted(recipe):
    endpoint = f"http://alice:{SECRET}@127.0.0.1:9"
    for debug in (False, True):
        result = push(recipe, "--endpoint", endpoint, debug=debug)
        assert result.exit_code == 1
        assert result.stderr.splitlines()[-1] == (
            "Error: --endpoint 'http://***@127.0.0.1:9' has credentials in it (user:password@): remove them;"
            " hubpub sends the token from HF_TOKEN or `hf auth login`, never from a URL")
        assert_never_shown(result, SECRET, ALICE_TOKEN)


def test_debug_traceback_is_redacted(monkeypatch):
    """HUBPUB_DEBUG=1 prints the traceback through the same redaction as the error line."""
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    monkeypatch.setenv("HUBPUB_DEBUG", "1")

    @cli.command("leak-for-test", hidden=True)
    def leak() -> None:
        raise ConnectionError(f"cannot reach http://alice:{SECRET}@127.0.0.1:9 with token {ALICE_TOKEN} "
                              f"(Authorization: Bearer {SECRET})")

    try:
        result = CliRunner().invoke(cli, ["leak-for-test"])
    finally:
        cli.commands.pop("leak-for-test")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ConnectionError: cannot reach http://***@127.0.0.1:9 with token ***" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: unexpected ConnectionError: cannot reach http://***@127.0.0.1:9 with token *** (Authorization: Bearer ***)"
        " (re-run with HUBPUB_DEBUG=1 for the traceback)")
    assert_never_shown(result, SECRET, ALICE_TOKEN)


def test_printed_output_and_logs_are_redacted_too(monkeypatch):
    import logging

    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)

    @cli.command("print-for-test", hidden=True)
    def printer() -> None:
        click.echo(f"using {ALICE_TOKEN} at http://bob:pw@host")
        print(f"raw print {SECRET}", file=sys.stderr)
        logging.getLogger("huggingface_hub.test").warning("header Authorization: Bearer %s", ALICE_TOKEN)

    try:
        result = CliRunner().invoke(cli, ["print-for-test"])
    finally:
        cli.commands.pop("print-for-test")
    assert result.exit_code == 0, result.output
    assert result.stdout == "using *** at http://***@host\n"
    assert "raw print hf_***" in result.stderr
    assert_never_shown(result, SECRET, ALICE_TOKEN)


def test_redact_leaves_ordinary_text_alone():
    text = "set HF_TOKEN to a valid write token or run `hf auth login`; see hf_hub_download and https://huggingface.co/x"
    assert redact(text, []) == text


# ----------------------------------------------------------------------------- dead endpoints
def test_dead_endpoint_fails_fast_and_says_so(recipe):
    endpoint = dead_endpoint()
    started = time.monotonic()
    result = push(recipe, "--endpoint", endpoint)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert elapsed < 3.0, elapsed
    line = result.stderr.splitlines()[-1]
    assert line.startswith(f"Error: cannot reach {endpoint}: is it running? check --endpoint / HF_ENDPOINT and your network"
                           " (connection refused; 2 tries in ")
    assert line.endswith(" s)")
    assert_never_shown(result, ALICE_TOKEN)


def test_dead_endpoint_in_a_real_process_with_debug(recipe, tmp_path):
    """The console script, HUBPUB_DEBUG=1, a token in the environment: fast, and the token is nowhere."""
    endpoint = dead_endpoint()
    env = {**os.environ, "HF_TOKEN": SECRET, "HUBPUB_DEBUG": "1", "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "hubpub", "push", str(recipe), "--endpoint", endpoint],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 1
    assert time.monotonic() - started < 15  # process start + imports; the probe itself is < 3 s
    assert "Traceback" in proc.stderr and "2 tries in" in proc.stderr.splitlines()[-1]
    assert (proc.stdout + proc.stderr).count(SECRET) == 0
