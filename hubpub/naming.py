"""Names with rules, kept in one place: git tags (push, recipe, release) and weight files."""

from __future__ import annotations

import re

# a git tag name as the Hub accepts it: starts with a letter, digit or '_', then also '.', '-', '/'
TAG_NAME = re.compile(r"^[\w][\w.\-/]*$", re.ASCII)
TAG_HINT = "use letters, digits, '.', '-', '_' or '/', e.g. v1 or v2.0"


def is_tag_name(value: str) -> bool:
    return bool(TAG_NAME.match(value)) and ".." not in value and not value.endswith((".", "/", ".lock"))


# files that hold weights (what a card's inventory sizes, what reproduce compares byte for byte,
# what split leaves behind when it copies a model's side files)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx")

# hidden folders that are part of a release all the same (the Hub reads .eval_results/*.yaml)
PUBLISHED_HIDDEN = (".eval_results",)


def is_hidden(parts: tuple[str, ...] | list[str]) -> bool:
    """A release file hubpub never publishes: temp files of atomic writes, caches (dot names)."""
    return any(part.startswith(".") and part not in PUBLISHED_HIDDEN for part in parts)
