"""Calibration source kinds: which one a recipe value names, how many samples it gets, its
preflight checks (no model, no tokenizer) and reading its texts.

Kinds: ``builtin`` (builtin:pydoc), ``jsonl``, ``txt``, ``parquet`` (local files), ``folder``
(a dataset folder: ``Dataset.save_to_disk`` output, or data files ``datasets.load_dataset``
reads) and ``hf`` (``hf:owner/name``, a Hub dataset through ``datasets``). ``datasets`` and
``pyarrow`` are imported only when such a source is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import QuantizeError

if TYPE_CHECKING:
    from ..recipe import CalibrationSource, Recipe

# the built-in corpus's last topics are held out: calibration never sees what evals measure on
HELD_OUT_TOPICS = 40
FILE_KINDS = {".jsonl": "jsonl", ".txt": "txt", ".parquet": "parquet"}
WITH_COLUMN = ("jsonl", "parquet", "folder", "hf")
DATASET_KINDS = ("folder", "hf")
LOCAL_KINDS = ("jsonl", "txt", "parquet", "folder")


def kind_of(source: str) -> str:
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith("hf:"):
        return "hf"
    return FILE_KINDS.get(Path(source).suffix.lower(), "folder")


def source_problem(spec: "CalibrationSource") -> tuple[str, str] | None:
    """(key, what is wrong and how to fix it) for one calibration table, from its values alone."""
    from ..recipe import BUILTIN_CORPORA, _did_you_mean, repo_id_problem

    src = spec.source
    kind = kind_of(src)
    if not src.strip():
        return "source", "must not be empty; give builtin:pydoc, a .jsonl / .txt / .parquet file, a dataset folder or hf:owner/name"
    if kind == "builtin" and src not in BUILTIN_CORPORA:
        return "source", f"unknown built-in corpus {src!r}{_did_you_mean(src, BUILTIN_CORPORA)}"
    if kind == "hf":
        bad = repo_id_problem(src[3:], namespace=False) if src[3:] else "must name a dataset"
        if bad:
            return "source", f"{src!r}: the part after hf: {bad}, e.g. hf:NeelNanda/pile-10k"
    if kind == "folder" and Path(src).suffix:
        return "source", (f"{src!r} is not a .jsonl, .txt or .parquet file; give one of those, a dataset folder, "
                          "hf:owner/name or builtin:pydoc")
    if spec.samples is not None and spec.weight is not None:
        return "weight", "give samples (a count) or weight (a share of quantize.nsamples), not both"
    if spec.column is not None and kind not in WITH_COLUMN:
        return "column", f"is read from .jsonl, .parquet, dataset folder and hf: sources only, not a {kind} source; remove it"
    if spec.column is not None and not spec.column.strip():
        return "column", "must not be empty; name the text column, e.g. 'text'"
    for key in ("split", "streaming"):
        if getattr(spec, key) not in (None, False) and kind not in DATASET_KINDS:
            return key, f"is read from hf: and dataset folder sources only, not a {kind} source; remove it"
    if spec.revision is not None and kind != "hf":
        return "revision", f"is read from hf: sources only, not a {kind} source; remove it"
    return None


@dataclass(frozen=True)
class Entry:
    """One calibration source of the recipe; ``index`` is None for the one-corpus string form."""

    spec: Any  # CalibrationSource
    index: int | None

    @property
    def kind(self) -> str:
        return kind_of(self.spec.source)

    @property
    def column(self) -> str:
        return self.spec.column or "text"

    def loc(self, key: str = "source") -> tuple[Any, ...]:
        return ("quantize", "calibration") if self.index is None else ("quantize", "calibration", self.index, key)

    def field(self, key: str = "source") -> str:
        return "quantize.calibration" if self.index is None else f"quantize.calibration[{self.index}].{key}"

    def at(self, recipe: "Recipe", key: str = "source") -> str:
        """'recipe.toml:7: quantize.calibration[1].source' (the line when the recipe has a text)."""
        from ..recipe import line_of

        line = line_of(recipe.text, self.loc(key)) if recipe.text else None
        return f"{recipe.path}:{line}: {self.field(key)}" if line else self.field(key)

    def path(self, recipe: "Recipe") -> Path:
        return recipe.resolve(self.spec.source)

    def describe(self, recipe: "Recipe") -> dict[str, Any]:
        """What the manifest records of this source (sha256 of local files / folders)."""
        s = self.spec
        out: dict[str, Any] = {"kind": self.kind, "name": s.source}
        if self.kind in WITH_COLUMN:
            out["column"] = self.column
        if self.kind in DATASET_KINDS:
            out["split"] = s.split or "train"
            out["streaming"] = s.streaming
        if self.kind == "hf":
            out["revision"] = s.revision
        if s.weight is not None:
            out["weight"] = s.weight
        if self.kind in LOCAL_KINDS:
            out["sha256"] = _sha256(self.path(recipe))
        return out


def entries(recipe: "Recipe") -> list[Entry]:
    from ..recipe import CalibrationSource

    cal = recipe.quantize.calibration
    if isinstance(cal, str):
        return [Entry(CalibrationSource.model_construct(source=cal, samples=None, weight=None, column=None, split=None,
                                                        revision=None, streaming=False), None)]
    return [Entry(spec, i) for i, spec in enumerate(cal)]


def allocate(recipe: "Recipe", listed: list[Entry]) -> list[int]:
    """Samples per source: ``samples`` as given; the weighted ones (weight 1 when neither is set)
    share what quantize.nsamples leaves, largest remainder first."""
    nsamples = recipe.quantize.nsamples
    if len(listed) == 1 and listed[0].spec.samples is None:
        return [nsamples]
    fixed = sum(e.spec.samples for e in listed if e.spec.samples is not None)
    weighted = [i for i, e in enumerate(listed) if e.spec.samples is None]
    counts = [e.spec.samples or 0 for e in listed]
    if not weighted:
        return counts
    left = nsamples - fixed
    if left < len(weighted):
        first = listed[weighted[0]]
        raise QuantizeError(
            f"{first.at(recipe, 'weight')}: quantize.nsamples = {nsamples} minus the fixed samples ({fixed}) leaves {max(left, 0)}"
            f" for {len(weighted)} weighted source(s); raise quantize.nsamples or give every source samples = N"
        )
    weights = [listed[i].spec.weight or 1.0 for i in weighted]
    total = sum(weights)
    exact = [left * w / total for w in weights]
    share = [int(x) for x in exact]
    for j in sorted(range(len(exact)), key=lambda j: exact[j] - share[j], reverse=True)[: left - sum(share)]:
        share[j] += 1
    for i, n in zip(weighted, share):
        counts[i] = n
    return counts


def local_sources(recipe: "Recipe") -> list[tuple[tuple[Any, ...], str]]:
    """(recipe location, value) of each calibration source that is a local file or folder."""
    return [(e.loc(), e.spec.source) for e in entries(recipe) if e.kind in LOCAL_KINDS]


def offline() -> bool:
    return any(os.environ.get(k, "").upper() in ("1", "ON", "YES", "TRUE") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _offline_message(name: str) -> str:
    return (f"{name} is not in the local datasets cache and HF_HUB_OFFLINE=1; load it once online (unset HF_HUB_OFFLINE)"
            " or use a local .jsonl / .parquet file or dataset folder")


def _columns_message(column: str, name: str, columns: list[str]) -> str:
    return f"{column!r} is not a column of {name}; its columns: {', '.join(columns) or 'none'}; set column to one of them"


def path_problems(recipe: "Recipe") -> list[tuple[str, str]]:
    """(field, problem) for the calibration sources, knowable without the model: local paths
    exist and have the right kind, the column exists (jsonl / parquet / cached datasets), a Hub
    dataset is cached when offline."""
    from ..check import _path_kind_problem

    out: list[tuple[str, str]] = []
    for e in entries(recipe):
        if e.kind == "builtin":
            continue
        if e.kind == "hf":
            out += _hf_problems(e)
            continue
        path = e.path(recipe)
        want = "folder" if e.kind == "folder" else "file"
        what = "dataset" if want == "folder" else "calibration text (.txt or .jsonl)" if e.index is None else f"calibration {e.kind}"
        bad = _path_kind_problem(path, want, what)
        if bad:
            out.append((e.field(), bad))
            continue
        if e.index is None:  # the one-corpus form: read as it always was, at quantize time
            continue
        found = _local_columns(e, path)
        if found is not None and e.column not in found:
            out.append((e.field("column"), _columns_message(e.column, e.spec.source, found)))
    return out


def _local_columns(e: Entry, path: Path) -> list[str] | None:
    if e.kind == "jsonl":
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        row = json.loads(line)
                        return list(row) if isinstance(row, dict) else None
        except (ValueError, OSError):
            return None  # read_source reports it with the line
        return None
    if e.kind == "parquet":
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 - not parquet: read_source reports it
            return None
    return None


def _hf_problems(e: Entry) -> list[tuple[str, str]]:
    if not offline():
        return []  # online: the first read says if it is missing (no request from a preflight)
    name = e.spec.source[3:]
    import datasets

    try:
        builder = datasets.load_dataset_builder(name, revision=e.spec.revision)
    except Exception:  # noqa: BLE001 - datasets raises ConnectionError / FileNotFoundError / its own
        return [(e.field(), _offline_message(e.spec.source))]
    features = getattr(builder.info, "features", None)
    if features is not None and e.column not in features:
        return [(e.field("column"), _columns_message(e.column, e.spec.source, list(features)))]
    return []


# ----------------------------------------------------------------------------- reading
def read_source(recipe: "Recipe", e: Entry) -> Iterator[str]:
    """The texts of one source, lazily (a streamed dataset is read only as far as the samples need)."""
    if e.kind in ("builtin", "txt"):
        from . import read_texts

        yield from read_texts(recipe, e.spec.source, e.field())
        return
    if e.kind == "jsonl":
        yield from _jsonl(recipe, e)
    elif e.kind == "parquet":
        yield from _parquet(recipe, e)
    else:
        yield from _dataset(recipe, e)


def _jsonl(recipe: "Recipe", e: Entry) -> Iterator[str]:
    path, col, where = e.path(recipe), e.column, e.at(recipe)
    if not path.is_file():
        raise QuantizeError(f"{where}: {path} not found; fix the path (relative paths start at the recipe's folder)")
    found = False
    with open(path, encoding="utf-8", errors="strict") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise QuantizeError(f"{where}: {path}:{n}: not valid JSON; each line must be an object like {{\"{col}\": \"...\"}}") from None
            if not isinstance(row, dict) or col not in row:
                cols = list(row) if isinstance(row, dict) else []
                raise QuantizeError(f"{e.at(recipe, 'column')}: {path}:{n}: {_columns_message(col, path.name, cols)}")
            if isinstance(row[col], str) and row[col].strip():
                found = True
                yield row[col]
    if not found:
        raise QuantizeError(f"{where}: {path} holds no text in column {col!r}; give it some text")


def _parquet(recipe: "Recipe", e: Entry) -> Iterator[str]:
    path, where = e.path(recipe), e.at(recipe)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise QuantizeError(f"{where}: reading .parquet needs pyarrow; pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid / OSError
        raise QuantizeError(f"{where}: {path} is not a readable parquet file ({_first_line(exc)}); fix or re-export it") from None
    names = list(pf.schema_arrow.names)
    if e.column not in names:
        raise QuantizeError(f"{e.at(recipe, 'column')}: {_columns_message(e.column, path.name, names)}")
    for batch in pf.iter_batches(columns=[e.column], batch_size=256):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value


def _dataset(recipe: "Recipe", e: Entry) -> Iterator[str]:
    """A dataset folder or a Hub dataset, through the datasets library."""
    where = e.at(recipe)
    try:
        import datasets
    except ImportError:
        raise QuantizeError(f"{where}: dataset sources need the datasets library; pip install datasets") from None
    s = e.spec
    split = s.split or "train"
    try:
        if e.kind == "hf":
            if offline():
                try:
                    datasets.load_dataset_builder(s.source[3:], revision=s.revision)
                except Exception:  # noqa: BLE001
                    raise QuantizeError(f"{where}: {_offline_message(s.source)}") from None
            ds = datasets.load_dataset(s.source[3:], split=split, revision=s.revision, streaming=s.streaming)
        else:
            folder = e.path(recipe)
            if not folder.is_dir():
                raise QuantizeError(f"{where}: {folder} not found; fix the path (relative paths start at the recipe's folder)")
            if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
                ds = datasets.load_from_disk(str(folder))
                if isinstance(ds, datasets.DatasetDict):
                    if split not in ds:
                        raise QuantizeError(f"{e.at(recipe, 'split')}: {split!r} is not a split of {s.source}; its splits: {', '.join(ds)}")
                    ds = ds[split]
                if s.streaming:
                    ds = ds.to_iterable_dataset()
            else:
                ds = datasets.load_dataset(str(folder), split=split, streaming=s.streaming,
                                           cache_dir=str(recipe.work_path / "datasets"))
    except QuantizeError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets' own errors (unknown split, no data files, ...)
        raise QuantizeError(f"{where}: {s.source}: {_first_line(exc)}; check the source, split and revision") from None
    columns = getattr(ds, "column_names", None)
    if columns is not None and e.column not in columns:
        raise QuantizeError(f"{e.at(recipe, 'column')}: {_columns_message(e.column, s.source, list(columns))}")
    found = False
    for row in ds:
        if e.column not in row:
            raise QuantizeError(f"{e.at(recipe, 'column')}: {_columns_message(e.column, s.source, list(row))}")
        value = row[e.column]
        if isinstance(value, str) and value.strip():
            found = True
            yield value
    if not found:
        raise QuantizeError(f"{where}: {s.source} holds no text in column {e.column!r} of split {split!r}; pick a text column")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _sha256(path: Path) -> str | None:
    """sha256 of a file, or of a folder's files (relative name and content, sorted)."""
    h = hashlib.sha256()
    try:
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                h.update(str(f.relative_to(path)).encode() + b"\0")
                h.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
