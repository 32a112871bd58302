"""Generation modes: the built-in sets, turning recipe modes into worker jobs, and output checks.

A mode is run by the worker (which only generates); whether its output is acceptable is judged
here, in the parent process, by :func:`check_output` against the mode's ``expect`` table.
"""

from __future__ import annotations

import json
import re
from ..errors import ValidateError
from ..recipe import Expect, Mode, Recipe
from .grounding import parse_boxes, parse_points
from .protocol import ChatTurn, GenerateArgs, ModeJob

TEXT_PROMPT = "The function returns"
CHAT_PROMPT = "Explain what a Python list is."
BATCH_PROMPTS = ["The class statement", "An exception is raised when", "A for loop"]
IMAGE_PROMPT = "Describe this image."


def builtin_modes(task: str, max_new_tokens: int) -> list[Mode]:
    """The modes run when the recipe lists none: what every user of this kind of model will try."""
    n = max_new_tokens
    if task == "causal-lm":
        return [
            Mode(name="greedy", prompt=TEXT_PROMPT, generate={"max_new_tokens": n, "do_sample": False}),
            Mode(name="chat", prompt=[{"role": "user", "content": CHAT_PROMPT}], generate={"max_new_tokens": n}),
            Mode(name="sampling", prompt=TEXT_PROMPT, generate={"max_new_tokens": n, "do_sample": True, "temperature": 0.8, "top_p": 0.95, "seed": 0}),
            Mode(name="beam", prompt=TEXT_PROMPT, generate={"max_new_tokens": n, "num_beams": 3, "do_sample": False}),
            Mode(name="batch", prompts=BATCH_PROMPTS, generate={"max_new_tokens": n, "do_sample": False}),
            Mode(name="stream", prompt=TEXT_PROMPT, stream=True, generate={"max_new_tokens": n, "do_sample": False}),
        ]
    if task == "image-text-to-text":
        return [
            Mode(name="image+text", prompt=[{"role": "user", "content": IMAGE_PROMPT}], images=["builtin:scene"], generate={"max_new_tokens": n}),
            Mode(name="text-only", prompt=[{"role": "user", "content": CHAT_PROMPT}], generate={"max_new_tokens": n}),
        ]
    return []


def modes_for(recipe: Recipe, task: str) -> list[Mode]:
    """The recipe's modes, plus the built-in set when the recipe lists none."""
    section = recipe.validate
    if section.modes:
        return list(section.modes)
    modes = builtin_modes(task, section.max_new_tokens) if section.builtin_modes else []
    if not modes:
        raise ValidateError(
            f"{recipe.path}: validate.modes: a {task} model has no built-in modes; add [[validate.modes]]"
            " with custom_generate (the model's own generation method) and task"
        )
    return modes


def mode_job(recipe: Recipe, index: int, mode: Mode) -> ModeJob:
    """The job the worker gets for one mode; image paths are checked and resolved here."""
    images = []
    for image in mode.images:
        if image.startswith("builtin:"):
            images.append(image)
            continue
        path = recipe.resolve(image)
        if not path.is_file():
            raise ValidateError(
                f"{recipe.path}: validate.modes[{index}].images: {path} not found; fix the path (relative to the recipe file)"
            )
        images.append(str(path.resolve()))
    generate = GenerateArgs.model_validate(mode.generate)
    if generate.max_new_tokens is None:
        generate.max_new_tokens = recipe.validate.max_new_tokens
    prompt = mode.prompt
    if isinstance(prompt, list):
        prompt = [ChatTurn(role=m.role, content=m.content) for m in prompt]
    return ModeJob(name=mode.name, prompt=prompt, prompts=mode.prompts, images=images, generate=generate,
                   stream=mode.stream, custom_generate=mode.custom_generate, task=mode.task,
                   arguments=dict(mode.arguments), custom_kwargs=dict(mode.custom_kwargs))


def describe_expect(expect: Expect) -> str:
    parts = []
    if expect.nonempty:
        parts.append("non-empty")
    if expect.no_replacement_char:
        parts.append("no U+FFFD")
    if expect.regex:
        parts.append(f"matches /{expect.regex}/")
    if expect.is_json:
        parts.append("JSON")
    if expect.boxes:
        parts.append(f">= {expect.boxes} <box>")
    if expect.points:
        parts.append(f">= {expect.points} <point>")
    return ", ".join(parts) or "anything"


def check_output(text: str, expect: Expect) -> str | None:
    """Why ``text`` fails ``expect``, or None when it passes."""
    if expect.nonempty and not text.strip():
        return "empty output"
    if expect.no_replacement_char and "\ufffd" in text:
        return "contains U+FFFD (broken UTF-8 bytes)"
    if expect.regex and not re.search(expect.regex, text):
        return f"does not match /{expect.regex}/"
    if expect.is_json:
        try:
            json.loads(text)
        except ValueError as exc:
            return f"not JSON ({exc.msg} at char {exc.pos})"
    if expect.boxes and len(parse_boxes(text)) < expect.boxes:
        return f"{len(parse_boxes(text))} valid <box>x1,y1,x2,y2</box> found, {expect.boxes} expected"
    if expect.points and len(parse_points(text)) < expect.points:
        return f"{len(parse_points(text))} valid <point>x,y</point> found, {expect.points} expected"
    return None

