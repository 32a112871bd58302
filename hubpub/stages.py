"""The stage table: one declaration per stage, read by `release`, `--from/--until`, the CLI's
choices and the errors. Adding a stage is one module that registers a :class:`Stage`
(``stages.register(Stage(...))``, or a plugin's ``hubpub.stages`` entry point); nothing in
release.py or the CLI changes.

A stage's *key* is a hash of everything it reads. After it runs, release stores the key and the
hashes of the files it wrote (:class:`StageState`, ``stages.json``); next time a stage whose key and files
are unchanged is *cached* and not called at all. A stage that talks to a remote also
``confirm``\\s a cached result against the remote before it is reported as done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from . import artifacts
from .naming import is_hidden
from .registry import Registry

if TYPE_CHECKING:
    from .events import EventSink
    from .recipe import Recipe


# ----------------------------------------------------------------------------- state
STAGE_STATE_VERSION = 1


class StageRun(BaseModel):
    """What release remembers of a stage's last run (for caching)."""

    model_config = ConfigDict(extra="allow")

    key: str  # hash of the stage's inputs
    outputs: dict[str, str | None] = Field(default_factory=dict)  # relative path -> sha256 of what it wrote
    finished: str = ""  # ISO time
    seconds: float = 0.0
    info: dict[str, Any] = Field(default_factory=dict)  # e.g. push: repo_url, commit_oid, tag


class StageState(artifacts.Artifact):
    """``<work_path>/stages.json``: the last run of every stage, and known file hashes."""

    version: int = STAGE_STATE_VERSION
    stages: dict[str, StageRun] = Field(default_factory=dict)
    files: dict[str, list[Any]] = Field(default_factory=dict)  # abs path -> [size, mtime_ns, sha256]

    @classmethod
    def load(cls, path: Path) -> "StageState":
        """The state at path; a missing, unreadable or older-version file is an empty state."""
        try:
            state = cls.read(path)
        except (FileNotFoundError, ValueError):
            return cls()
        return state if state.version == STAGE_STATE_VERSION else cls()

    def save(self, path: Path) -> None:
        # forget the hashes of files that are gone (replaced checkpoints, old plots)
        self.files = {name: seen for name, seen in self.files.items() if Path(name).exists()}
        artifacts.write_atomic(path, json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- context
class FileHashes:
    """sha256 of files, remembered by (size, mtime_ns) across releases, so an unchanged
    multi-GB checkpoint is not re-read on every release."""

    def __init__(self, known: dict[str, list[Any]]):
        self.known = known

    def __call__(self, path: Path) -> str | None:
        from .hub.plan import hash_file

        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        key = str(path.resolve())
        seen = self.known.get(key)
        if seen and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
            return str(seen[2])
        sha = hash_file(path)[1]  # the sha256 push compares with the remote's LFS oid
        self.known[key] = [st.st_size, st.st_mtime_ns, sha]
        return sha

    def tree(self, folder: Path) -> dict[str, str | None]:
        """Hashes of every file under folder by relative path; hidden names (temp files) are no part of it."""
        if not folder.is_dir():
            return {}
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        return {f.as_posix(): self(folder / f) for f in files if not is_hidden(f.parts)}


@dataclass
class StageContext:
    """What a stage's functions are given: the recipe, the release folder and the run's options."""

    recipe: "Recipe"
    out: Path
    hashes: FileHashes
    endpoint: str | None = None  # resolved Hub endpoint (stages that talk to the Hub)
    tag: str | None = None
    force: bool = False
    events: "EventSink | None" = None
    options: dict[str, Any] = field(default_factory=dict)  # stage-specific options from the caller


def digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- the protocol
@dataclass(frozen=True)
class Stage:
    """One stage of a release.

    ``run(ctx)`` does the work and returns the stage function's result; ``key(ctx)`` hashes its
    inputs; ``outputs(ctx, result)`` lists the files it wrote (relative to the release folder;
    result is None when asked about a previous run); ``requires`` are files that must exist for a
    release to start *after* this stage (``--from`` a later one). ``publishes`` stages are skipped
    by ``--no-push``. ``confirm(ctx, info)`` checks a cached result against the world (None: still
    true; else the reason to run again). ``info(result)`` is what the state file keeps of a run.
    ``preview(ctx)`` is what a dry run asks of the stage (no writes), returned in the result.
    """

    name: str
    order: int  # position in the pipeline; plugins pick a number between the built-ins' (10, 20, 30, 40)
    run: Callable[[StageContext], Any]
    key: Callable[[StageContext], str]
    outputs: Callable[[StageContext, Any], list[str]] = lambda ctx, result: []
    requires: tuple[str, ...] = ()
    publishes: bool = False
    confirm: Callable[[StageContext, dict[str, Any]], str | None] | None = None
    info: Callable[[Any], dict[str, Any]] = lambda result: {}
    preview: Callable[[StageContext], Any] | None = None
    description: str = ""


stages: Registry[Stage] = Registry(
    kind="stage", group="hubpub.stages", builtin=("hubpub.stage_table",), required=("name", "order", "run", "key")
)


def pipeline() -> list[Stage]:
    """The stages in the order a release runs them."""
    return sorted(stages, key=lambda s: (s.order, s.name))


def stage_names() -> list[str]:
    return [s.name for s in pipeline()]
