"""Run one model's job in a fresh ``python -m hubpub.validate.worker`` process.

The job and the result travel as JSON files; the worker's stdout carries progress lines, its
stderr (library chatter, warnings) goes to a log file that error messages point to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from ..errors import ValidateError
from .worker import PROGRESS

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the hubpub package


def run_worker(job: dict[str, Any], work_dir: Path, log_path: Path, on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``job`` in a fresh process and return its result dict. Raises ValidateError if it dies."""
    role = job["role"]
    job_path = work_dir / f"job_{role}.json"
    result_path = work_dir / f"result_{role}.json"
    result_path.unlink(missing_ok=True)
    job_path.write_text(json.dumps(dict(job, result=str(result_path))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
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
                on_progress(line[len(PROGRESS):].strip())
        code = proc.wait()
    if not result_path.exists():
        tail = [l for l in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if l.strip()]
        last = tail[-1].strip() if tail else "no output"
        raise ValidateError(f"the {role} model's worker process exited with code {code}: {last} (full log: {log_path})")
    return json.loads(result_path.read_text())
