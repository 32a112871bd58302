"""`hubpub reproduce REPO[@REVISION]`: re-run a published release from its own recipe and compare.

Every release hubpub publishes carries ``hubpub_recipe.toml`` (the recipe, verbatim),
``hubpub_manifest.json`` (what quantize did, with the library versions) and
``hubpub_metrics.json`` (what validate measured). ``reproduce`` downloads the three, re-runs
quantize + validate into a scratch folder with the public stage functions (it never pushes),
then compares:

- every published metric with the reproduced one: *exact* quantities (weight bytes, mode
  pass/fail, gate pass/fail, validity) must be equal; *measured* ones (perplexity, KL, top-1,
  similarity, gate values) must lie within a relative ``tolerance`` (default 1 %); *machine*
  ones (latency, tokens/s, memory, load time) are shown but not judged: they depend on the
  hardware.
- the sha256 of every published weight file (from the Hub's LFS metadata) with the rebuilt one.
  Byte-identical weights are required when they are expected: plain RTN, or AutoRound on the
  same device kind with the same library versions. Otherwise the difference is reported only.

The report goes to ``<out>/report.md`` and ``<out>/report.json``; ``<out>/release`` holds the
rebuilt release and ``<out>/inputs`` the recipe and the inputs downloaded from the repo.
"""

from __future__ import annotations

import inspect
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from .naming import WEIGHT_SUFFIXES
from . import __version__, artifacts
from .errors import HubpubError, ValidateError
from .events import EventSink, Notice, emit

Kind = Literal["exact", "measured", "machine"]
DEFAULT_TOLERANCE = 0.01
MACHINE = ("peak_memory_bytes", "load_s", "latency_s", "tokens_per_s")


class ReproduceError(HubpubError):
    """The release cannot be reproduced: not made by hubpub, inputs missing, or it does not run."""

    stage = "reproduce"


@dataclass
class MetricCheck:
    name: str
    kind: Kind
    published: Any
    reproduced: Any
    difference: float | None  # reproduced - published (numbers)
    relative: float | None  # difference / |published|
    within: bool | None  # None: not judged (machine-dependent)
    note: str = ""


@dataclass
class FileCheck:
    path: str
    published_sha256: str | None
    reproduced_sha256: str | None

    @property
    def identical(self) -> bool:
        return self.published_sha256 is not None and self.published_sha256 == self.reproduced_sha256


@dataclass
class ReproduceResult:
    repo_id: str
    revision: str
    commit: str | None
    out_dir: Path
    tolerance: float
    metrics: list[MetricCheck]
    files: list[FileCheck]
    weights_required: bool
    weights_rule: str
    version_warnings: list[str] = field(default_factory=list)
    validate_error: str | None = None

    @property
    def weights_identical(self) -> bool:
        return bool(self.files) and all(f.identical for f in self.files)

    @property
    def metrics_ok(self) -> bool:
        return all(m.within is not False for m in self.metrics)

    @property
    def reproduced(self) -> bool:
        return self.metrics_ok and (self.weights_identical or not self.weights_required)

    @property
    def report_md(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def report_json(self) -> Path:
        return self.out_dir / "report.json"

    def failures(self) -> list[str]:
        out = [f"{m.name}: published {_fmt(m.published)}, reproduced {_fmt(m.reproduced)}{(' (' + m.note + ')') if m.note else ''}"
               for m in self.metrics if m.within is False]
        if self.weights_required and not self.weights_identical:
            differ = [f.path for f in self.files if not f.identical]
            out.append(f"weights differ: {', '.join(differ) or 'no weight files'}")
        return out


# ----------------------------------------------------------------------------- comparing
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    return None


def flatten(metrics: artifacts.Metrics) -> dict[str, tuple[Kind, Any]]:
    """Every number or verdict in a metrics file, by a readable name."""
    flat: dict[str, tuple[Kind, Any]] = {"passed": ("exact", metrics.passed)}
    for role in ("base", "quantized"):
        model = getattr(metrics, role)
        if model is None:
            continue
        flat[f"{role} weight_bytes"] = ("exact", model.weight_bytes)
        if model.validity is not None:
            flat[f"{role} validity"] = ("exact", model.validity)
        for key in MACHINE:
            if getattr(model, key, None) is not None:
                flat[f"{role} {key}"] = ("machine", getattr(model, key))
    for mode in metrics.modes:
        flat[f"mode {mode.mode} ({mode.model}) ok"] = ("exact", mode.ok)
    for entry in metrics.evals:
        for metric, roles in entry.metrics.items():
            for role, value in roles.items():
                flat[f"eval {entry.name}: {metric} ({role})"] = ("measured", value)
    for gate in metrics.gates:
        flat[f"gate {gate.name} value"] = ("measured", gate.value)
        flat[f"gate {gate.name} passed"] = ("exact", gate.passed)
    return flat


def compare_metrics(published: artifacts.Metrics, reproduced: artifacts.Metrics | None, tolerance: float) -> list[MetricCheck]:
    pub = flatten(published)
    rep = flatten(reproduced) if reproduced is not None else {}
    checks = []
    for name, (kind, value) in pub.items():
        if name not in rep:
            checks.append(MetricCheck(name, kind, value, None, None, None, None if kind == "machine" else False,
                                      "missing in the reproduction"))
            continue
        got = rep[name][1]
        a, b = _num(value), _num(got)
        diff = (b - a) if a is not None and b is not None else None
        rel = diff / abs(a) if diff is not None and a not in (None, 0.0) else None
        if kind == "machine":
            checks.append(MetricCheck(name, kind, value, got, diff, rel, None, "not judged: depends on the hardware"))
        elif kind == "exact":
            checks.append(MetricCheck(name, kind, value, got, diff, rel, value == got))
        else:
            if a is None or b is None:
                ok = value is None and got is None
            else:
                ok = abs(b - a) <= tolerance * max(abs(a), 1e-12)
            checks.append(MetricCheck(name, kind, value, got, diff, rel, ok, f"tolerance ±{tolerance:.2%}"))
    for name, (kind, value) in rep.items():
        if name not in pub:
            checks.append(MetricCheck(name, kind, None, value, None, None, None, "not in the published metrics"))
    return checks


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


# ----------------------------------------------------------------------------- the repo
def parse_target(target: str) -> tuple[str, str | None]:
    repo, _, revision = target.partition("@")
    from .recipe import looks_like_repo_id

    if not (looks_like_repo_id(repo) and "/" in repo):
        raise ReproduceError(f"{target!r}: expected a Hub repo id like 'owner/name' or 'owner/name@v1' (a tag, branch or commit)")
    return repo, revision or None


def _download(api: Any, repo: str, name: str, commit: str, cache: str) -> Path | None:
    from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError

    try:
        return Path(api.hf_hub_download(repo, name, revision=commit, cache_dir=cache))
    except (RemoteEntryNotFoundError, EntryNotFoundError):
        return None


def _local_names(recipe: Any) -> list[tuple[str, str]]:
    """(field, relative path) of the local inputs validate and quantize read (the card's are not needed)."""
    names = []
    if recipe.quantize.method != "rtn":
        from .calibration import entries

        names += [(e.field(), e.spec.source) for e in entries(recipe) if e.kind not in ("builtin", "hf")]
    for i, entry in enumerate(recipe.evals):
        if entry.file and not entry.file.startswith("builtin:"):
            names.append((f"eval[{i}].file", entry.file))
    for i, mode in enumerate(recipe.validate.modes):
        names += [(f"validate.modes[{i}].images", img) for img in mode.images if "://" not in img]
    return names


def _call_stage(function: Any, recipe: Any, events: EventSink | None, **kwargs: Any) -> Any:
    params = inspect.signature(function).parameters
    if "events" in params:
        kwargs["events"] = events
    if "progress" in params:
        kwargs["progress"] = False
    return function(recipe, **kwargs)


def installed_versions() -> dict[str, str]:
    from .quantize import _versions

    return _versions()


@dataclass
class Published:
    """What a hubpub release publishes about itself, read from the repo at one commit."""

    repo_id: str
    revision: str | None  # as asked for (a tag, branch or commit), None = main
    commit: str | None
    recipe_text: str
    manifest: artifacts.Manifest
    metrics: artifacts.Metrics
    remote: dict[str, Any]  # path -> the repo tree entry (size, lfs sha256, blob id)

    @property
    def where(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def fetch_published(api: Any, target: str, cache: str) -> Published:
    """Download hubpub_recipe.toml / hubpub_manifest.json / hubpub_metrics.json of ``owner/name[@revision]``.

    Raises ReproduceError (one line) for a repo hubpub did not make or an incomplete release.
    Call inside ``hub_client`` / ``hub_errors``."""
    repo, revision = parse_target(target)
    where = f"{repo}@{revision}" if revision else repo
    info = api.repo_info(repo, revision=revision)
    commit = info.sha
    got = {name: _download(api, repo, name, commit, cache) for name in (artifacts.RECIPE_COPY, artifacts.MANIFEST, artifacts.METRICS)}
    missing = [name for name, path in got.items() if path is None]
    if artifacts.RECIPE_COPY in missing:
        raise ReproduceError(
            f"{where} has no {artifacts.RECIPE_COPY}: it was not published by hubpub, so there is no recipe to re-run"
            f" (hubpub releases carry {artifacts.RECIPE_COPY}, {artifacts.MANIFEST} and {artifacts.METRICS})"
        )
    if missing:
        raise ReproduceError(f"{where} has no {' or '.join(missing)}: the release is incomplete, so there is nothing to compare with")
    remote = {f.path: f for f in api.list_repo_tree(repo, revision=commit, recursive=True) if hasattr(f, "size")}
    return Published(
        repo_id=repo, revision=revision, commit=commit,
        recipe_text=got[artifacts.RECIPE_COPY].read_text(encoding="utf-8"),  # type: ignore[union-attr]
        manifest=artifacts.Manifest.read(got[artifacts.MANIFEST]),  # type: ignore[arg-type]
        metrics=artifacts.Metrics.read(got[artifacts.METRICS]),  # type: ignore[arg-type]
        remote=remote,
    )


def default_out(repo_id: str) -> Path:
    """``./reproduce-<name>``: where the report goes unless ``--out``."""
    return Path.cwd() / f"reproduce-{repo_id.split('/')[-1]}"


def needs_source(recipe: Any, where: str) -> None:
    """A recipe whose model.source is a local path not on this machine: the error that asks for --source."""
    kind = recipe.model.source_kind(recipe.base_dir)
    if kind in ("folder", "gguf") and not recipe.resolve(recipe.model.source).exists():
        raise ReproduceError(
            f"{where}: the recipe's model.source {recipe.model.source!r} is a local {'folder' if kind == 'folder' else 'file'}"
            " that is not on this machine; pass --source PATH (the base model it was made from)"
        )


def reproduce(
    target: str,
    *,
    endpoint: str | None = None,
    out: str | Path | None = None,
    source: str | Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    events: EventSink | None = None,
) -> ReproduceResult:
    """Re-run the release ``owner/name[@revision]`` from its own recipe; compare and write the report."""
    from .hub._client import hub_client, resolve_endpoint, resolve_token

    repo, revision = parse_target(target)
    endpoint = resolve_endpoint(endpoint)
    where = f"{repo}@{revision}" if revision else repo
    out_dir = Path(out) if out else default_out(repo)
    inputs = out_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)

    from .hub._client import hub_errors

    with hub_client(endpoint), hub_errors(endpoint, repo, revision=revision), tempfile.TemporaryDirectory(prefix="hubpub-repro-") as cache:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint, token=resolve_token(required=False))
        pub = fetch_published(api, target, cache)
        commit, manifest, published, remote = pub.commit, pub.manifest, pub.metrics, pub.remote

        recipe_path = inputs / f"{repo.split('/')[-1]}.toml"
        artifacts.write_atomic(recipe_path, pub.recipe_text)
        from .recipe import load_recipe

        recipe = load_recipe(recipe_path)
        for field_name, rel in _local_names(recipe):
            target_path = (inputs / rel).resolve()
            if not target_path.is_relative_to(inputs.resolve()):
                raise ReproduceError(f"{where}: the recipe's {field_name} {rel!r} points outside its folder, so the release cannot carry it; reproduce needs that file")
            if target_path.exists():
                continue
            posix = PurePosixPath(rel).as_posix()
            path = _download(api, repo, posix, commit, cache) if posix in remote else None
            if path is None:
                raise ReproduceError(f"{where}: the recipe's {field_name} {rel!r} is not in the release; reproduce needs that file to re-run it")
            target_path.parent.mkdir(parents=True, exist_ok=True)
            target_path.write_bytes(path.read_bytes())

    # the base model
    if source is not None:
        recipe.model.source = str(Path(source).resolve())
    else:
        needs_source(recipe, where)
    recipe.output_dir = str((out_dir / "release").resolve())

    # versions
    here = installed_versions()
    warnings = [f"{name}: published with {manifest.versions[name]}, installed {here.get(name, 'missing')}"
                for name in sorted(manifest.versions) if here.get(name) != manifest.versions[name]]
    for w in warnings:
        emit(events, Notice("reproduce", f"version differs: {w}", "warning"))

    # re-run (never push)
    from .quantize import quantize
    from .validate import validate

    emit(events, Notice("reproduce", f"re-running quantize + validate of {where} (commit {commit[:12] if commit else '?'}) into {recipe.output_path}"))
    _call_stage(quantize, recipe, events, force=True)
    validate_error = None
    try:
        _call_stage(validate, recipe, events)
    except ValidateError as exc:
        validate_error = str(exc).splitlines()[0]
    try:
        reproduced = artifacts.Metrics.read(recipe.output_path / artifacts.METRICS)
    except (FileNotFoundError, ValueError):
        reproduced = None

    # weights
    from .hub.plan import hash_file

    weight_names = sorted({*(n for n in manifest.files if n.endswith(WEIGHT_SUFFIXES)),
                           *(p for p in remote if p.endswith(WEIGHT_SUFFIXES))})
    files = []
    for name in weight_names:
        entry = remote.get(name)
        lfs = getattr(entry, "lfs", None)
        published_sha = getattr(lfs, "sha256", None) if lfs else None
        local = recipe.output_path / name
        local_sha, local_sha1 = (hash_file(local)[1:] if local.is_file() else (None, None))
        if published_sha is None and entry is not None and getattr(entry, "blob_id", None):
            # a small file stored in git: compare git blob ids, report the local sha256 when equal
            published_sha = local_sha if entry.blob_id == local_sha1 else f"git:{entry.blob_id}"
        files.append(FileCheck(name, published_sha, local_sha))

    device_here = (reproduced.environment.get("device") if reproduced else None) or "?"
    device_then = published.environment.get("device") or manifest.device
    same_kind = str(device_here).split(":")[0] == str(device_then).split(":")[0]
    if manifest.method == "rtn":
        required, rule = True, "required: round-to-nearest is deterministic"
    elif same_kind and not warnings:
        required, rule = True, f"required: {manifest.method} with the same seed, device kind ({device_here}) and library versions"
    else:
        required, rule = False, (f"reported only: {manifest.method} on {device_here} (published on {device_then})"
                                 + (" with other library versions" if warnings else "") + " need not give the same bytes")
    result = ReproduceResult(
        repo_id=repo, revision=revision or "main", commit=commit, out_dir=out_dir, tolerance=tolerance,
        metrics=compare_metrics(published, reproduced, tolerance), files=files, weights_required=required,
        weights_rule=rule, version_warnings=warnings, validate_error=validate_error,
    )
    write_report(result)
    return result


# ----------------------------------------------------------------------------- the report
def write_report(result: ReproduceResult) -> None:
    data = {
        "hubpub_version": __version__,
        "repo_id": result.repo_id,
        "revision": result.revision,
        "commit": result.commit,
        "reproduced": result.reproduced,
        "tolerance": result.tolerance,
        "metrics_within_tolerance": result.metrics_ok,
        "weights_identical": result.weights_identical,
        "weights_required": result.weights_required,
        "weights_rule": result.weights_rule,
        "version_warnings": result.version_warnings,
        "validate_error": result.validate_error,
        "metrics": [asdict(m) for m in result.metrics],
        "files": [dict(asdict(f), identical=f.identical) for f in result.files],
        "failures": result.failures(),
    }
    artifacts.write_atomic(result.report_json, json.dumps(data, indent=2, default=str) + "\n")

    verdict = "reproduces" if result.reproduced else "does NOT reproduce"
    lines = [
        f"# Reproduction of {result.repo_id}@{result.revision}",
        "",
        f"**{result.repo_id}@{result.revision} {verdict}** (commit `{result.commit}`; hubpub {__version__};"
        f" measured quantities within ±{result.tolerance:.2%}; weights: {result.weights_rule}).",
        "",
    ]
    if result.version_warnings:
        lines += ["Versions differ from the release:", "", *(f"- {w}" for w in result.version_warnings), ""]
    if result.validate_error:
        lines += [f"Validation of the rebuilt release failed: {result.validate_error}", ""]
    if result.failures():
        lines += ["What differs:", "", *(f"- {f}" for f in result.failures()), ""]
    lines += ["## Metrics", "", "| metric | kind | published | reproduced | difference | within |", "|---|---|---:|---:|---:|---|"]
    for m in result.metrics:
        diff = "-" if m.difference is None else f"{m.difference:+.6g}" + (f" ({m.relative:+.2%})" if m.relative is not None else "")
        within = {True: "yes", False: "**no**", None: "-"}[m.within]
        note = f" ({m.note})" if m.note and m.within is not True else ""
        lines.append(f"| {m.name} | {m.kind} | {_fmt(m.published)} | {_fmt(m.reproduced)} | {diff} | {within}{note} |")
    lines += ["", "## Weight files", "", "| file | published sha256 | reproduced sha256 | identical |", "|---|---|---|---|"]
    for f in result.files:
        lines.append(f"| {f.path} | `{f.published_sha256}` | `{f.reproduced_sha256}` | {'yes' if f.identical else '**no**'} |")
    lines.append("")
    artifacts.write_atomic(result.report_md, "\n".join(lines))


def summary(data: dict[str, Any], report_md: Path) -> tuple[list[str], str | None]:
    """(the lines the CLI prints about a report.json's content, the one-line failure or None)."""
    metrics = data.get("metrics") or []
    judged = [m for m in metrics if m.get("within") is not None]
    files = data.get("files") or []
    lines = [
        f"metrics: {sum(bool(m['within']) for m in judged)}/{len(judged)} within tolerance"
        f" ({len(metrics) - len(judged)} machine-dependent, not judged)",
        f"weights: {sum(bool(f.get('identical')) for f in files)}/{len(files)} files byte-identical ({data.get('weights_rule')})",
        f"report: {report_md}",
    ]
    where = f"{data.get('repo_id')}@{data.get('revision')}"
    if data.get("reproduced"):
        return lines, None
    failures = data.get("failures") or []
    return lines, (f"{where} does not reproduce: {'; '.join(failures[:3])}{' ...' if len(failures) > 3 else ''}"
                   f" (see {report_md})")


__all__ = ["Published", "ReproduceError", "ReproduceResult", "fetch_published", "reproduce", "summary"]
