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


def compare_releases(previous: PreviousRelease, recipe_toml: str, metrics: Metrics, tag: str | None) -> History:
    try:
        before = Metrics.model_validate_json(previous.metrics_json)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CardError(f"{previous.source}: {METRICS}: {where}: {first['msg']}; it must be a hubpub_metrics.json written by `hubpub validate`") from None
    old = _flatten(_parse_toml(previous.recipe_toml, f"{previous.source}: {RECIPE_COPY}"))
    new = _flatten(_parse_toml(recipe_toml, RECIPE_COPY))
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
