"""The recipe as it is published (hubpub_recipe.toml): portable, so a reader or
`hubpub reproduce` can tell what it needs.

Local paths in a user's recipe mean nothing on another machine. In the published copy:

- a local file or small folder the release depends on (calibration text, eval data, card
  templates, lm-eval task folders) is copied into ``hubpub_inputs/`` of the release and the
  value rewritten to that path, so the copy works from the downloaded repo as it is;
- anything else local (a base-model folder, a previous release, something too big) keeps its
  value with a ``# local, not published (sha256 ...)`` comment;
- ``output_dir`` (where the user's machine keeps the release) is dropped.

Comments and layout of the user's recipe are kept (tomlkit).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifacts import write_atomic

if TYPE_CHECKING:
    from .recipe import Recipe

INPUTS_DIR = "hubpub_inputs"
MAX_COPIED_BYTES = 20_000_000  # larger inputs are named with their hash instead of published
# keys whose string values may be local paths; a value is treated as one only if it exists
PATH_KEYS = {"source", "calibration", "file", "files", "path", "images", "template_dir", "previous", "include_path"}
DROPPED_KEYS = {"output_dir"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _local(recipe: "Recipe", value: str) -> Path | None:
    if not value or ":" in value.split("/")[0] or value.startswith(("hf:", "package:", "builtin:")):
        return None
    path = recipe.resolve(value)
    try:
        return path if path.exists() else None
    except OSError:
        return None


def _as_variant(doc: Any, name: str, sections: dict[str, dict[str, Any]]) -> None:
    """The family recipe as the single recipe that makes variant ``name``: its overrides written
    into [quantize] / [push] / [card], the [[variant]], [family] and [sweep] tables dropped (so
    `hubpub reproduce` and a reader of this variant's repo see exactly what made it)."""
    import tomlkit

    for key in ("variant", "family", "sweep"):
        if key in doc:
            del doc[key]
    for section, values in sections.items():
        if section not in doc:
            doc[section] = tomlkit.table()
        table = doc[section]
        for key, value in values.items():
            if key not in table or table[key] != value:
                table[key] = value


def _hook_file(recipe: "Recipe", spec: str) -> Path | None:
    """The local .py file a calibration_hook names (None for an installed module)."""
    from .calibration.hook import _module_file, parse_spec

    try:
        path = _module_file(recipe, parse_spec(spec)[0])
    except ValueError:
        return None
    return path if path is not None and path.is_file() else None


def plan_inputs(recipe: "Recipe") -> tuple[str, dict[str, Path]]:
    """(the portable recipe text, {path in the release: local source to copy there})."""
    import tomlkit

    doc = tomlkit.parse(recipe.text)
    if getattr(recipe, "_variant", None) is not None:
        _as_variant(doc, *recipe._variant)
    copies: dict[str, Path] = {}

    def published(path: Path) -> str | None:
        if path.is_dir():
            if _tree_size(path) > MAX_COPIED_BYTES or (path / "config.json").exists():
                return None  # a model folder or something big: named, not published
        elif path.stat().st_size > MAX_COPIED_BYTES:
            return None
        name = f"{INPUTS_DIR}/{path.name}"
        if name in copies and copies[name] != path:
            name = f"{INPUTS_DIR}/{hashlib.sha256(str(path).encode()).hexdigest()[:8]}-{path.name}"
        copies[name] = path
        return name

    def visit(table: Any, prefix: str) -> None:
        for key in list(table.keys()):
            value = table[key]
            dotted = f"{prefix}{key}"
            if key in DROPPED_KEYS and not prefix:
                del table[key]
                continue
            if isinstance(value, dict):
                visit(value, dotted + ".")
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, dict):
                        visit(item, f"{dotted}[{index}].")
                    elif isinstance(item, str) and key in PATH_KEYS:
                        local = _local(recipe, item)
                        if local is not None and local.is_file():
                            new = published(local)
                            if new:
                                value[index] = new
            elif isinstance(value, str) and dotted == "quantize.calibration_hook":
                hook = _hook_file(recipe, value)  # "file.py:function": the file travels, the function name stays
                new = published(hook) if hook is not None else None
                if new:
                    table[key] = f"{new}:{value.rsplit(':', 1)[1]}"
            elif isinstance(value, str) and key in PATH_KEYS:
                local = _local(recipe, value)
                if local is None:
                    continue
                new = published(local)
                if new:
                    table[key] = new
                else:
                    item = tomlkit.string(value)
                    what = f"sha256 {_sha256(local)[:16]}" if local.is_file() else "folder"
                    item.comment(f"local, not published ({what})")
                    table[key] = item

    visit(doc, "")
    text = tomlkit.dumps(doc)
    if not recipe.text.startswith("\n"):
        text = text.lstrip("\n")  # a dropped first key leaves its blank line behind
    if getattr(recipe, "_variant", None) is not None:
        text = f"# variant {recipe._variant[0]!r} of a family recipe, its [[variant]] overrides applied\n" + text
    return text, copies


def _hidden_or_symlink(directory: str, names: list[str]) -> list[str]:
    # a symlink could point anywhere on the machine (/etc/passwd): never publish what it points at
    return [n for n in names if n.startswith(".") or (Path(directory) / n).is_symlink()]


def portable_recipe_text(recipe: "Recipe") -> str:
    return plan_inputs(recipe)[0]


def write_portable_recipe(recipe: "Recipe", folder: Path, recipe_file: str) -> list[str]:
    """Write the portable recipe and copy its inputs into folder; returns the paths written."""
    text, copies = plan_inputs(recipe)
    written = []
    for rel, source in sorted(copies.items()):
        target = folder / rel
        if source.is_dir():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(source, target, ignore=_hidden_or_symlink)
            written += [p.relative_to(folder).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
        else:
            if not target.is_file() or target.read_bytes() != source.read_bytes():
                write_atomic(target, source.read_bytes())
            written.append(rel)
    path = folder / recipe_file
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_atomic(path, text)
    written.append(recipe_file)
    return written
