"""Command-line interface: ``hubpub`` (console script) and ``python -m hubpub``."""

from __future__ import annotations


from ._app import cli

# Each stage's command lives in its own module; importing registers it on `cli`.
from . import quantize_cmd  # noqa: E402,F401
from . import validate_cmd  # noqa: E402,F401
from . import card_cmd  # noqa: E402,F401
from . import push_cmd  # noqa: E402,F401
from . import release_cmd  # noqa: E402,F401
from . import check_cmd  # noqa: E402,F401
from . import jobs_cmd  # noqa: E402,F401
from . import reproduce_cmd  # noqa: E402,F401
from . import sweep_cmd  # noqa: E402,F401
from . import init_cmd  # noqa: E402,F401  (after release_cmd: its `init` is the one registered)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="hubpub")


__all__ = ["cli", "main"]
