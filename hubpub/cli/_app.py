"""The Click group and hubpub's ONE error boundary.

Commands parse arguments, call one library function and print. Library code raises
hubpub.errors.HubpubError subclasses; here they become ``Error: <message>`` on stderr and
exit code 1. Usage errors stay Click's (exit 2). HUBPUB_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import traceback
from typing import Any, Iterator

import click

from .. import __version__
from ..errors import HubpubError


def debug_enabled() -> bool:
    return os.environ.get("HUBPUB_DEBUG", "").lower() not in ("", "0", "false", "no")


SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUBPUB_TOKEN", "HF_API_TOKEN")
# user:password@ (or token@) in any URL; Hub-style tokens; Authorization headers
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}")  # the Hub's tokens: hf_ + 34 letters and digits
_BEARER = re.compile(r"(?i)\b(bearer\s+|authorization:\s*)(?!\*\*\*|bearer\b)[^\s'\",;)\]}]+")


def _secrets() -> list[str]:
    """The token values to hide: the environment's and the stored `hf auth login` token."""
    found = [os.environ.get(v) or "" for v in SECRET_VARS]
    try:
        hub = sys.modules.get("huggingface_hub.constants")  # importing it costs 0.2 s: only when loaded
        path = getattr(hub, "HF_TOKEN_PATH", None) or os.environ.get("HF_TOKEN_PATH") or os.path.join(
            os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"),
            "token")
        if path and os.path.isfile(path) and os.path.getsize(path) < 4096:
            with open(path, encoding="utf-8", errors="replace") as fh:
                found.append(fh.read())
    except Exception:  # noqa: BLE001 - redaction must never fail
        pass
    out: set[str] = set()
    for value in found:
        for v in (value, value.strip()):
            if len(v) >= 4:
                out.add(v)
    return sorted(out, key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Never print a token, even if one slipped into an exception message or a traceback:
    known token values, credentials in URLs (http://user:pass@host), hf_... tokens, bearer headers."""
    for secret in _secrets() if secrets is None else secrets:
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(lambda m: m.group(1) + "***@", text)
    text = _HF_TOKEN.sub("hf_***", text)
    return _BEARER.sub(lambda m: m.group(1) + "***", text)


class _RedactingStream:
    """Wraps stdout/stderr for the duration of a command: every text write is redacted."""

    def __init__(self, stream: Any, secrets: list[str]) -> None:
        self._stream, self._secrets = stream, secrets

    def write(self, text: Any) -> Any:
        if isinstance(text, str):
            text = redact(text, self._secrets)
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _redacted_output() -> Iterator[list[str]]:
    """Redact sys.stdout / sys.stderr and every log record while a command runs."""
    secrets = _secrets()
    saved = sys.stdout, sys.stderr, logging.getLogRecordFactory()
    factory = saved[2]

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            record.msg, record.args = redact(record.getMessage(), secrets), None
        except Exception:  # noqa: BLE001 - a malformed log call stays as it was
            pass
        return record

    sys.stdout, sys.stderr = _RedactingStream(sys.stdout, secrets), _RedactingStream(sys.stderr, secrets)  # type: ignore[assignment]
    logging.setLogRecordFactory(make_record)
    try:
        yield secrets
    finally:
        if isinstance(sys.stdout, _RedactingStream):
            sys.stdout = saved[0]
        if isinstance(sys.stderr, _RedactingStream):
            sys.stderr = saved[1]
        logging.setLogRecordFactory(factory)


def fail(message: str) -> None:
    click.echo(redact(f"Error: {message}"), err=True)


def _traceback() -> None:
    """HUBPUB_DEBUG=1: the traceback, redacted like every other line."""
    click.echo(redact(traceback.format_exc()).rstrip("\n"), err=True)


class HubpubGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        with _redacted_output():
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubpubError as exc:
            if debug_enabled():
                _traceback()
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            ctx.exit(1)
        except KeyboardInterrupt:
            fail("interrupted; nothing finished was changed, re-run the same command to continue")
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug or an unexpected library failure
            if debug_enabled():
                _traceback()
            first = (str(exc).splitlines() or [""])[0]
            fail(f"unexpected {type(exc).__name__}: {first} (re-run with HUBPUB_DEBUG=1 for the traceback)")
            ctx.exit(1)


@click.group(
    cls=HubpubGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="hubpub")
def cli() -> None:
    """Quantize, validate, document and publish models to the Hugging Face Hub from one TOML recipe.

    \b
    The pipeline:  quantize -> validate -> card -> push   (all of it: `hubpub release`)

    \b
    Example:
      hubpub release recipes/demo.toml --endpoint http://127.0.0.1:8765
    """


def load(recipe_path: str, *, stage: str | None = None, model: bool = False):  # type: ignore[no-untyped-def]
    """Load a recipe for a command (RecipeError propagates to the boundary). With ``stage``, also
    run that stage's preflight checks (paths; with ``model``, config.json) before returning."""
    from ..recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if stage is not None:
        from ..check import preflight

        preflight(recipe, stage=stage, model=model)
    return recipe


RECIPE = click.argument("recipe", type=click.Path(dir_okay=False))


class StageChoice(click.ParamType):
    """A stage name from the stage table (plugins included), looked up only when used so that
    `hubpub --help` stays fast."""

    name = "stage"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:  # click 8.1 / 8.2
        return "[quantize|validate|card|push|...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from ..stages import stage_names

        names = stage_names()
        if value not in names:
            self.fail(f"{value!r} is not a stage; use one of {', '.join(names)}", param, ctx)
        return str(value)


VERBOSE = click.option("--verbose", "-v", is_flag=True, help="Also show what AutoRound, transformers and other libraries print.")


def renderer(*, verbose: bool = False, quiet: bool = False, on_stage: Any = None):  # type: ignore[no-untyped-def]
    from ._render import Renderer

    return Renderer(verbose=verbose, quiet=quiet, on_stage=on_stage)
