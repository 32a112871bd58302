"""``kind = "grounding"``: synthetic shapes-and-letters images with true boxes.

Per object: the first parsed box (0 when none parses) against the truth. Reported as the seed
card does: mean IoU and IoU@0.5 with intervals (objects resampled, paired base vs quantized),
per class with group totals (shapes vs letters), and ``annotated`` side-by-side images (green =
truth, blue = base, red = quantized).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field

from ...artifacts import ASSETS_DIR, EvalResult, MetricInfo
from ...errors import ValidateError
from ...recipe import EvalEntry
from .. import grounding
from ..protocol import GenerateArgs, ModeJob
from . import GateSpec, PrepareContext, ScoreContext, eval_kinds, mean, mean_interval, paired_delta_interval

GENERIC_PROMPT = "Locate {target} in the image. Answer as <box>x1,y1,x2,y2</box> on a 0-1000 scale."
METRICS = {
    "mean_iou": MetricInfo(label="Mean IoU", unit="", digits=3, delta="absolute"),
    "iou@0.5": MetricInfo(label="IoU@0.5", unit="%", digits=1, delta="points"),
    "parsed": MetricInfo(label="Answers with a box", unit="%", digits=1, delta="points", headline=False),
}


class GroundingEntry(EvalEntry):
    kind: Literal["grounding"]
    images: int = Field(12, ge=1)
    image_size: int = Field(448, ge=32)
    classes: list[str] = Field(default_factory=lambda: ["square", "circle", "triangle", "A", "E", "K"])
    mode: Optional[str] = None
    max_new_tokens: int = Field(32, ge=1)
    annotated: int = Field(12, ge=0, description="side-by-side images saved for the card")
    seed: int = 0


class GroundItem(BaseModel):
    prompt: str
    image: str


class GroundingJob(BaseModel):
    mode: ModeJob
    items: list[GroundItem]


class Answers(BaseModel):
    outputs: list[str] = Field(default_factory=list)


@dataclass
class GroundingBench:
    """The synthetic images of one grounding eval and one question per object."""

    scenes: list[grounding.Scene]
    image_paths: list[Path]
    items: list[GroundItem] = field(default_factory=list)
    truth: list[tuple[int, grounding.SceneObject]] = field(default_factory=list)  # (scene index, object)


def build_grounding(entry: GroundingEntry, folder: Path, prompt_template: str) -> GroundingBench:
    scenes = grounding.make_benchmark(entry.classes, entry.images, entry.image_size, entry.seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, scene in enumerate(scenes):
        path = folder / f"scene_{i:03d}.png"
        scene.image.save(path)
        paths.append(path)
    bench = GroundingBench(scenes=scenes, image_paths=paths)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            bench.items.append(GroundItem(prompt=prompt_template.format(target=grounding.describe(obj)), image=str(paths[i])))
            bench.truth.append((i, obj))
    return bench


def score_grounding(bench: GroundingBench, outputs: list[str]) -> dict[str, Any]:
    """IoU per object (0 when no box parses), mean IoU, IoU@0.5, per-class means, predicted boxes."""
    ious, predicted = [], []
    for (scene_index, obj), text in zip(bench.truth, outputs):
        size = bench.scenes[scene_index].image.size
        boxes = grounding.parse_boxes(text)
        box = grounding.to_pixels(boxes[0], *size) if boxes else None
        predicted.append(box)
        ious.append(grounding.iou(box, obj.box) if box else 0.0)
    per_class: dict[str, list[float]] = {}
    for (_, obj), value in zip(bench.truth, ious):
        per_class.setdefault(obj.label, []).append(value)
    n = max(len(ious), 1)
    return {
        "ious": ious,
        "predicted": predicted,
        "mean_iou": sum(ious) / n,
        "iou@0.5": sum(v >= 0.5 for v in ious) / n,
        "parsed": sum(p is not None for p in predicted) / n,
        "per_class": {label: sum(v) / len(v) for label, v in per_class.items()},
        "count": {label: len(v) for label, v in per_class.items()},
    }


def class_group(label: str) -> str:
    return "shape" if label in grounding.SHAPES else "letter"


def save_annotated(bench: GroundingBench, predicted: dict[str, list[Any]] | list[Any], assets: Path, stem: str, limit: int = 12) -> list[Path]:
    """Annotated copies of the first ``limit`` images: green = truth, blue = base, red = quantized."""
    if not isinstance(predicted, dict):
        predicted = {"quantized": predicted}
    saved = []
    for scene_index, scene in enumerate(bench.scenes[:limit]):
        truth = [obj.box for (i, obj) in bench.truth if i == scene_index]
        boxes = {role: [p for (i, _), p in zip(bench.truth, preds) if i == scene_index] for role, preds in predicted.items()}
        path = assets / f"{stem}_{scene_index:02d}.png"
        grounding.annotate(scene.image, truth, boxes.get("quantized", []), path, base=boxes.get("base"))
        saved.append(path)
    return saved


def _grounding_mode(entry: GroundingEntry, ctx: PrepareContext) -> ModeJob:
    if entry.mode is not None:
        found = next((m for m in ctx.modes if m.name == entry.mode), None)
        if found is None:
            names = ", ".join(m.name for m in ctx.modes)
            raise ValidateError(f"{ctx.where('mode')}: no mode named {entry.mode!r}; use one of: {names}")
        return found
    found = next((m for m in ctx.modes if m.task == "ground"), None)
    if found is not None:
        return found
    if ctx.task == "causal-lm":
        raise ValidateError(f"{ctx.where()}: the grounding benchmark needs an image model; remove it or set eval[{ctx.index}].mode")
    return ModeJob(name="grounding", generate=GenerateArgs(do_sample=False), task="ground")


@eval_kinds.register
class Grounding:
    name = "grounding"
    display_name = "Synthetic grounding benchmark"
    reference_url = "https://en.wikipedia.org/wiki/Jaccard_index"
    Entry = GroundingEntry
    Job = GroundingJob
    Output = Answers
    metrics = METRICS
    gates = (GateSpec(name="max_iou_drop", metric="mean_iou", direction="max", value="drop", le=1.0, bounds=(-1.0, 1.0),
                      description="mean IoU may fall by at most this much (absolute)"),)

    def prepare(self, entry: GroundingEntry, ctx: PrepareContext) -> GroundingJob:
        mode = _grounding_mode(entry, ctx)
        template = "{target}" if mode.custom_generate else GENERIC_PROMPT
        bench = build_grounding(entry, ctx.work / f"grounding_{ctx.index}", template)
        mode = mode.model_copy(update={"generate": mode.generate.model_copy(update={"max_new_tokens": entry.max_new_tokens})})
        return GroundingJob(mode=mode, items=bench.items)

    def steps(self, job: GroundingJob) -> int:
        return len(job.items)

    def run(self, job: GroundingJob, model: Any) -> Answers:
        out = Answers()
        for item in job.items:
            texts = model.generate(job.mode.model_copy(update={"prompt": item.prompt, "images": [item.image], "prompts": None}))
            out.outputs.append(texts[0] if texts else "")
            model.progress(f"object {len(out.outputs)}")
        return out

    def score(self, entry: GroundingEntry, job: GroundingJob, outputs: dict[str, Answers], ctx: ScoreContext) -> EvalResult:
        template = "{target}" if job.mode.custom_generate else GENERIC_PROMPT
        bench = build_grounding(entry, ctx.work / f"grounding_{ctx.index}", template)  # same seed: the same scenes
        scores = {role: score_grounding(bench, outputs[role].outputs) for role in ("base", "quantized")}
        result = EvalResult(name=entry.label, kind=self.name, display=dict(METRICS))
        for name in METRICS:
            result.metrics[name] = {role: scores[role][name] for role in ("base", "quantized")}
        ious = {role: scores[role]["ious"] for role in ("base", "quantized")}
        hits = {role: [float(v >= 0.5) for v in ious[role]] for role in ious}
        for name, values in (("mean_iou", ious), ("iou@0.5", hits)):
            sides = {role: mean_interval(values[role], seed=entry.seed) for role in values}
            sides["delta"] = paired_delta_interval(values["base"], values["quantized"], seed=entry.seed)
            result.intervals[name] = {k: v for k, v in sides.items() if v is not None}
        result.per_class = per_class_rows(bench, ious)
        saved = save_annotated(bench, {role: scores[role]["predicted"] for role in scores}, ctx.assets, ctx.stem, entry.annotated)
        result.images = [f"{ASSETS_DIR}/{p.name}" for p in saved]
        result.details["annotated"] = len(saved)
        return result


def per_class_rows(bench: GroundingBench, ious: dict[str, list[float]]) -> list[dict[str, Any]]:
    """One row per class, then one total per group (shapes, letters), then all objects."""
    labels = list(dict.fromkeys(obj.label for _, obj in bench.truth))
    rows = []

    def row(name: str, group: str, picked: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {"class": name, "group": group, "count": len(picked)}
        for role in ("base", "quantized"):
            out[f"{role}_mean_iou"] = mean([ious[role][i] for i in picked]) if picked else math.nan
        return out

    for label in labels:
        rows.append(row(label, class_group(label), [i for i, (_, o) in enumerate(bench.truth) if o.label == label]))
    groups = list(dict.fromkeys(class_group(label) for label in labels))
    if len(groups) > 1 or len(labels) > 1:
        for group in groups:
            rows.append(row(f"all {group}s", group, [i for i, (_, o) in enumerate(bench.truth) if class_group(o.label) == group]))
    return rows
