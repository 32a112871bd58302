"""Run one model's job in a fresh ``python -m hubpub.validate.worker`` process.

The job and the result travel as JSON files (protocol.WorkerJob / WorkerResult); the worker's
stdout carries Progress lines, its stderr (library chatter, warnings) goes to a log file that
error messages point to.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Union, overload

from ..errors import ValidateError
from .protocol import PROGRESS, Progress, TimingJob, TimingResult, WorkerJob, WorkerResult

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the hubpub package


@overload
def run_worker(job: WorkerJob, work_dir: Path, log_path: Path, on_progress: Callable[[Progress], None] | None = None) -> WorkerResult: ...
@overload
def run_worker(job: TimingJob, work_dir: Path, log_path: Path, on_progress: Callable[[Progress], None] | None = None) -> TimingResult: ...


def run_worker(job: Union[WorkerJob, TimingJob], work_dir: Path, log_path: Path,
               on_progress: Callable[[Progress], None] | None = None) -> Union[WorkerResult, TimingResult]:
    """Run ``job`` in a fresh process and return its result (a TimingJob: the interleaved timing
    phase, a TimingResult). Raises ValidateError if it dies."""
    name = job.role if isinstance(job, WorkerJob) else "timing"
    job_path = work_dir / f"job_{name}.json"
    result_path = Path(job.result_path)
    result_path.unlink(missing_ok=True)
    job_path.write_text(job.model_dump_json())
    env = dict(os.environ)
    # the parent's import path too: eval-kind plugins found through entry points there are found in the worker
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", ""), *sys.path) if p))
    env.setdefault("AR_WORK_SPACE", str(work_dir / "ar_work_space"))  # auto_round writes scratch files there
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hubpub.validate.worker", str(job_path)],
            stdout=subprocess.PIPE, stderr=log, text=True, cwd=work_dir, env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(PROGRESS) and on_progress:
                on_progress(Progress.model_validate_json(line[len(PROGRESS):]))
        code = proc.wait()
    if not result_path.exists():
        tail = [l for l in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
        last = tail[-1].strip() if tail else "no output"
        what = f"the {job.role} model's worker process" if isinstance(job, WorkerJob) else "the timing process (both models loaded together)"
        raise ValidateError(f"{what} exited with code {code}: {last} (full log: {log_path})")
    return (WorkerResult if isinstance(job, WorkerJob) else TimingResult).model_validate_json(result_path.read_text())
