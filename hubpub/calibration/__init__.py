"""Calibration texts for AutoRound: read, tokenize, cut into chunks of at least ``seqlen`` tokens.

``[quantize] calibration`` is one corpus (a string) or a list of sources (tables)::

    calibration = "builtin:pydoc"          # or "data/calib.jsonl" ("text" field), "notes.txt"
    calibration = [
      { source = "builtin:pydoc", samples = 4 },
      { source = "data/chat.jsonl", samples = 4, column = "text" },
    ]

Source kinds (sources.py): ``builtin:pydoc`` (the language reference that ships with CPython,
so quantizing needs no download), a ``.jsonl`` file (``column``, default "text"), a ``.txt``
file (the whole file is one text), a ``.parquet`` file (pyarrow), a dataset folder (one written
by ``datasets.Dataset.save_to_disk``, or a folder of .jsonl / .parquet / .csv data files that
``datasets.load_dataset(folder)`` reads; ``split``, ``streaming``), and a Hub dataset
``hf:owner/name`` (``split``, ``column``, ``revision``, ``streaming``) through ``datasets``.

Each source gets ``samples`` chunks, or a ``weight``-share of what ``quantize.nsamples`` leaves
after the fixed counts (a source with neither has weight 1); when every source has ``samples``
their sum is the sample count. Each source is chunked on its own, exactly as the one-corpus form
always was (that form, read through the same code, gives the same chunks as before).

AutoRound drops any text shorter than seqlen and exits the process when none is left; we check
first and raise a one-line QuantizeError instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import HubpubError, QuantizeError
from .sources import (HELD_OUT_TOPICS, Entry, allocate, entries, local_sources, path_problems, read_source,
                      source_problem)

if TYPE_CHECKING:
    from ..recipe import Recipe


@dataclass(frozen=True)
class Calibration:
    texts: list[str]  # each re-encodes to >= seqlen tokens
    source: str  # the recipe's value (one corpus) or the sources' names joined with ", "
    total_tokens: int  # tokens read from the corpora (reading stops once the samples are there)
    available: int  # chunks the corpora gave
    sources: list[dict[str, Any]] = field(default_factory=list)  # per source: kind, name, samples, ... (manifest)


def read_texts(recipe: "Recipe", name: str | None = None, field: str = "quantize.calibration", *,
               error: type[HubpubError] = QuantizeError, held_out: bool = False) -> list[str]:
    """The raw texts of one corpus named in the recipe: a .txt / .jsonl file or builtin:pydoc.

    Calibration reads the start of builtin:pydoc, evals (held_out=True) its held-out end.
    """
    if name is None:
        cal = recipe.quantize.calibration
        name = cal if isinstance(cal, str) else cal[0].source
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


def _chunks(texts: Any, tokenizer: Any, seqlen: int, wanted: int) -> tuple[list[str], int]:
    """Up to ``wanted`` chunks of >= seqlen tokens (after decode and re-encode), and the tokens read."""
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
    return chunks, len(ids)


def build_calibration(recipe: "Recipe", tokenizer: Any) -> Calibration:
    """Chunks of >= seqlen tokens (after decode and re-encode): nsamples of them, or each source's share."""
    q = recipe.quantize
    seqlen = q.seqlen
    step = seqlen + max(8, seqlen // 8)
    if isinstance(q.calibration, str):  # one corpus: exactly the chunks it always gave
        chunks, total = _chunks(read_texts(recipe), tokenizer, seqlen, q.nsamples)
        if not chunks:
            raise QuantizeError(
                f"quantize.calibration: {q.calibration} has {total} tokens, fewer than quantize.seqlen = {seqlen}"
                f" (+{step - seqlen} margin) needs for one sample; use a longer corpus or lower quantize.seqlen"
            )
        only = entries(recipe)[0]
        record = {**only.describe(recipe), "samples": len(chunks), "requested": q.nsamples, "tokens": total}
        return Calibration(texts=chunks, source=q.calibration, total_tokens=total, available=len(chunks), sources=[record])

    texts: list[str] = []
    records: list[dict[str, Any]] = []
    total = 0
    listed = entries(recipe)
    for entry, wanted in zip(listed, allocate(recipe, listed)):
        if wanted == 0:
            records.append({**entry.describe(recipe), "samples": 0, "requested": 0, "tokens": 0})
            continue
        got, n = _chunks(read_source(recipe, entry), tokenizer, seqlen, wanted)
        if not got:
            raise QuantizeError(
                f"{entry.at(recipe, 'source')}: {entry.spec.source} has {n} tokens, fewer than quantize.seqlen = {seqlen}"
                f" (+{step - seqlen} margin) needs for one sample; use a longer corpus or lower quantize.seqlen"
            )
        texts += got
        total += n
        records.append({**entry.describe(recipe), "samples": len(got), "requested": wanted, "tokens": n})
    return Calibration(texts=texts, source=", ".join(e.spec.source for e in listed), total_tokens=total,
                       available=len(texts), sources=records)


def input_digest(recipe: "Recipe") -> str:
    """sha256 over the contents of the local files quantize reads besides the model: calibration
    files / folders and the calibration hook's module. Part of the quantize cache key, so editing
    one re-runs quantize (the recipe text alone does not change)."""
    import hashlib

    from .hook import _module_file, parse_spec
    from .sources import _sha256

    q = recipe.quantize
    paths = [] if q.method == "rtn" else [recipe.resolve(value) for _, value in local_sources(recipe)]
    if isinstance(q.calibration, str) and q.method != "rtn" and q.calibration != "builtin:pydoc":
        paths.append(recipe.resolve(q.calibration))
    if q.calibration_hook:
        hook = _module_file(recipe, parse_spec(q.calibration_hook)[0])
        if hook is not None:
            paths.append(hook)
    if not paths:
        return ""
    return hashlib.sha256("\n".join(f"{_sha256(p) or 'missing'}" for p in paths).encode()).hexdigest()


__all__ = ["HELD_OUT_TOPICS", "Calibration", "Entry", "allocate", "build_calibration", "entries", "input_digest", "local_sources",
           "path_problems", "read_source", "read_texts", "source_problem"]
