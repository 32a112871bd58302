"""Every command documents itself with an example; `hubpub --help` starts without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from hubpub.cli import cli

HEAVY = ("torch", "transformers", "auto_round", "matplotlib", "huggingface_hub", "safetensors", "accelerate")


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield path + (name,)
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))


COMMANDS = [()] + list(_commands(cli))


def test_the_pipeline_commands_exist():
    names = {c[0] for c in COMMANDS if c}
    assert {"quantize", "validate", "card", "push", "release", "init"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "hubpub")
def test_help_has_an_example(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    # "\b" keeps the example lines as written: each one starts with `hubpub`
    after = result.output.split("Example:", 1)[1].strip().splitlines()
    assert after and after[0].strip().startswith("hubpub"), result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from hubpub.cli import main\n"
        "try:\n    main(['--help'])\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        f"heavy = {HEAVY!r}\n"
        "import json\n"
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in heavy)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    code, imported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert code == 0
    assert imported == []
