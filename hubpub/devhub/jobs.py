"""devhub's emulation of Hugging Face Jobs (``hubpub devhub --jobs`` / ``DevHub(..., jobs=True)``).

The endpoints huggingface_hub 2.4's ``run_job`` / ``run_uv_job`` / ``inspect_job`` / ``list_jobs`` /
``fetch_job_logs`` / ``cancel_job`` / ``rerun_job`` / ``list_jobs_hardware`` call, served from
local subprocesses:

- the job's ``command`` + ``arguments`` run as ONE local process group (``start_new_session``), in a
  scratch folder ``<data>/jobs/<id>/work`` that is also its ``HOME`` and ``TMPDIR``; stdin is empty;
- the Docker image (or Space) is recorded and ignored: ``python`` / ``python3`` run the interpreter
  devhub runs on (``sys.executable``), and ``uv run [--with X ...] target args`` runs ``target``
  with it (dependencies are NOT installed: the local environment is what the job gets);
- the environment is small and explicit: PATH (shims first, then ``sys.executable``'s folder, then
  devhub's PATH), a few locale / Python variables, HF_ENDPOINT = this devhub, JOB_ID, then the
  job's ``environment``, then its ``secrets``. devhub's own variables (HF_TOKEN, ...) are not passed;
- secrets reach the process only: they are never stored on disk, never returned by inspect / list
  (only their names, with null values), and their values are masked as ``***`` in the logs;
- stdout and stderr, merged, are the logs, served as the Hub does: SSE events
  ``data: {"data": line, "timestamp": ...}`` after a ``===== Job started at ... =====`` line;
- stages: RUNNING, then COMPLETED (exit 0), ERROR ("Job failed with exit code: N", a signal, a
  command that cannot start, the timeout: "Job timed out after N seconds") or CANCELED (cancel
  sends SIGTERM to the group, SIGKILL 3 s later); when the main process ends, whatever it left in
  its group is killed, as when a container stops. A devhub restart marks running jobs ERROR.

Not emulated: volumes, exposed ports, ssh, network groups, scheduled jobs, metrics, retries
(``attempts`` is recorded), hardware (every flavor runs on this machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from .checks import StoreError, field, short

TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
DISABLED = "jobs are disabled; start devhub with --jobs (DevHub(..., jobs=True)) to run jobs as local processes"
FLAVORS = ("cpu-basic", "cpu-upgrade", "cpu-performance", "cpu-xl", "t4-small", "t4-medium", "l4x1", "l4x4",
           "l40sx1", "l40sx4", "l40sx8", "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large",
           "a100x4", "a100x8", "h200", "h200x2", "h200x4", "h200x8", "rtx-pro-6000", "rtx-pro-6000x2",
           "rtx-pro-6000x4", "rtx-pro-6000x8")
INHERITED = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH",
             "CUDA_VISIBLE_DEVICES", "SYSTEMROOT")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_LABEL = re.compile(r"[A-Za-z0-9_.\-]{1,100}")
_JOB_ID = re.compile(r"[0-9a-f]{24}")
MAX_LOG_LINE = 64 * 1024
MAX_LOG_BYTES = 16 * 1024 * 1024
KILL_GRACE_S = 3.0
KEEPALIVE_S = 15.0

UV_SHIM = '''\
"""devhub's `uv` stand-in: `uv run [options] target args` runs target with this interpreter."""
import os, sys

args = sys.argv[1:]
if not args or args[0] != "run":
    sys.exit("devhub jobs: only `uv run ...` is emulated (with the local Python; nothing is installed)")
args = args[1:]
WITH_VALUE = {"--with", "--python", "-p", "--with-requirements", "--with-editable", "--index", "--index-url",
              "--extra-index-url", "--find-links", "-f", "--env-file", "--directory", "--project"}
while args and args[0].startswith("-"):
    option = args.pop(0)
    if option == "--":
        break
    name, _, value = option.partition("=")
    if name in WITH_VALUE and not value and args:
        value = args.pop(0)
    if name in ("--with", "--with-requirements", "--with-editable"):
        print(f"devhub jobs: uv {name} {value} ignored: the job uses the local environment", file=sys.stderr)
if not args:
    sys.exit("devhub jobs: `uv run` needs a script or a command")
target, rest = args[0], args[1:]
if target.startswith(("http://", "https://")):
    sys.exit(f"devhub jobs: cannot fetch {target}: devhub runs offline (loopback only); pass a local command")
if target.endswith(".py") or os.path.isfile(target) or target in ("python", "python3"):
    argv = [sys.executable, *rest] if target in ("python", "python3") else [sys.executable, target, *rest]
    os.execv(sys.executable, argv)
os.execvp(target, [target, *rest])
'''


def _now() -> float:
    return time.time()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _user_id(name: str) -> str:
    return hashlib.sha1(f"devhub-user:{name}".encode()).hexdigest()[:24]


class Job:
    def __init__(self, record: dict[str, Any], secrets_: dict[str, str] | None = None):
        self.record = record  # what job.json holds: never a secret value
        self.secrets = dict(secrets_ or {})
        self.events: list[dict[str, str]] | None = [] if secrets_ is not None else None  # None: on disk only
        self.cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self.canceled = False
        self.timed_out = False
        self.done = record["status"]["stage"] in TERMINAL
        self.log_bytes = 0

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def owner(self) -> str:
        return self.record["owner"]


class JobManager:
    """Runs and remembers jobs under ``<data>/jobs``; every public method may raise StoreError."""

    def __init__(self, root: Path, *, enabled: bool, endpoint: Any, default_timeout: int = 1800,
                 max_running: int = 4):
        self.enabled = enabled
        self.root = Path(root)
        self.endpoint = endpoint  # a callable: the server's URL is known once it listens
        self.default_timeout = default_timeout
        self.max_running = max_running
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.stopped = False
        if not enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.bin = self.root / ".bin"
        self._write_shims()
        for path in sorted(self.root.glob("*/job.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or not _JOB_ID.fullmatch(str(record.get("id"))):
                continue
            job = Job(record)
            if not job.done:  # it ran under a devhub that is gone
                record["status"] = {"stage": "ERROR", "message": "devhub stopped while the job was running"}
                record["finishedAt"] = _iso(_now())
                job.done = True
                self._save(job)
            self.jobs[job.id] = job

    # -- setup ---------------------------------------------------------------------------
    def _write_shims(self) -> None:
        self.bin.mkdir(parents=True, exist_ok=True)
        python = shlex.quote(sys.executable)
        # shell wrappers, not symlinks: a virtualenv's python finds its pyvenv.cfg only by its own path
        for name in ("python", "python3"):
            self._write_exec(self.bin / name, f'#!/bin/sh\nexec {python} "$@"\n')
        self._write_exec(self.bin / "uv.py", UV_SHIM)
        self._write_exec(self.bin / "uv", f'#!/bin/sh\nexec {python} {shlex.quote(str(self.bin / "uv.py"))} "$@"\n')

    @staticmethod
    def _write_exec(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, path)

    def _check(self) -> None:
        if not self.enabled:
            raise StoreError(404, DISABLED)

    def _dir(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):
            raise StoreError(404, f"Job {short(job_id)} not found")
        return self.root / job_id

    def _save(self, job: Job) -> None:
        folder = self._dir(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".job.json.tmp"
        tmp.write_text(json.dumps(job.record))
        os.replace(tmp, folder / "job.json")

    # -- the API -------------------------------------------------------------------------
    def hardware(self) -> list[dict[str, Any]]:
        self._check()
        return [{"name": name, "prettyName": f"{name} (devhub: runs on this machine)", "cpu": "local", "ram": "local",
                 "ephemeralStorage": "local", "accelerator": None, "unitCostMicroUSD": 0, "unitCostUSD": 0.0,
                 "unitLabel": "minute"} for name in FLAVORS]

    def create(self, owner: str, spec: Any) -> dict[str, Any]:
        self._check()
        record, job_secrets = self._parse_spec(owner, spec)
        with self.lock:
            running = sum(1 for j in self.jobs.values() if not j.done)
            if running >= self.max_running:
                raise StoreError(429, f"{running} jobs are running already (devhub runs at most {self.max_running} at once); wait or cancel one")
            job = Job(record, job_secrets)
            self.jobs[job.id] = job
        self._start(job)
        return self.info(job)

    def duplicate(self, owner: str, job_id: str) -> dict[str, Any]:
        old = self.get(owner, job_id)
        if old.record["secretNames"] and not old.secrets:
            raise StoreError(409, f"job {job_id} had secrets, which devhub keeps in memory only; run it again with them")
        spec = {key: old.record.get(key) for key in ("dockerImage", "spaceId", "command", "arguments", "environment",
                                                     "flavor", "timeoutSeconds", "labels", "attempts")}
        spec["secrets"] = dict(old.secrets)
        return self.create(owner, {k: v for k, v in spec.items() if v is not None})

    def get(self, owner: str, job_id: str) -> Job:
        self._check()
        self._dir(job_id)
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner:
            raise StoreError(404, f"Job {job_id} not found")
        return job

    def list(self, owner: str, stages: list[str], labels: list[str]) -> list[dict[str, Any]]:
        self._check()
        wanted = {s.upper() for s in stages}
        pairs = [label.partition("=") for label in labels]
        out = []
        for job in sorted(self.jobs.values(), key=lambda j: j.record["createdAt"], reverse=True):
            if job.owner != owner or (wanted and job.record["status"]["stage"] not in wanted):
                continue
            if any((job.record.get("labels") or {}).get(k) != v for k, _, v in pairs):
                continue
            out.append(self.info(job))
        return out

    def cancel(self, owner: str, job_id: str) -> dict[str, Any]:
        job = self.get(owner, job_id)
        with job.cond:
            if job.done:
                return self.info(job)
            job.canceled = True
        self._kill(job)
        return self.info(job)

    def info(self, job: Job) -> dict[str, Any]:
        r = job.record
        started, finished = r.get("startedAt"), r.get("finishedAt")
        info: dict[str, Any] = {
            "id": r["id"], "createdAt": r["createdAt"], "startedAt": started, "finishedAt": finished,
            "dockerImage": r.get("dockerImage"), "spaceId": r.get("spaceId"), "command": r["command"],
            "arguments": r["arguments"], "environment": r["environment"],
            "secrets": {name: None for name in r["secretNames"]},  # names only, never a value
            "flavor": r["flavor"], "labels": r.get("labels"), "status": dict(r["status"]),
            "owner": {"id": _user_id(r["owner"]), "name": r["owner"], "type": "user"},
            "initiator": {"type": "user", "id": _user_id(r["owner"]), "name": r["owner"]},
            "retry": max(int(r.get("attempts") or 1) - 1, 0), "timeoutSeconds": r["timeoutSeconds"],
            "durations": self._durations(r),
        }
        return info

    @staticmethod
    def _durations(r: dict[str, Any]) -> dict[str, int | None]:
        def secs(a: float | None, b: float | None) -> int | None:
            return None if a is None or b is None else int(b - a)

        end = r.get("_finished") or _now()
        return {"schedulingSecs": secs(r["_created"], r.get("_started")),
                "runningSecs": secs(r.get("_started"), end if r.get("_started") else None),
                "totalSecs": secs(r["_created"], end)}

    # -- spec ----------------------------------------------------------------------------
    def _parse_spec(self, owner: str, spec: Any) -> tuple[dict[str, Any], dict[str, str]]:
        if not isinstance(spec, dict):
            raise StoreError(400, "job spec: expected a JSON object")
        where = "job spec"
        for key, what in (("volumes", "volumes"), ("ssh", "ssh"), ("network", "network groups"),
                          ("expose", "exposed ports"), ("schedule", "schedules")):
            if spec.get(key):
                raise StoreError(400, f"{where}: devhub does not emulate {what}; run the job without {key!r}")
        image = field(spec, "dockerImage", str, where=where)
        space = field(spec, "spaceId", str, where=where)
        if not image and not space:
            raise StoreError(400, f"{where}: missing 'dockerImage' (or 'spaceId')")
        command = field(spec, "command", list, required=True, where=where)
        arguments = field(spec, "arguments", list, default=[], where=where)
        argv = [*command, *arguments]
        if not command or not all(isinstance(a, str) and "\0" not in a and len(a) <= 100_000 for a in argv) or len(argv) > 1000:
            raise StoreError(400, f"{where}: 'command' must be a non-empty list of strings (no NUL), with 'arguments'")
        environment = self._env_map(spec, "environment", where)
        job_secrets = self._env_map(spec, "secrets", where)
        flavor = field(spec, "flavor", str, default="cpu-basic", where=where)
        if flavor not in FLAVORS:
            raise StoreError(400, f"{where}: unknown flavor {short(flavor)}; devhub knows {', '.join(FLAVORS[:4])}, ...")
        timeout = field(spec, "timeoutSeconds", int, default=self.default_timeout, where=where)
        if timeout <= 0 or timeout > 7 * 24 * 3600:
            raise StoreError(400, f"{where}: 'timeoutSeconds' must be between 1 and {7 * 24 * 3600}")
        attempts = field(spec, "attempts", int, default=1, where=where)
        if attempts < 1:
            raise StoreError(400, f"{where}: 'attempts' must be >= 1")
        labels = field(spec, "labels", dict, where=where)
        if labels is not None and not all(isinstance(v, str) and _LABEL.fullmatch(k) and len(v) <= 100 for k, v in labels.items()):
            raise StoreError(400, f"{where}: labels must be short strings of letters, digits, '.', '-' or '_'")
        created = _now()
        record = {"id": secrets.token_hex(12), "owner": owner, "createdAt": _iso(created), "startedAt": None,
                  "finishedAt": None, "dockerImage": image, "spaceId": space, "command": command,
                  "arguments": arguments, "environment": environment, "secretNames": sorted(job_secrets),
                  "flavor": flavor, "labels": labels, "timeoutSeconds": timeout, "attempts": attempts,
                  "status": {"stage": "SCHEDULING", "message": None}, "_created": created}
        return record, job_secrets

    @staticmethod
    def _env_map(spec: dict[str, Any], key: str, where: str) -> dict[str, str]:
        value = field(spec, key, dict, default={}, where=where)
        out = {}
        for name, item in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise StoreError(400, f"{where}: {key} name {short(name)} is not a valid environment variable name")
            if item is None:
                continue
            if isinstance(item, (dict, list)) or "\0" in str(item):
                raise StoreError(400, f"{where}: {key}[{name!r}] must be a string")
            out[name] = item if isinstance(item, str) else json.dumps(item)
        return out

    # -- running -------------------------------------------------------------------------
    def _environment(self, job: Job, work: Path) -> dict[str, str]:
        r = job.record
        env = {k: os.environ[k] for k in INHERITED if k in os.environ}
        base_path = os.pathsep.join([str(self.bin), os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
        env.update({"PATH": base_path, "HOME": str(work), "TMPDIR": str(work / "tmp"), "PYTHONUNBUFFERED": "1",
                    "HF_ENDPOINT": str(self.endpoint()), "JOB_ID": job.id, "HF_HUB_DISABLE_XET": "1"})
        env.setdefault("LANG", "C.UTF-8")
        env.update(r["environment"])
        if "PATH" in r["environment"]:  # keep `python` / `uv` the local ones
            env["PATH"] = os.pathsep.join([str(self.bin), r["environment"]["PATH"]])
        env.update(job.secrets)
        return env

    def _start(self, job: Job) -> None:
        work = self._dir(job.id) / "work"
        (work / "tmp").mkdir(parents=True, exist_ok=True)
        now = _now()
        job.record.update({"startedAt": _iso(now), "_started": now, "status": {"stage": "RUNNING", "message": None}})
        self._event(job, f"===== Job started at {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} =====")
        argv = [*job.record["command"], *job.record["arguments"]]
        try:
            job.proc = subprocess.Popen(argv, cwd=work, env=self._environment(job, work), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._event(job, f"devhub: cannot start {argv[0]!r}: {exc.strerror or exc}")
            self._finish(job, "ERROR", f"cannot start {argv[0]!r}: {exc.strerror or exc}")
            return
        self._save(job)
        reader = threading.Thread(target=self._read_logs, args=(job,), name=f"devhub-job-{job.id}-logs", daemon=True)
        reader.start()
        threading.Thread(target=self._wait, args=(job, reader), name=f"devhub-job-{job.id}", daemon=True).start()

    def _read_logs(self, job: Job) -> None:
        assert job.proc is not None and job.proc.stdout is not None
        with job.proc.stdout as out:
            while True:
                line = out.readline(MAX_LOG_LINE)
                if not line:
                    return
                self._event(job, line.decode("utf-8", "replace").rstrip("\r\n"))

    def _wait(self, job: Job, reader: threading.Thread) -> None:
        assert job.proc is not None
        try:
            code = job.proc.wait(timeout=job.record["timeoutSeconds"])
        except subprocess.TimeoutExpired:
            job.timed_out = True
            self._kill(job, wait=True)
            code = job.proc.wait()
        self._signal(job, signal.SIGKILL)  # what the main process left behind dies with the "container"
        reader.join(timeout=10)
        if job.canceled:
            self._finish(job, "CANCELED", "Job canceled")
        elif job.timed_out:
            self._finish(job, "ERROR", f"Job timed out after {job.record['timeoutSeconds']} seconds")
        elif code == 0:
            self._finish(job, "COMPLETED", None)
        elif code < 0:
            self._finish(job, "ERROR", f"Job killed by signal {-code} ({signal.Signals(-code).name})"
                         if -code in signal.valid_signals() else f"Job killed by signal {-code}")
        else:
            self._finish(job, "ERROR", f"Job failed with exit code: {code}")

    def _finish(self, job: Job, stage: str, message: str | None) -> None:
        now = _now()
        with job.cond:
            job.record.update({"status": {"stage": stage, "message": message}, "finishedAt": _iso(now), "_finished": now})
            self._save(job)
            job.done = True
            job.cond.notify_all()

    @staticmethod
    def _signal(job: Job, sig: int) -> None:
        if job.proc is None:
            return
        try:
            os.killpg(job.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self, job: Job, *, wait: bool = False) -> None:
        """SIGTERM to the job's process group, SIGKILL after a grace period."""
        self._signal(job, signal.SIGTERM)

        def later() -> None:
            assert job.proc is not None
            try:
                job.proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self._signal(job, signal.SIGKILL)

        if wait:
            later()
        else:
            threading.Thread(target=later, name=f"devhub-job-{job.id}-kill", daemon=True).start()

    def _event(self, job: Job, line: str) -> None:
        for value in job.secrets.values():
            if len(value) >= 3:
                line = line.replace(value, "***")
        event = {"data": line, "timestamp": _iso(_now())}
        encoded = json.dumps(event)
        with job.cond:
            if job.log_bytes > MAX_LOG_BYTES:
                return
            job.log_bytes += len(encoded)
            if job.log_bytes > MAX_LOG_BYTES:
                event = {"data": f"devhub: log truncated at {MAX_LOG_BYTES} bytes", "timestamp": event["timestamp"]}
                encoded = json.dumps(event)
            assert job.events is not None
            job.events.append(event)
            with open(self._dir(job.id) / "logs.jsonl", "a", encoding="utf-8") as fh:
                fh.write(encoded + "\n")
            job.cond.notify_all()

    def _stored_events(self, job: Job) -> list[dict[str, str]]:
        path = self._dir(job.id) / "logs.jsonl"
        events = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def stream(self, job: Job, tail: int | None) -> Iterator[bytes]:
        """The job's log as SSE lines, replayed then followed until the job ends."""
        if job.events is None:  # a job from before a restart: finished, its log is on disk
            events = self._stored_events(job)
            for event in events[-tail:] if tail else ([] if tail == 0 else events):
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            return
        with job.cond:
            sent = max(len(job.events) - tail, 0) if tail is not None else 0
        while True:
            with job.cond:
                if sent >= len(job.events) and not job.done and not self.stopped:
                    job.cond.wait(KEEPALIVE_S)
                batch = job.events[sent:]
                sent += len(batch)
                finished = (job.done or self.stopped) and sent >= len(job.events)
            if batch:
                yield b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in batch)
            elif not finished:
                yield b": keep-alive\n\n"
            if finished:
                return

    def shutdown(self) -> None:
        """devhub stops: kill every running job (their logs streams end)."""
        self.stopped = True
        for job in list(self.jobs.values()):
            if not job.done:
                job.canceled = True
                self._signal(job, signal.SIGKILL)
            with job.cond:
                job.cond.notify_all()
