"""The card stage: README.md (front matter + body) and plots from the measured numbers.

``render_card`` reads what quantize and validate wrote, builds the front matter with
huggingface_hub's ModelCardData, renders the Jinja template, and only when all of that
succeeded writes the plots and README.md atomically. No torch; the network only for
[card] previous_tag (the previous release's files in the target repo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..artifacts import ASSETS_DIR, CARD, MANIFEST, METRICS, RECIPE_COPY, Manifest, Metrics, write_atomic
from ..errors import CardError
from ..recipe import Recipe
from .environment import export_templates, render_template
from .history import History, PreviousRelease, compare_releases, load_previous

if TYPE_CHECKING:
    from ..events import EventSink

__all__ = ["CardResult", "PreviousRelease", "render_card", "export_templates", "compare_releases", "load_previous"]


@dataclass
class CardResult:
    path: Path  # README.md
    text: str
    plots: list[Path] = field(default_factory=list)
    front_matter: dict[str, Any] = field(default_factory=dict)
    history: History | None = None


def render_card(
    recipe: Recipe,
    *,
    output_dir: Path | None = None,
    template_dir: Path | str | None = None,
    previous: Path | str | PreviousRelease | None = None,
    endpoint: str | None = None,
    events: "EventSink | None" = None,
) -> CardResult:
    """Render README.md (and assets/*.png plots) into the release folder.

    The history section compares with ``previous`` (a folder or PreviousRelease), else
    [card] previous (a folder), else [card] previous_tag read from the target repo at ``endpoint``.
    """
    from .context import build_context, scheme
    from .frontmatter import build_card_data, check_front_matter
    from .numbers import tldr_rows
    from .plots import plan_plots, render_png

    out = Path(output_dir) if output_dir is not None else recipe.output_path
    manifest = _read(out / MANIFEST, Manifest, "quantize")
    metrics = _read(out / METRICS, Metrics, "validate")
    if metrics.recipe_hash != manifest.recipe_hash:
        raise CardError(
            f"{out / METRICS}: measured on another checkpoint (recipe_hash differs from {MANIFEST});"
            " run `hubpub validate RECIPE` again"
        )
    user_dir = _template_dir(recipe, template_dir)
    recipe_copy = out / RECIPE_COPY
    recipe_toml = recipe_copy.read_text(encoding="utf-8") if recipe_copy.is_file() else recipe.text
    history = _history(recipe, previous, recipe_toml, metrics, endpoint)

    name = recipe.model.display_name or manifest.model_name
    card_data = build_card_data(recipe, manifest, metrics, name)
    plots = plan_plots(tldr_rows(metrics, manifest.bytes_before)) if recipe.card.plots else []
    context = build_context(
        recipe, manifest, metrics, output_dir=out, recipe_toml=recipe_toml, card_data=card_data, plots=plots, history=history
    )
    body = render_template(recipe.card.template, context, user_dir)
    front = card_data.to_yaml()
    text = f"---\n{front}\n---\n\n{body.strip(chr(10))}\n"
    front_matter = check_front_matter(front, str(recipe.path))
    images = {plot.name: render_png(plot, scheme(manifest)) for plot in plots}
    from .frontmatter import eval_result_files

    eval_files = eval_result_files(metrics)  # .eval_results/*.yaml: standard benchmarks, this model's scores

    # Everything rendered: now write, plots first so the card never links a missing image.
    written = []
    for file_name, png in images.items():
        path = out / ASSETS_DIR / file_name
        if not path.is_file() or path.read_bytes() != png:
            write_atomic(path, png)
        written.append(path)
    for rel, yaml_text in eval_files.items():
        write_atomic(out / rel, yaml_text)
        written.append(out / rel)
    write_atomic(out / CARD, text)
    return CardResult(out / CARD, text, written, front_matter, history)


def _read(path: Path, model: type, stage: str) -> Any:
    if not path.is_file():
        raise CardError(f"{path} not found; run `hubpub {stage} RECIPE` first")
    try:
        return model.read(path)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise CardError(f"{path}: {where}: {first['msg']}; run `hubpub {stage} RECIPE` again to rewrite it") from None


def _template_dir(recipe: Recipe, template_dir: Path | str | None) -> Path | None:
    if template_dir is not None:
        path, origin = Path(template_dir), "--template-dir"
    elif recipe.card.template_dir:
        path, origin = recipe.resolve(recipe.card.template_dir), f"{recipe.path}: card.template_dir"
    else:
        return None
    if not path.is_dir():
        raise CardError(f"{origin}: template folder {str(path)!r} not found; create it, e.g. `hubpub templates export {path}`")
    return path


def _history(
    recipe: Recipe, previous: Path | str | PreviousRelease | None, recipe_toml: str, metrics: Metrics, endpoint: str | None
) -> History | None:
    if previous is None and recipe.card.previous:
        previous = recipe.resolve(recipe.card.previous)
    if previous is None and recipe.card.previous_tag:
        previous = _fetch_previous(recipe, recipe.card.previous_tag, endpoint)
    if previous is None:
        return None
    if not isinstance(previous, PreviousRelease):
        previous = load_previous(Path(previous), recipe.card.previous_tag)
    variant = recipe._family.get("current") if isinstance(recipe._family, dict) else None  # a [[variant]]'s card
    return compare_releases(previous, recipe_toml, metrics, recipe.push.tag, variant)


def _fetch_previous(recipe: Recipe, tag: str, endpoint: str | None) -> PreviousRelease:
    """The previous release's metrics and recipe, read from the target repo at that tag."""
    from ..errors import PushError
    from ..hub.remote import fetch_previous_release

    repo_id = recipe.push.repo_id
    if not repo_id:
        raise CardError(f"{recipe.path}: card.previous_tag: needs [push] repo_id (the repo to read tag {tag!r} from); set it or use card.previous")
    try:
        metrics_json, recipe_toml = fetch_previous_release(repo_id, tag, endpoint)
    except PushError as exc:
        raise CardError(f"{recipe.path}: card.previous_tag: {exc}") from None
    return PreviousRelease(metrics_json, recipe_toml, tag, f"{repo_id}@{tag}")
