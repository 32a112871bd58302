"""`hubpub release`: every stage of the stage table (hubpub/stages.py), each skipped when cached.

``plan_release()`` decides, without running anything, what each stage would do now (run and
why, cached, skipped and why, or would run after a stage that runs first); ``release()`` is the
loop that asks it again before each stage (an earlier stage may have changed its inputs) and
runs what it must. State lives in ``recipe.work_path/"stages.json"`` (StageState).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from . import artifacts
from ._stage import make_callable
from .card.numbers import Row, tldr_rows
from .errors import ReleaseError
from .events import EventSink, StageEvent, emit
from .recipe import Recipe
from .stage_table import read_manifest, read_metrics
from .stages import FileHashes, Stage, StageContext, StageRun, StageState, pipeline, stage_names

if TYPE_CHECKING:
    from .hub.plan import PushPlan

STATE_FILE = "stages.json"

Status = Literal["running", "ran", "cached", "skipped", "would run"]


def __getattr__(name: str) -> Any:
    if name == "STAGES":  # the stage names, read from the table (plugins included)
        return tuple(stage_names())
    raise AttributeError(name)


@dataclass
class StageOutcome:
    stage: str
    status: Status
    reason: str = ""  # why it runs or was skipped: "first run", "inputs changed", "--from", ...
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
    previews: dict[str, Any] = field(default_factory=dict)  # dry run: what each stage's preview said
    notes: list[str] = field(default_factory=list)  # e.g. "tag v1 already points at this release"

    def outcome(self, stage: str) -> StageOutcome:
        return next(s for s in self.stages if s.stage == stage)

    @property
    def ran(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == "ran"]


# ----------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Selection:
    """Which stages this release covers (from --from / --until / --no-push)."""

    first: int
    last: int
    from_stage: str | None
    until_stage: str | None
    push: bool

    def why_skipped(self, index: int, stage: Stage) -> str | None:
        if index < self.first:
            return f"--from {self.from_stage}"
        if stage.publishes and not self.push:
            return "--no-push"
        if index > self.last:
            return f"--until {self.until_stage}"
        return None


def select(from_stage: str | None, until_stage: str | None, push: bool) -> Selection:
    names = stage_names()
    for flag, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in names:
            raise ReleaseError(f"{flag} {value}: unknown stage; use one of {', '.join(names)}")
    first = names.index(from_stage) if from_stage else 0
    last = names.index(until_stage) if until_stage else len(names) - 1
    if not push:  # --no-push: the last stage to run is the last one that publishes nothing
        last = max((i for i, s in enumerate(pipeline()) if i <= last and not s.publishes), default=-1)
    if first > last:
        raise ReleaseError(
            f"--from {from_stage} comes after the last stage to run ({names[last]}); pick a --from at or before it"
        )
    return Selection(first, last, from_stage, until_stage, push)


def decide(stage: Stage, index: int, ctx: StageContext, state: StageState, selection: Selection,
           *, forced: bool) -> StageOutcome:
    """What ``stage`` would do now: 'skipped', 'cached', or 'would run' with the reason."""
    skipped = selection.why_skipped(index, stage)
    if skipped:
        return StageOutcome(stage.name, "skipped", skipped)
    if forced:
        return StageOutcome(stage.name, "would run", "--force" if ctx.force else f"--from {selection.from_stage}")
    saved = state.stages.get(stage.name)
    reason = _why_run(stage.key(ctx), saved, ctx)
    if reason is None and stage.confirm is not None and saved is not None:
        reason = stage.confirm(ctx, saved.info)
    return StageOutcome(stage.name, "cached") if reason is None else StageOutcome(stage.name, "would run", reason)


def plan_release(recipe: Recipe, *, from_stage: str | None = None, until_stage: str | None = None, push: bool = True,
                 force: bool = False, endpoint: str | None = None, tag: str | None = None) -> list[StageOutcome]:
    """What `hubpub release` would do now, stage by stage; runs and writes nothing."""
    selection = select(from_stage, until_stage, push)
    state, ctx = _context(recipe, selection, force=force, endpoint=endpoint, tag=tag, events=None)
    planned: list[StageOutcome] = []
    for index, stage in enumerate(pipeline()):
        if index < selection.first:
            _require_outputs(stage, ctx.out, selection.from_stage or "", recipe)
        earlier = next((p.stage for p in reversed(planned) if p.status == "would run"), None)
        if earlier and selection.why_skipped(index, stage) is None:
            # its inputs are outputs of a stage that has not run yet: it runs too
            planned.append(StageOutcome(stage.name, "would run", f"after {earlier}"))
            continue
        planned.append(decide(stage, index, ctx, state, selection, forced=_forced(selection, index, force)))
    return planned


def _forced(selection: Selection, index: int, force: bool) -> bool:
    return force or (selection.from_stage is not None and index == selection.first)


def _context(recipe: Recipe, selection: Selection, *, force: bool, endpoint: str | None, tag: str | None,
             events: EventSink | None, options: dict[str, Any] | None = None) -> tuple[StageState, StageContext]:
    state = StageState.load(recipe.work_path / STATE_FILE)
    talks_to_hub = any(s.publishes and selection.why_skipped(i, s) is None for i, s in enumerate(pipeline()))
    if talks_to_hub or recipe.card.previous_tag:
        from .hub._client import resolve_endpoint

        endpoint = resolve_endpoint(endpoint)
    ctx = StageContext(recipe=recipe, out=recipe.output_path, hashes=FileHashes(state.files), endpoint=endpoint,
                       tag=tag or recipe.push.tag, force=force, events=events, options=options or {})
    return state, ctx


# ----------------------------------------------------------------------------- the run
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
    events: EventSink | None = None,
    strict: bool = False,
) -> ReleaseResult:
    """Run the stages from_stage..until_stage, skipping those whose inputs and outputs are unchanged.

    ``from_stage`` always runs (that is why one names it); stages before it are used as they
    are on disk. ``dry_run`` runs nothing and writes nothing: it reports the plan and each
    stage's preview (the push plan against the remote, with its refusals).
    Each stage's status is reported as a StageEvent through ``events`` (and ``on_stage``).
    ``strict``: quantize refuses a quantized linear no calibration data reaches (see quantize()).
    """
    from .check import preflight

    selection = select(from_stage, until_stage, push)
    preflight(recipe, stage="release", model=False)  # cheap (no torch, no weights); quantize checks config.json when it runs
    state, ctx = _context(recipe, selection, force=force, endpoint=endpoint, tag=tag, events=events,
                          options={"progress": progress, "strict": strict})
    result = ReleaseResult(recipe_path=recipe.path, output_dir=ctx.out, stages=[], headline=[], dry_run=dry_run)

    def tell(outcome: StageOutcome) -> None:
        emit(events, StageEvent(outcome.stage, outcome.status, outcome.reason, outcome.seconds))
        if on_stage:
            on_stage(outcome)

    if dry_run:
        for outcome in plan_release(recipe, from_stage=from_stage, until_stage=until_stage, push=push, force=force,
                                    endpoint=ctx.endpoint, tag=tag):
            stage = stages_by_name()[outcome.stage]
            if outcome.status == "would run" and stage.preview is not None and _inputs_ready(stage, ctx):
                result.previews[stage.name] = stage.preview(ctx)
            result.stages.append(outcome)
            tell(outcome)
        _summarize(result, ctx, state)
        return result

    for index, stage in enumerate(pipeline()):
        if index < selection.first:
            _require_outputs(stage, ctx.out, from_stage or "", recipe)
        if stage.name == "card":
            sync_recipe_copy(recipe, ctx.out)
        outcome = decide(stage, index, ctx, state, selection, forced=_forced(selection, index, force))
        if outcome.status != "would run":
            result.stages.append(outcome)
            tell(outcome)
            continue
        tell(StageOutcome(stage.name, "running", outcome.reason))
        started = time.perf_counter()
        ctx.force = _forced(selection, index, force)
        ran = stage.run(ctx)
        seconds = time.perf_counter() - started
        if stage.name == "quantize":
            sync_recipe_copy(recipe, ctx.out)
        state.stages[stage.name] = StageRun(
            # the key is computed again: a stage may have refreshed files its own key reads
            key=stage.key(ctx),
            outputs={f: ctx.hashes(ctx.out / f) for f in stage.outputs(ctx, ran)},
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(seconds, 3),
            info=stage.info(ran),
        )
        state.save(recipe.work_path / STATE_FILE)
        if getattr(ran, "plan", None) is not None:
            result.plan, result.bytes_uploaded = ran.plan, getattr(ran, "bytes_uploaded", None)
        result.notes += list(getattr(ran, "notes", None) or [])
        result.stages.append(StageOutcome(stage.name, "ran", outcome.reason, seconds))
        tell(result.stages[-1])
    _summarize(result, ctx, state)
    return result


def stages_by_name() -> dict[str, Stage]:
    return {s.name: s for s in pipeline()}


def _inputs_ready(stage: Stage, ctx: StageContext) -> bool:
    """A preview needs the earlier stages' outputs as they will be: true only when none of them runs."""
    return all((ctx.out / f).is_file() for s in pipeline() if s.order < stage.order for f in s.requires)


def _summarize(result: ReleaseResult, ctx: StageContext, state: StageState) -> None:
    preview = next((p for p in result.previews.values() if getattr(p, "plan", None) is not None), None)
    if preview is not None:
        result.plan, result.repo_url = preview.plan, preview.repo_url
    publishing = [s for s in result.stages if stages_by_name()[s.stage].publishes]
    # the remote is only part of the summary when this run pushed, or found the push up to date
    if publishing and publishing[-1].status in ("ran", "cached"):
        info = state.stages[publishing[-1].stage].info if publishing[-1].stage in state.stages else {}
        result.repo_url, result.commit_url = info.get("repo_url"), info.get("commit_url")
        repo_id, oid = ctx.recipe.push.repo_id, info.get("commit_oid")
        if ctx.endpoint and repo_id:  # the address it was confirmed at now, not the one of the last push
            result.repo_url = f"{ctx.endpoint}/{repo_id}"
            result.commit_url = f"{ctx.endpoint}/{repo_id}/commit/{oid}" if oid else result.commit_url
        result.tag = info.get("tag")
    else:
        result.tag = ctx.tag
    result.headline = headline(ctx.out)


def _why_run(key: str, saved: StageRun | None, ctx: StageContext) -> str | None:
    """None when the stage is cached, else the reason it has to run."""
    if saved is None:
        return "first run"
    if saved.key != key:
        return "inputs changed"
    for rel, sha in saved.outputs.items():
        if ctx.hashes(ctx.out / rel) != sha:
            return f"{rel} changed or missing"
    return None


def _require_outputs(stage: Stage, out: Path, from_stage: str, recipe: Recipe) -> None:
    """--from X uses the earlier stages' outputs as they are: they must exist."""
    for needed in stage.requires:
        if not (out / needed).is_file():
            raise ReleaseError(
                f"{out / needed}: missing, so --from {from_stage} cannot start there; run `hubpub release {recipe.path}`"
                f" without --from (or --from {stage.name})"
            )


def sync_recipe_copy(recipe: Recipe, out: Path) -> None:
    """The pushed hubpub_recipe.toml must be this recipe, even when quantize was cached."""
    from .portable import write_portable_recipe

    if out.is_dir() and recipe.text:
        write_portable_recipe(recipe, out, artifacts.RECIPE_COPY)


# ----------------------------------------------------------------------------- headline
def headline(out: Path) -> list[Row]:
    """The card's TL;DR rows (size, memory, accuracy deltas, latency) from the release folder."""
    manifest, metrics = read_manifest(out), read_metrics(out)
    if metrics:
        return tldr_rows(metrics, manifest.bytes_before if manifest else None)
    if manifest:
        return [Row("weight_bytes", "Disk size (weights)", "bytes", manifest.bytes_before, manifest.bytes_after)]
    return []


__all__ = ["ReleaseResult", "StageOutcome", "headline", "plan_release", "release"]

make_callable(__name__, release)  # `hubpub.release(recipe)` works whichever name Python bound
