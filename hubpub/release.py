"""`hubpub release`: quantize -> validate -> card -> push, each stage skipped when cached.

A stage's *key* is a hash of everything it reads:

- quantize: recipe [model] + [quantize], and a fingerprint of the source model;
- validate: [validate] + [[eval]] (and the eval files), the manifest's recipe_hash, and the
  hashes of the checkpoint files quantize wrote;
- card: [card], every template file (built-in and the user's folder), manifest, metrics and
  the recipe text;
- push: [push], the hashes of every file in the release folder, and the target
  (endpoint, repo, tag, revision).

After a stage runs, its key and the hashes of the files it wrote go to
``recipe.work_path/"stages.json"``. Next time a stage whose key is the same and whose files
are still byte-identical is *cached*: it is not called at all (no torch import, no upload).
File hashes are remembered by (size, mtime) so an unchanged multi-GB checkpoint is not
re-read on every release.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from . import artifacts
from ._stage import make_callable
from .card.numbers import Row, tldr_rows
from .errors import ReleaseError
from .hub.plan import hash_file
from .recipe import Recipe

if TYPE_CHECKING:
    from .hub.plan import PushPlan

STAGES = ("quantize", "validate", "card", "push")
STATE_FILE = "stages.json"
STATE_VERSION = 1

Status = Literal["running", "ran", "cached", "skipped", "would run"]


@dataclass
class StageOutcome:
    stage: str
    status: Status
    reason: str = ""  # why it ran or was skipped: "first run", "inputs changed", "--from", ...
    seconds: float = 0.0


@dataclass
class ReleaseResult:
    recipe_path: Path
    output_dir: Path
    stages: list[StageOutcome]
    headline: list[Row]  # size, memory, accuracy, speed: base vs quantized
    dry_run: bool = False
    repo_url: str | None = None
    commit_url: str | None = None
    tag: str | None = None
    plan: PushPlan | None = None  # the push plan (dry run, or what this push sent)
    bytes_uploaded: int | None = None

    def outcome(self, stage: str) -> StageOutcome:
        return next(s for s in self.stages if s.stage == stage)

    @property
    def ran(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == "ran"]


# ----------------------------------------------------------------------------- hashing
def _digest(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _FileHashes:
    """sha256 of files, remembered by (size, mtime_ns) across releases."""

    def __init__(self, known: dict[str, list[Any]]):
        self.known = known

    def __call__(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        key = str(path.resolve())
        seen = self.known.get(key)
        if seen and seen[0] == st.st_size and seen[1] == st.st_mtime_ns:
            return str(seen[2])
        sha = hash_file(path)[1]  # the sha256 push compares with the remote's LFS oid
        self.known[key] = [st.st_size, st.st_mtime_ns, sha]
        return sha

    def tree(self, folder: Path) -> dict[str, str | None]:
        """Hashes of every file under folder, by relative path; hidden names (temp files) are no part of it."""
        if not folder.is_dir():
            return {}
        files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
        return {f.as_posix(): self(folder / f) for f in files if not any(part.startswith(".") for part in f.parts)}


# ----------------------------------------------------------------------------- state
def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = artifacts.read_json(path)
    except (FileNotFoundError, ValueError):
        return {"version": STATE_VERSION, "stages": {}, "files": {}}
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return {"version": STATE_VERSION, "stages": {}, "files": {}}
    state.setdefault("stages", {})
    state.setdefault("files", {})
    return state


def _write_state(path: Path, state: dict[str, Any]) -> None:
    # forget the hashes of files that are gone (replaced checkpoints, old plots)
    state["files"] = {name: seen for name, seen in state["files"].items() if Path(name).exists()}
    artifacts.write_atomic(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- stage inputs
def _templates(recipe: Recipe, hashes: _FileHashes) -> dict[str, Any]:
    builtin = Path(__file__).parent / "templates"
    user = recipe.resolve(recipe.card.template_dir) if recipe.card.template_dir else None
    return {"builtin": hashes.tree(builtin), "user": hashes.tree(user) if user else None}


def _eval_files(recipe: Recipe, hashes: _FileHashes) -> dict[str, str | None]:
    files = [e.file for e in recipe.evals if e.file and not e.file.startswith("builtin:")]
    files += [img for mode in recipe.validate.modes for img in mode.images if "://" not in img]
    return {f: hashes(recipe.resolve(f)) for f in sorted(set(files))}


def _read_manifest(out: Path) -> artifacts.Manifest | None:
    try:
        return artifacts.Manifest.read(out / artifacts.MANIFEST)
    except (FileNotFoundError, ValueError):
        return None


def _read_metrics(out: Path) -> artifacts.Metrics | None:
    try:
        return artifacts.Metrics.read(out / artifacts.METRICS)
    except (FileNotFoundError, ValueError):
        return None


def _quantize_outputs(out: Path) -> list[str]:
    manifest = _read_manifest(out)
    files = set(manifest.files if manifest else [])
    # the recipe copy is refreshed by release itself (see _sync_recipe_copy), not a weight output
    files.discard(artifacts.RECIPE_COPY)
    return sorted(files | {artifacts.MANIFEST})


def _validate_outputs(out: Path) -> list[str]:
    metrics = _read_metrics(out)
    images = [img for e in (metrics.evals if metrics else []) for img in e.images]
    return sorted({artifacts.METRICS, *images})


def _relative(out: Path, paths: list[Any]) -> list[str]:
    rel = []
    for p in paths:
        p = Path(p)
        rel.append((p.relative_to(out) if p.is_absolute() and p.is_relative_to(out) else p).as_posix())
    return rel


def _stage_key(stage: str, recipe: Recipe, out: Path, hashes: _FileHashes, target: dict[str, Any]) -> str:
    if stage == "quantize":
        from .source import locate_source

        return _digest(recipe.section_hash("model", "quantize"), locate_source(recipe).fingerprint)
    if stage == "validate":
        manifest = _read_manifest(out)
        checkpoint = {f: hashes(out / f) for f in _quantize_outputs(out) if f != artifacts.MANIFEST}
        return _digest(
            recipe.section_hash("validate", "eval"),
            _eval_files(recipe, hashes),
            manifest.recipe_hash if manifest else None,
            checkpoint,
        )
    if stage == "card":
        previous = recipe.resolve(recipe.card.previous) if recipe.card.previous else None
        return _digest(
            recipe.section_hash("card"),
            _templates(recipe, hashes),
            hashes(out / artifacts.MANIFEST),
            hashes(out / artifacts.METRICS),
            recipe.text,
            hashes.tree(previous) if previous else None,
        )
    if stage == "push":
        return _digest(recipe.section_hash("push"), hashes.tree(out), target)
    raise ValueError(stage)


def _outputs(stage: str, out: Path, ran_result: Any = None) -> list[str]:
    if stage == "quantize":
        return _quantize_outputs(out)
    if stage == "validate":
        return _validate_outputs(out)
    if stage == "card":
        plots = _relative(out, list(getattr(ran_result, "plots", None) or [])) if ran_result is not None else []
        return sorted({artifacts.CARD, *plots})
    return []


def _sync_recipe_copy(recipe: Recipe, out: Path) -> None:
    """The pushed hubpub_recipe.toml must be this recipe, even when quantize was cached."""
    copy = out / artifacts.RECIPE_COPY
    if out.is_dir() and recipe.text and (not copy.exists() or copy.read_text(encoding="utf-8") != recipe.text):
        artifacts.write_atomic(copy, recipe.text)


# ----------------------------------------------------------------------------- headline
def headline(out: Path) -> list[Row]:
    """The card's TL;DR rows (size, memory, accuracy deltas, latency) from the release folder."""
    manifest, metrics = _read_manifest(out), _read_metrics(out)
    if metrics:
        return tldr_rows(metrics, manifest.bytes_before if manifest else None)
    if manifest:
        return [Row("weight_bytes", "Disk size (weights)", "bytes", manifest.bytes_before, manifest.bytes_after)]
    return []


# ----------------------------------------------------------------------------- the graph
def _run_stage(
    stage: str,
    recipe: Recipe,
    *,
    force: bool,
    progress: bool,
    endpoint: str | None,
    tag: str | None,
) -> Any:
    if stage == "quantize":
        from .quantize import quantize

        return quantize(recipe, force=force, progress=progress)
    if stage == "validate":
        from .validate import validate

        return validate(recipe, progress=progress)  # raises ValidateError when a gate or mode fails
    if stage == "card":
        from .card import render_card

        return render_card(recipe)
    from .hub import push

    return push(recipe, tag=tag, endpoint=endpoint)


def _check_range(from_stage: str | None, until_stage: str | None, push: bool) -> tuple[int, int]:
    for flag, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in STAGES:
            raise ReleaseError(f"{flag} {value}: unknown stage; use one of {', '.join(STAGES)}")
    first = STAGES.index(from_stage) if from_stage else 0
    last = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    if not push:
        last = min(last, STAGES.index("card"))
    if first > last:
        raise ReleaseError(
            f"--from {from_stage} comes after the last stage to run ({STAGES[last]}); pick a --from at or before it"
        )
    return first, last


def release(
    recipe: Recipe,
    *,
    from_stage: str | None = None,
    until_stage: str | None = None,
    push: bool = True,
    dry_run: bool = False,
    force: bool = False,
    endpoint: str | None = None,
    tag: str | None = None,
    progress: bool = True,
    on_stage: Callable[[StageOutcome], None] | None = None,
) -> ReleaseResult:
    """Run the stages from_stage..until_stage, skipping those whose inputs and outputs are unchanged.

    ``from_stage`` always runs (that is why one names it); stages before it are used as they
    are on disk. ``dry_run`` runs nothing and writes nothing: it reports which stages would
    run and, when everything before push is up to date, the push plan against the remote.
    """
    first, last = _check_range(from_stage, until_stage, push)
    out = recipe.output_path
    state_path = recipe.work_path / STATE_FILE
    state = _read_state(state_path)
    hashes = _FileHashes(state["files"])
    tag = tag or recipe.push.tag
    target = {"endpoint": endpoint, "repo_id": recipe.push.repo_id, "tag": tag, "revision": recipe.push.revision}
    if last == STAGES.index("push"):
        from .hub._client import resolve_endpoint

        target["endpoint"] = resolve_endpoint(endpoint)
    result = ReleaseResult(recipe_path=recipe.path, output_dir=out, stages=[], headline=[], dry_run=dry_run)

    def tell(outcome: StageOutcome) -> None:
        if on_stage:
            on_stage(outcome)

    stale: list[str] = []  # dry run: stages that would run, whose outputs are therefore not current
    for index, stage in enumerate(STAGES):
        if index < first or index > last:
            if index < first:
                _require_outputs(stage, out, from_stage or "", recipe)
                reason = f"--from {from_stage}"
            else:
                reason = "--no-push" if stage == "push" and not push else f"--until {until_stage}"
            result.stages.append(StageOutcome(stage, "skipped", reason))
            tell(result.stages[-1])
            continue

        if stage == "card" and not dry_run:
            _sync_recipe_copy(recipe, out)
        if dry_run and stale:
            # inputs of this stage are outputs of a stage that has not run yet: it will run too
            result.stages.append(StageOutcome(stage, "would run", f"after {stale[-1]}"))
            stale.append(stage)
            tell(result.stages[-1])
            continue

        key = _stage_key(stage, recipe, out, hashes, target)
        forced = "--force" if force else (f"--from {from_stage}" if from_stage and index == first else None)
        reason = forced or _why_run(key, state["stages"].get(stage), out, hashes)
        if reason is None:
            result.stages.append(StageOutcome(stage, "cached"))
            tell(result.stages[-1])
            continue

        if dry_run:
            if stage == "push":
                from .hub import push as push_stage

                pushed = push_stage(recipe, tag=tag, endpoint=endpoint, dry_run=True)
                result.plan = pushed.plan
                result.repo_url = pushed.repo_url
            result.stages.append(StageOutcome(stage, "would run", reason))
            stale.append(stage)
            tell(result.stages[-1])
            continue

        tell(StageOutcome(stage, "running", reason))
        started = time.perf_counter()
        ran = _run_stage(stage, recipe, force=bool(forced), progress=progress, endpoint=endpoint, tag=tag)
        seconds = time.perf_counter() - started
        info: dict[str, Any] = {}
        if stage == "quantize":
            _sync_recipe_copy(recipe, out)
        if stage == "push":
            info = {k: getattr(ran, k, None) for k in ("repo_url", "commit_url", "commit_oid", "tag")}
            result.plan, result.bytes_uploaded = getattr(ran, "plan", None), getattr(ran, "bytes_uploaded", None)
        outputs = _outputs(stage, out, ran)
        state["stages"][stage] = {
            # the key is computed again: a stage may have refreshed files its own key reads
            "key": _stage_key(stage, recipe, out, hashes, target),
            "outputs": {f: hashes(out / f) for f in outputs},
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "info": info,
        }
        _write_state(state_path, state)
        result.stages.append(StageOutcome(stage, "ran", reason, seconds))
        tell(result.stages[-1])

    # the remote is only part of the summary when this run pushed, or found the push up to date
    pushed = result.stages[-1].status in ("ran", "cached")
    pushed_info = state["stages"].get("push", {}).get("info", {}) if pushed else {}
    result.repo_url = result.repo_url or pushed_info.get("repo_url")
    result.commit_url = pushed_info.get("commit_url")
    result.tag = pushed_info.get("tag") if pushed_info else tag
    result.headline = headline(out)
    return result


def _why_run(key: str, saved: dict[str, Any] | None, out: Path, hashes: _FileHashes) -> str | None:
    """None when the stage is cached, else the reason it has to run."""
    if not saved:
        return "first run"
    if saved.get("key") != key:
        return "inputs changed"
    for rel, sha in saved.get("outputs", {}).items():
        if hashes(out / rel) != sha:
            return f"{rel} changed or missing"
    return None


def _require_outputs(stage: str, out: Path, from_stage: str, recipe: Recipe) -> None:
    """--from X uses the earlier stages' outputs as they are: they must exist."""
    needed = {"quantize": artifacts.MANIFEST, "validate": artifacts.METRICS, "card": artifacts.CARD}.get(stage)
    if needed and not (out / needed).is_file():
        raise ReleaseError(
            f"{out / needed}: missing, so --from {from_stage} cannot start there; run `hubpub release {recipe.path}`"
            f" without --from (or --from {stage})"
        )


__all__ = ["STAGES", "ReleaseResult", "StageOutcome", "headline", "release"]

make_callable(__name__, release)  # `hubpub.release(recipe)` works whichever name Python bound
