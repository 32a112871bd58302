"""Boxes and points: parsing model answers, IoU, synthetic benchmark images, annotated images.

Grounding models answer on a 0-1000 scale: ``<box>x1,y1,x2,y2</box>`` and ``<point>x,y</point>``
(also accepted: ``[x1, y1, x2, y2]`` inside the tag, and ``(x,y)`` points). Coordinates are
converted to pixels with :func:`to_pixels` before IoU is computed against the true boxes.

The benchmark images are drawn with pillow only: solid coloured shapes and black capital
letters on white, each with its exact bounding box, reproducible from a seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCALE = 1000  # the coordinate scale grounding models answer on
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
BOX_RE = re.compile(r"<box>\s*\[?" + ",".join([_NUM] * 4) + r"\]?\s*</box>")
POINT_RE = re.compile(r"<point>\s*[\[(]?" + _NUM + "," + _NUM + r"[\])]?\s*</point>")
SHAPES = ("square", "circle", "triangle")
COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 160, 60), "orange": (240, 150, 20)}

Box = tuple[float, float, float, float]
Point = tuple[float, float]


def parse_boxes(text: str) -> list[Box]:
    """Every well-formed box in ``text`` (0-1000 scale), in order; x1<=x2 and y1<=y2 required."""
    boxes = []
    for m in BOX_RE.finditer(text):
        x1, y1, x2, y2 = (float(v) for v in m.groups())
        if 0 <= x1 <= x2 <= SCALE and 0 <= y1 <= y2 <= SCALE:
            boxes.append((x1, y1, x2, y2))
    return boxes


def parse_points(text: str) -> list[Point]:
    """Every well-formed point in ``text`` (0-1000 scale), in order."""
    points = []
    for m in POINT_RE.finditer(text):
        x, y = (float(v) for v in m.groups())
        if 0 <= x <= SCALE and 0 <= y <= SCALE:
            points.append((x, y))
    return points


def to_pixels(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    return (x1 * width / SCALE, y1 * height / SCALE, x2 * width / SCALE, y2 * height / SCALE)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0.0 when they do not overlap."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ----------------------------------------------------------------------------- synthetic images
@dataclass
class SceneObject:
    label: str  # a shape name or a capital letter
    colour: str
    box: Box  # pixels


@dataclass
class Scene:
    image: Any  # PIL.Image.Image
    objects: list[SceneObject]


def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    for name in ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def make_scene(classes: list[str], size: int, rng: random.Random, count: int = 2) -> Scene:
    """A white ``size`` x ``size`` image with ``count`` non-overlapping objects drawn from classes."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    objects: list[SceneObject] = []
    for _ in range(count):
        label = rng.choice(classes)
        for _attempt in range(50):
            side = rng.randint(size // 6, size // 3)
            x1, y1 = rng.randint(0, size - side - 1), rng.randint(0, size - side - 1)
            cand = (float(x1), float(y1), float(x1 + side), float(y1 + side))
            if all(iou(cand, o.box) == 0.0 for o in objects):
                break
        colour = rng.choice(list(COLOURS)) if label in SHAPES else "black"
        fill = COLOURS.get(colour, (0, 0, 0))
        if label == "square":
            draw.rectangle(cand, fill=fill)
        elif label == "circle":
            draw.ellipse(cand, fill=fill)
        elif label == "triangle":
            draw.polygon([(cand[0], cand[3]), (cand[2], cand[3]), ((cand[0] + cand[2]) / 2, cand[1])], fill=fill)
        else:
            # a letter: draw it, then take its real ink box as the truth
            font = _font(int(side * 1.2))
            draw.text((cand[0], cand[1]), label, fill=fill, font=font, anchor="lt")
            left, top, right, bottom = draw.textbbox((cand[0], cand[1]), label, font=font, anchor="lt")
            cand = (float(left), float(top), float(min(right, size)), float(min(bottom, size)))
        objects.append(SceneObject(label=label, colour=colour, box=cand))
    return Scene(image=image, objects=objects)


def make_benchmark(classes: list[str], images: int, size: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [make_scene(classes, size, rng) for _ in range(images)]


def describe(obj: SceneObject) -> str:
    """The referring expression for an object, e.g. 'the red circle' or 'the letter K'."""
    return f"the {obj.colour} {obj.label}" if obj.label in SHAPES else f"the letter {obj.label}"


def annotate(image: Any, truth: list[Box], predicted: list[Box | None], path: Path, base: list[Box | None] | None = None) -> None:
    """Save a copy of image with true boxes in green, the base model's in blue, predicted (quantized) in red."""
    import io

    from PIL import ImageDraw

    from ..artifacts import write_atomic

    out = image.copy()
    draw = ImageDraw.Draw(out)
    for box in truth:
        draw.rectangle(box, outline=(0, 170, 0), width=3)
    for box in base or []:
        if box is not None:
            draw.rectangle(box, outline=(30, 90, 230), width=2)
    for box in predicted:
        if box is not None:
            draw.rectangle(box, outline=(220, 0, 0), width=2)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    write_atomic(path, buf.getvalue())
