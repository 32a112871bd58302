"""Make the demo plugin package an installed distribution for the length of a test session.

``activate(tmp)`` writes ``hubpub_plugin_demo-<version>.dist-info`` (METADATA + entry_points.txt
from the package's own pyproject.toml) into ``tmp``, puts ``tmp`` and the package folder on
sys.path, and makes hubpub's registries rescan their entry points; ``deactivate`` undoes it.
Faster than ``pip install -e`` and leaves nothing behind in the environment.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "hubpub_plugin_demo"


def _registries():
    from hubpub.quantize.backends import backends
    from hubpub.quantize.formats import formats
    from hubpub.stages import stages

    found = [backends, formats, stages]
    try:
        from hubpub.validate.evals import eval_kinds  # the eval-kind registry, where it exists

        found.append(eval_kinds)
    except ImportError:
        pass
    return found


def activate(tmp: Path) -> list[str]:
    """Install the demo plugin into sys.path; returns the entry-point names it declares."""
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    dist = tmp / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines, names = [], []
    for group, eps in project.get("entry-points", {}).items():
        lines.append(f"[{group}]")
        for name, value in eps.items():
            lines.append(f"{name} = {value}")
            names.append(name)
        lines.append("")
    (dist / "entry_points.txt").write_text("\n".join(lines))
    sys.path[:0] = [str(tmp), str(PACKAGE)]
    importlib.invalidate_caches()
    for registry in _registries():
        registry._loaded = False  # rescan entry points on next use
    return names


def deactivate(tmp: Path, names: list[str]) -> None:
    for entry in (str(tmp), str(PACKAGE)):
        while entry in sys.path:
            sys.path.remove(entry)
    importlib.invalidate_caches()
    for registry in _registries():
        for name in names:
            if registry.origin(name).startswith("plugin "):
                registry.unregister(name)
    for module in [m for m in sys.modules if m.split(".")[0] == "hubpub_plugin_demo"]:
        del sys.modules[module]
