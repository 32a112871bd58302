"""The Click group and hubpub's ONE error boundary.

Commands parse arguments, call one library function and print. Library code raises
hubpub.errors.HubpubError subclasses; here they become ``Error: <message>`` on stderr and
exit code 1. Usage errors stay Click's (exit 2). HUBPUB_DEBUG=1 shows tracebacks.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from .. import __version__
from ..errors import HubpubError


def debug_enabled() -> bool:
    return os.environ.get("HUBPUB_DEBUG", "").lower() not in ("", "0", "false", "no")


def redact(text: str) -> str:
    """Never print a token, even if one slipped into an exception message."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HUBPUB_TOKEN"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def fail(message: str) -> None:
    click.echo(redact(f"Error: {message}"), err=True)


class HubpubGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubpubError as exc:
            if debug_enabled():
                traceback.print_exc()
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            ctx.exit(1)
        except KeyboardInterrupt:
            fail("interrupted; nothing finished was changed, re-run the same command to continue")
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # a bug or an unexpected library failure
            if debug_enabled():
                traceback.print_exc()
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


def load(recipe_path: str):  # type: ignore[no-untyped-def]
    """Load a recipe for a command (RecipeError propagates to the boundary)."""
    from ..recipe import load_recipe

    return load_recipe(recipe_path)


RECIPE = click.argument("recipe", type=click.Path(dir_okay=False))
