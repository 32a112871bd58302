"""Calibration texts for AutoRound: read, tokenize, cut into chunks of at least ``seqlen`` tokens.

Sources: a .jsonl file (one object per line with a "text" field), a .txt file (the whole file
is one text), or ``builtin:pydoc`` (the language reference that ships with CPython, so
quantizing needs no download). AutoRound drops any text shorter than seqlen and exits the
process when none is left; we check first and raise a one-line QuantizeError instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import HubpubError, QuantizeError

if TYPE_CHECKING:
    from .recipe import Recipe


@dataclass(frozen=True)
class Calibration:
    texts: list[str]  # each re-encodes to >= seqlen tokens
    source: str
    total_tokens: int  # tokens read from the corpus (reading stops once the samples are there)
    available: int  # chunks the corpus could give


# the built-in corpus's last topics are held out: calibration never sees what evals measure on
HELD_OUT_TOPICS = 40


def read_texts(recipe: "Recipe", name: str | None = None, field: str = "quantize.calibration", *,
               error: type[HubpubError] = QuantizeError, held_out: bool = False) -> list[str]:
    """The raw texts of a corpus named in the recipe: a .txt / .jsonl file or builtin:pydoc.

    Calibration reads the start of builtin:pydoc, evals (held_out=True) its held-out end.
    """
    name = name or recipe.quantize.calibration
    if name == "builtin:pydoc":
        from pydoc_data.topics import topics

        names = sorted(topics)
        names = names[-HELD_OUT_TOPICS:] if held_out else names[:-HELD_OUT_TOPICS]
        return [topics[k] for k in names]
    path = recipe.resolve(name)
    if not path.is_file():
        raise error(f"{field}: {path} not found; fix the path (relative to the recipe file) or use builtin:pydoc")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{field}: {path} is not UTF-8 text; save it as UTF-8") from None
    texts = [raw] if path.suffix == ".txt" else []
    if path.suffix != ".txt":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise error(f"{field}: {path}:{n}: not valid JSON; each line must be an object like {{\"text\": \"...\"}}") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise error(f"{field}: {path}:{n}: needs a string field \"text\"")
            texts.append(row["text"])
    if not any(t.strip() for t in texts):
        raise error(f"{field}: {path} holds no text; give it some text")
    return texts


def build_calibration(recipe: "Recipe", tokenizer: Any) -> Calibration:
    """Chunks of >= seqlen tokens (after decode and re-encode), at most nsamples of them."""
    q = recipe.quantize
    seqlen, wanted = q.seqlen, q.nsamples
    texts = read_texts(recipe)
    # decode + re-encode can merge tokens and come out shorter: cut with a margin
    step = seqlen + max(8, seqlen // 8)
    ids: list[int] = []
    sep = tokenizer.eos_token_id
    for text in texts:  # tokenize only as much of the corpus as the samples need
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            ids.append(sep)
        if len(ids) >= step * wanted * 1.25:
            break
    chunks: list[str] = []
    for start in range(0, len(ids) - step + 1, step):
        text = tokenizer.decode(ids[start : start + step])
        if len(tokenizer(text)["input_ids"]) >= seqlen:
            chunks.append(text)
            if len(chunks) == wanted:
                break
    if not chunks:
        raise QuantizeError(
            f"quantize.calibration: {q.calibration} has {len(ids)} tokens, fewer than quantize.seqlen = {seqlen}"
            f" (+{step - seqlen} margin) needs for one sample; use a longer corpus or lower quantize.seqlen"
        )
    return Calibration(texts=chunks, source=q.calibration, total_tokens=len(ids), available=len(chunks))
