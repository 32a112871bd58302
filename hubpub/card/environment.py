"""The Jinja environment for card templates, and turning template failures into one-line errors.

User templates run sandboxed with StrictUndefined: a misspelt variable or a reach for Python
internals fails with the template file, the line and the reason. A user folder overrides the
built-ins (hubpub/templates) by file name, so ``{% extends "base.md.j2" %}`` reaches the
built-in base from a user's README.md.j2.
"""

from __future__ import annotations

import traceback
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from ..artifacts import write_atomic
from ..errors import CardError

BUILTIN = "hubpub/templates"


class _NoSymlinkLoader(jinja2.FileSystemLoader):
    """A user's template folder: a symlink could point anywhere (/etc/passwd), so it is refused."""

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        for root in self.searchpath:
            path = Path(root)
            for part in Path(template).parts:
                path = path / part
                if path.is_symlink():
                    raise CardError(
                        f"card template {path}: is a symlink; a template folder may hold only real files:"
                        " copy the template in instead"
                    )
        return super().get_source(environment, template)


def refuse_symlinks(user_dir: Path) -> None:
    """Every entry of a user's template folder is a real file or folder inside it."""
    for path in sorted(user_dir.rglob("*")):
        if path.is_symlink():
            raise CardError(f"card template {path}: is a symlink; a template folder may hold only real files: copy the template in instead")


def make_environment(user_dir: Path | None) -> SandboxedEnvironment:
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        refuse_symlinks(user_dir)
        loaders.append(_NoSymlinkLoader(str(user_dir)))
    loaders.append(jinja2.PackageLoader("hubpub", "templates"))
    return SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_template(name: str, context: dict[str, Any], user_dir: Path | None) -> str:
    env = make_environment(user_dir)
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateSyntaxError as exc:
        where = _shown(exc.filename or exc.name or name, user_dir)
        raise CardError(f"card template {where}, line {exc.lineno}: syntax error: {exc.message}; fix the template") from None
    except jinja2.TemplateNotFound as exc:
        looked = f"{user_dir} or the built-ins" if user_dir else "the built-in templates"
        raise CardError(
            f"card template {exc.name!r} not found in {looked}; check [card] template, or run `hubpub templates export DIR` to see the built-ins"
        ) from None
    except SecurityError as exc:
        where, line = _template_frame(exc, name, user_dir)
        raise CardError(f"card template {where}, line {line}: {exc} (card templates are sandboxed)") from None
    except jinja2.UndefinedError as exc:
        where, line = _template_frame(exc, name, user_dir)
        raise CardError(
            f"card template {where}, line {line}: {exc}; check the spelling (variables are listed in the built-in base.md.j2)"
        ) from None
    except Exception as exc:  # a filter or test failing on a value
        where, line = _template_frame(exc, name, user_dir)
        first = (str(exc).splitlines() or [""])[0]
        raise CardError(f"card template {where}, line {line}: {type(exc).__name__}: {first}") from None


def _template_frame(exc: BaseException, name: str, user_dir: Path | None) -> tuple[str, int | str]:
    """The innermost traceback frame that is a template line (Jinja rewrites those frames)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith(".j2") and frame.lineno:
            return _shown(frame.filename, user_dir), frame.lineno
    return _shown(name, user_dir), "?"


def _shown(filename: str, user_dir: Path | None) -> str:
    path = Path(filename)
    if user_dir is not None and path.is_absolute() and path.is_relative_to(user_dir.resolve()):
        return str(user_dir / path.relative_to(user_dir.resolve()))
    if user_dir is not None and not path.is_absolute() and (user_dir / path).exists():
        return str(user_dir / path)
    return f"{BUILTIN}/{path.name}"


def builtin_templates() -> list[str]:
    root = resources.files("hubpub").joinpath("templates")
    return sorted(entry.name for entry in root.iterdir() if entry.name.endswith(".j2"))


def export_templates(dest: Path, *, force: bool = False) -> list[Path]:
    """Copy the built-in templates into dest as a starting point for a custom card."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise CardError(f"{dest}: exists and is not a folder; pass a folder to export the templates into")
    names = builtin_templates()
    if not force:
        clashes = [name for name in names if (dest / name).exists()]
        if clashes:
            raise CardError(f"{dest / clashes[0]}: already exists; pass --force to overwrite the built-in templates there")
    dest.mkdir(parents=True, exist_ok=True)
    root = resources.files("hubpub").joinpath("templates")
    written = []
    for name in names:
        write_atomic(dest / name, root.joinpath(name).read_bytes())
        written.append(dest / name)
    return written
