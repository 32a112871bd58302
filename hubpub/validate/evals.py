"""The offline evals of ``[[eval]]`` entries: preparing worker inputs and scoring what came back.

* perplexity: exp(mean next-token NLL) over ``max_samples`` windows of ``seqlen`` tokens;
* kl: mean KL(base || quantized) of next-token distributions, and top-1 agreement;
* similarity: quantized vs base greedy generations (exact match, character similarity,
  difflib ratio, word Jaccard);
* grounding: synthetic shapes-and-letters images with true boxes; mean IoU, IoU@0.5, per class,
  and annotated images (green = truth, red = prediction).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ValidateError
from ..recipe import EvalEntry, Recipe
from . import grounding

DEFAULT_SIMILARITY_PROMPTS = ["The function returns", "A class definition", "An exception is raised when", "The for statement"]


# ----------------------------------------------------------------------------- texts
def load_texts(recipe: Recipe, index: int, entry: EvalEntry) -> list[str]:
    """The eval's text: a .txt file, a .jsonl file with a "text" field, or builtin:pydoc (held out)."""
    from ..calibration import read_texts

    assert entry.file is not None
    return read_texts(recipe, entry.file, f"{recipe.path}: eval[{index}].file", error=ValidateError, held_out=True)


# ----------------------------------------------------------------------------- kl
def kl_stats(base_logprobs: Any, quant_logprobs: Any) -> dict[str, float]:
    """Mean KL(base || quantized) per token position and top-1 agreement, from log-prob arrays."""
    import numpy as np

    p = np.asarray(base_logprobs, dtype=np.float64)
    q = np.asarray(quant_logprobs, dtype=np.float64)
    if p.shape != q.shape:
        raise ValidateError(f"base and quantized vocabularies differ ({p.shape[-1]} vs {q.shape[-1]}); the tokenizer changed")
    kl = (np.exp(p) * (p - q)).sum(axis=-1)
    top1 = (p.argmax(axis=-1) == q.argmax(axis=-1)).mean()
    return {"kl": float(max(0.0, kl.mean())), "top1_agreement": float(top1)}


# ----------------------------------------------------------------------------- similarity
def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def text_similarity(base: list[str], other: list[str]) -> dict[str, float]:
    """Means over pairs: exact match, 1 - edit distance / longer length, difflib ratio, word Jaccard."""
    pairs = list(zip(base, other))
    if not pairs:
        return {}

    def char_sim(a: str, b: str) -> float:
        return 1.0 if not a and not b else 1.0 - levenshtein(a, b) / max(len(a), len(b))

    def jaccard(a: str, b: str) -> float:
        wa, wb = set(a.split()), set(b.split())
        return 1.0 if not wa and not wb else len(wa & wb) / len(wa | wb)

    n = len(pairs)
    return {
        "exact_match": sum(a == b for a, b in pairs) / n,
        "char_similarity": sum(char_sim(a, b) for a, b in pairs) / n,
        "difflib_ratio": sum(difflib.SequenceMatcher(None, a, b).ratio() for a, b in pairs) / n,
        "word_jaccard": sum(jaccard(a, b) for a, b in pairs) / n,
    }


# ----------------------------------------------------------------------------- grounding
@dataclass
class GroundingBench:
    """The synthetic images of one grounding eval and one question per object."""

    scenes: list[grounding.Scene]
    image_paths: list[Path]
    items: list[dict[str, Any]] = field(default_factory=list)  # {"prompt", "images"} for the worker
    truth: list[tuple[int, grounding.SceneObject]] = field(default_factory=list)  # (scene index, object)


def build_grounding(entry: EvalEntry, folder: Path, prompt_template: str) -> GroundingBench:
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
            bench.items.append({"prompt": prompt_template.format(target=grounding.describe(obj)), "images": [str(paths[i])]})
            bench.truth.append((i, obj))
    return bench


def score_grounding(bench: GroundingBench, outputs: list[str]) -> dict[str, Any]:
    """IoU per object (0 when no box parses), mean IoU, IoU@0.5, per-class rows, predicted boxes."""
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


def grounding_class_group(label: str) -> str:
    return "shape" if label in grounding.SHAPES else "letter"


def save_annotated(bench: GroundingBench, predicted: list[Any], assets: Path, stem: str, limit: int = 4) -> list[Path]:
    """Annotated copies of the first ``limit`` images: green = truth, red = prediction."""
    saved = []
    for scene_index, scene in enumerate(bench.scenes[:limit]):
        truth = [obj.box for (i, obj) in bench.truth if i == scene_index]
        preds = [p for (i, _), p in zip(bench.truth, predicted) if i == scene_index]
        path = assets / f"{stem}_{scene_index:02d}.png"
        grounding.annotate(scene.image, truth, preds, path)
        saved.append(path)
    return saved
