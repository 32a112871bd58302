"""The built-in stages: quantize -> validate -> card -> push (registered in hubpub.stages).

What each stage's key hashes:

- quantize: recipe [model] + [quantize], and a fingerprint of the source model;
- validate: [validate] + [[eval]] (and the eval files), the manifest's recipe_hash, and the
  hashes of the checkpoint files quantize wrote;
- card: [card], every template file (built-in and the user's folder), manifest, metrics, the
  recipe text and the previous release (folder, or tag in the target repo);
- push: [push], the hashes of every file in the release folder, and the target (repo, tag,
  revision; not the endpoint's address, so a local Hub on another port is the same target; the
  remote is asked before a cached push is reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import artifacts
from .stages import Stage, StageContext, digest, stages


def read_manifest(out: Path) -> artifacts.Manifest | None:
    try:
        return artifacts.Manifest.read(out / artifacts.MANIFEST)
    except (FileNotFoundError, ValueError):
        return None


def read_metrics(out: Path) -> artifacts.Metrics | None:
    try:
        return artifacts.Metrics.read(out / artifacts.METRICS)
    except (FileNotFoundError, ValueError):
        return None


def _relative(out: Path, paths: list[Any]) -> list[str]:
    rel = []
    for p in paths:
        p = Path(p)
        rel.append((p.relative_to(out) if p.is_absolute() and p.is_relative_to(out) else p).as_posix())
    return rel


# ----------------------------------------------------------------------------- quantize
def _quantize_key(ctx: StageContext) -> str:
    from .source import locate_source

    from .calibration import input_digest

    return digest(ctx.recipe.section_hash("model", "quantize"), locate_source(ctx.recipe).fingerprint, input_digest(ctx.recipe))


def _quantize_outputs(ctx: StageContext, result: Any = None) -> list[str]:
    manifest = read_manifest(ctx.out)
    files = set(manifest.files if manifest else [])
    # the recipe copy is refreshed by release itself (sync_recipe_copy), not a weight output
    files.discard(artifacts.RECIPE_COPY)
    return sorted(files | {artifacts.MANIFEST})


def _quantize_run(ctx: StageContext) -> Any:
    from .quantize import quantize

    return quantize(ctx.recipe, force=ctx.force, events=ctx.events, strict=bool(ctx.options.get("strict")))


# ----------------------------------------------------------------------------- validate
def _eval_files(ctx: StageContext) -> dict[str, str | None]:
    """Hashes of every local file the evals and modes read (an eval kind lists its own inputs)."""
    recipe = ctx.recipe
    files = [f for e in recipe.evals for f in (e.input_files() if hasattr(e, "input_files") else [])]
    files += [img for mode in recipe.validate.modes for img in mode.images if "://" not in img and not img.startswith("builtin:")]
    hashed: dict[str, Any] = {f: ctx.hashes(recipe.resolve(f)) for f in sorted(set(files))}
    for e in recipe.evals:  # folders, e.g. lm_eval's include_path (task YAMLs and their data)
        for d in (e.input_dirs() if hasattr(e, "input_dirs") else []):
            hashed[d] = ctx.hashes.tree(recipe.resolve(d))
    return hashed


def _validate_key(ctx: StageContext) -> str:
    manifest = read_manifest(ctx.out)
    checkpoint = {f: ctx.hashes(ctx.out / f) for f in _quantize_outputs(ctx) if f != artifacts.MANIFEST}
    return digest(
        ctx.recipe.section_hash("validate", "eval"),
        _eval_files(ctx),
        manifest.recipe_hash if manifest else None,
        checkpoint,
    )


def _validate_outputs(ctx: StageContext, result: Any = None) -> list[str]:
    metrics = read_metrics(ctx.out)
    images = [img for e in (metrics.evals if metrics else []) for img in e.images]
    return sorted({artifacts.METRICS, *images})


def _validate_run(ctx: StageContext) -> Any:
    from .validate import validate

    # raises ValidateError when a gate or a mode fails
    return validate(ctx.recipe, events=ctx.events)


# ----------------------------------------------------------------------------- card
def _templates(ctx: StageContext) -> dict[str, Any]:
    builtin = Path(__file__).parent / "templates"
    card = ctx.recipe.card
    user = ctx.recipe.resolve(card.template_dir) if card.template_dir else None
    return {"builtin": ctx.hashes.tree(builtin), "user": ctx.hashes.tree(user) if user else None}


def _card_key(ctx: StageContext) -> str:
    recipe = ctx.recipe
    previous = recipe.resolve(recipe.card.previous) if recipe.card.previous else None
    return digest(
        recipe.section_hash("card"),
        _templates(ctx),
        ctx.hashes(ctx.out / artifacts.MANIFEST),
        ctx.hashes(ctx.out / artifacts.METRICS),
        recipe.text,
        ctx.hashes.tree(previous) if previous else None,
        # a previous release read from the target repo is named by repo and tag (tags never move)
        [recipe.push.repo_id, recipe.card.previous_tag] if recipe.card.previous_tag and not previous else None,
        recipe._family,  # a variant's card shows its family's table (hubpub.variants)
    )


def _card_outputs(ctx: StageContext, result: Any = None) -> list[str]:
    plots = _relative(ctx.out, list(getattr(result, "plots", None) or [])) if result is not None else []
    return sorted({artifacts.CARD, *plots})


def _card_run(ctx: StageContext) -> Any:
    from .card import render_card

    return render_card(ctx.recipe, endpoint=ctx.endpoint, events=ctx.events)


# ----------------------------------------------------------------------------- push
def _push_key(ctx: StageContext) -> str:
    recipe = ctx.recipe
    target = {"repo_id": recipe.push.repo_id, "tag": ctx.tag, "revision": recipe.push.revision}
    return digest(recipe.section_hash("push"), ctx.hashes.tree(ctx.out), target)


def _push_run(ctx: StageContext) -> Any:
    from .hub import push

    return push(ctx.recipe, tag=ctx.tag, endpoint=ctx.endpoint, events=ctx.events)


def _push_preview(ctx: StageContext) -> Any:
    from .hub import push

    return push(ctx.recipe, tag=ctx.tag, endpoint=ctx.endpoint, dry_run=True)


def _push_confirm(ctx: StageContext, info: dict[str, Any]) -> str | None:
    from .hub.push import confirm_published

    return confirm_published(ctx.recipe, ctx.out, endpoint=ctx.endpoint, tag=ctx.tag, commit_oid=info.get("commit_oid"))


def _push_info(result: Any) -> dict[str, Any]:
    return {k: getattr(result, k, None) for k in ("repo_url", "commit_url", "commit_oid", "tag")}


stages.register(Stage(
    name="quantize", order=10, run=_quantize_run, key=_quantize_key, outputs=_quantize_outputs,
    requires=(artifacts.MANIFEST,), description="quantize the base model into a loadable checkpoint",
))
stages.register(Stage(
    name="validate", order=20, run=_validate_run, key=_validate_key, outputs=_validate_outputs,
    requires=(artifacts.METRICS,), description="load, generate and measure base vs quantized; apply gates",
))
stages.register(Stage(
    name="card", order=30, run=_card_run, key=_card_key, outputs=_card_outputs,
    requires=(artifacts.CARD,), description="render README.md from templates with the measured numbers",
))
stages.register(Stage(
    name="push", order=40, run=_push_run, key=_push_key, publishes=True, confirm=_push_confirm,
    info=_push_info, preview=_push_preview, description="one tagged, verified commit to the Hub",
))
