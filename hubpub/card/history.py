"""Version history: what changed since the previous release, and its numbers against this one.

The previous release is two files, ``hubpub_metrics.json`` and ``hubpub_recipe.toml``: read
from a local folder here, or fetched by the push stage from the target repo at the previous
tag and passed in as text (:func:`compare_releases` takes their contents).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..artifacts import METRICS, RECIPE_COPY, Metrics
from ..errors import CardError
from .numbers import Row, human_bytes, release_rows

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Recipe parts that do not change the released weights or their measurements.
_IGNORED = ("card", "push", "output_dir")


@dataclass(frozen=True)
class PreviousRelease:
    metrics_json: str
    recipe_toml: str
    tag: str | None = None
    source: str = "previous release"  # where the two files came from, for error messages


@dataclass(frozen=True)
class Change:
    field: str
    before: str
    after: str


@dataclass(frozen=True)
class History:
    previous_tag: str | None
    tag: str | None
    changes: list[Change]
    rows: list[Row]
    storage_before: int
    storage_after: int
    notes: list[str] = field(default_factory=list)

    @property
    def storage_text(self) -> str:
        row = Row("storage", "", "bytes", self.storage_before, self.storage_after)
        return f"{human_bytes(self.storage_before)} → {human_bytes(self.storage_after)} ({row.delta_text})"


def load_previous(folder: Path, tag: str | None = None) -> PreviousRelease:
    folder = Path(folder)
    if not folder.is_dir():
        raise CardError(f"{folder}: previous release folder not found; pass the folder holding its {METRICS} and {RECIPE_COPY}")
    texts = []
    for name in (METRICS, RECIPE_COPY):
        path = folder / name
        if not path.is_file():
            raise CardError(f"{path} not found; the previous release folder needs {METRICS} and {RECIPE_COPY}")
        texts.append(path.read_text(encoding="utf-8"))
    return PreviousRelease(texts[0], texts[1], tag, str(folder))


def fetch_previous_files(repo_id: str, tag: str, dest: Path, *, subfolder: str | None = None,
                         endpoint: str | None = None) -> str | None:
    """Download a previous release's two files (from ``<subfolder>/`` when given) at ``tag`` into
    ``dest`` (a variant's card then reads them as [card] previous). None when done, else why not:
    the repo or tag is missing, or the release there has no such files (a variant new since then)."""
    import shutil
    import tempfile

    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    from ..artifacts import write_atomic
    from ..hub._client import hub_client, hub_errors, resolve_endpoint, resolve_token

    endpoint = resolve_endpoint(endpoint)
    token = resolve_token(required=False)
    prefix = f"{subfolder}/" if subfolder else ""
    texts: dict[str, str] = {}
    with hub_client(endpoint), hub_errors(endpoint, repo_id, revision=tag), tempfile.TemporaryDirectory(prefix="hubpub-prev-") as cache:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=token)
        for name in (METRICS, RECIPE_COPY):
            try:
                path = api.hf_hub_download(repo_id, f"{prefix}{name}", revision=tag, cache_dir=cache)
            except RepositoryNotFoundError:
                return f"{repo_id} not found at {endpoint}"
            except RevisionNotFoundError:
                return f"tag {tag!r} not found in {repo_id}"
            except RemoteEntryNotFoundError:
                return f"{repo_id}@{tag} has no {prefix}{name}"
            texts[name] = Path(path).read_text(encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    for name, text in texts.items():
        write_atomic(dest / name, text)
    return None


def effective_recipe(data: dict[str, Any], variant: str | None) -> dict[str, Any]:
    """A family recipe (with [[variant]] tables) as one variant sees it: the variant's overrides
    merged into [quantize], the [[variant]], [family] and [sweep] tables dropped. A recipe without
    variants (or without that variant) is returned as it is, less those tables."""
    variants = data.get("variant")
    if not isinstance(variants, list):
        return data
    out = {k: v for k, v in data.items() if k not in ("variant", "family", "sweep")}
    mine = next((v for v in variants if isinstance(v, dict) and v.get("name") == variant), None) if variant else None
    if mine is not None:
        out["quantize"] = {**(out.get("quantize") or {}), **{k: v for k, v in mine.items() if k not in ("name", "push")}}
    return out


def compare_releases(previous: PreviousRelease, recipe_toml: str, metrics: Metrics, tag: str | None,
                     variant: str | None = None) -> History:
    """``variant``: the [[variant]] this card is for; both recipe copies are then compared as that
    variant's effective settings (a family's copies hold every variant's table)."""
    try:
        before = Metrics.model_validate_json(previous.metrics_json)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CardError(f"{previous.source}: {METRICS}: {where}: {first['msg']}; it must be a hubpub_metrics.json written by `hubpub validate`") from None
    old = _flatten(effective_recipe(_parse_toml(previous.recipe_toml, f"{previous.source}: {RECIPE_COPY}"), variant))
    new = _flatten(effective_recipe(_parse_toml(recipe_toml, RECIPE_COPY), variant))
    changes = [
        Change(key, _show(old.get(key)), _show(new.get(key)))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and not key.startswith(_IGNORED)
    ]
    return History(
        previous_tag=previous.tag,
        tag=tag,
        changes=changes,
        rows=release_rows(before, metrics),
        storage_before=before.quantized.weight_bytes,
        storage_after=metrics.quantized.weight_bytes,
    )


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"{where}: invalid TOML ({exc}); pass the recipe copy written by `hubpub quantize`") from None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, dict)):
        # whole tables ([[eval]], modes) change as a unit; a one-line note beats a JSON dump
        shown = json.dumps(value, sort_keys=True, ensure_ascii=False)
        return shown if len(shown) <= 60 else f"{shown[:57]}..."
    return str(value)
