"""The base model's measurement, kept across validations (a family of variants measures it once).

The base worker's result depends only on its job (base folder, modes, evals, runs, device) and the
base files, so a result from the same job on unchanged files is reused. Key: the job with the
temporary work folder blanked out, the hubpub version, and (name, size, mtime) of every base
file. Files the base worker wrote into the work folder for scoring (e.g. KL log-probs
``*_base.npy``) are kept beside the result and copied back on reuse. The cache lives in the
family's shared scratch (``recipe._shared_work``, set by hubpub.variants) or the recipe's own.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..artifacts import write_atomic
from .protocol import WorkerJob, WorkerResult

if TYPE_CHECKING:
    from ..recipe import Recipe

DIR = "base-cache"
WORK = "<work>"


def cache_dir(recipe: "Recipe") -> Path:
    return (recipe._shared_work or recipe.work_path) / DIR


def key(job: WorkerJob, work: Path) -> str:
    blob = job.model_dump_json().replace(str(work), "<work>")
    folder = Path(job.model_dir)
    files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(json.dumps([__version__, blob, files]).encode()).hexdigest()[:32]


def _own_files(work: Path) -> list[Path]:
    return [p for p in work.iterdir() if p.is_file() and "_base" in p.name and not p.name.startswith("result_")]


def lookup(recipe: "Recipe", job: WorkerJob, work: Path) -> WorkerResult | None:
    root = cache_dir(recipe) / key(job, work)
    try:
        text = (root / "result.json").read_text(encoding="utf-8")
        # paths the result names (e.g. logprobs_file) pointed into the work folder it was measured in
        text = text.replace(json.dumps(WORK)[1:-1], json.dumps(str(work))[1:-1])
        result = WorkerResult.model_validate_json(text)
    except (OSError, ValueError):
        return None
    for f in (root / "files").glob("*"):
        shutil.copy2(f, work / f.name)
    return result


def store(recipe: "Recipe", job: WorkerJob, work: Path, result: WorkerResult) -> None:
    if result.load_error or result.loading_problems.any():
        return
    root = cache_dir(recipe) / key(job, work)
    (root / "files").mkdir(parents=True, exist_ok=True)
    for f in _own_files(work):
        shutil.copy2(f, root / "files" / f.name)
    write_atomic(root / "result.json", result.model_dump_json().replace(json.dumps(str(work))[1:-1], json.dumps(WORK)[1:-1]))
