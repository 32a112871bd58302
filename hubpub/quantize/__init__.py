"""The quantize stage: base model -> a loadable W4A16 release folder, built atomically.

``quantize(recipe)`` locates the base (hubpub.source), extracts the text decoder when
``[quantize.split]`` is set, runs the recipe's quantize backend (``method``, from the registry in
backends/) which exports in the recipe's format (formats/), writes the release checkpoint by
streaming tensors (kept ones copied from the base bit-for-bit, manifest.py accounts for each),
and moves the finished folder into ``recipe.output_path``. A run with the same recipe and source
reuses a finished output unless ``force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..artifacts import MANIFEST, RECIPE_COPY, Manifest, read_json, write_atomic
from ..errors import QuantizeError
from .._stage import make_callable
from ..events import EventSink, Notice, emit
from ..loading import task_of

if TYPE_CHECKING:
    from ..recipe import Recipe


@dataclass
class QuantizeResult:
    output_dir: Path
    manifest: Manifest
    reused: bool
    base_dir: Path | None  # None when the finished output was reused

    @property
    def ratio(self) -> float:
        return self.manifest.bytes_before / max(self.manifest.bytes_after, 1)


def recipe_hash(recipe: "Recipe", fingerprint: str) -> str:
    from ..calibration import input_digest

    settings = recipe.quantize.settings
    extra = "" if settings is None else json.dumps(settings.model_dump(mode="json"), sort_keys=True)
    inputs = input_digest(recipe)  # calibration files and the hook's code, by content
    return hashlib.sha256(f"{recipe.section_hash('model', 'quantize')}\n{fingerprint}{extra and chr(10) + extra}"
                          f"{inputs and chr(10) + inputs}".encode()).hexdigest()


def check_requirements(recipe: "Recipe") -> None:
    """What the format needs installed to be written and loaded back here (before heavy work)."""
    from .formats import formats

    q = recipe.quantize
    missing = formats.get(q.format).missing_requirement(bits=q.bits, sym=q.sym)
    if missing:
        raise QuantizeError(f"quantize.format: {missing}")


def quantize(recipe: "Recipe", *, force: bool = False, progress: bool = True, events: EventSink | None = None,
             strict: bool = False) -> QuantizeResult:
    """Quantize the recipe's base into ``recipe.output_path``; progress goes to ``events``.

    ``strict``: a quantized linear that no calibration data reaches is an error (raised before
    its block is tuned; a reused output whose manifest records one is refused too), not a warning.
    ``progress`` is kept for callers of the old signature and does nothing: renderers decide.
    """
    from ..source import locate_source, materialize

    started = time.perf_counter()
    out = recipe.output_path
    recover_swap(out, recipe.work_path)
    check_requirements(recipe)
    source = locate_source(recipe)
    wanted_hash = recipe_hash(recipe, source.fingerprint)
    previous = _previous_manifest(out)
    if previous is not None and previous.recipe_hash == wanted_hash and not force:
        unreached = (previous.calibration_coverage or {}).get("unreached") or []
        if strict and unreached:
            from ..calibration.coverage import unreached_notice

            raise QuantizeError(f"quantize: the finished output in {out} was made with {unreached_notice(unreached)}"
                                " (--strict)")
        return QuantizeResult(out, previous, reused=True, base_dir=None)
    from ..check import preflight

    # it will really run: every problem knowable from paths and config.json, before any weight loads
    preflight(recipe, stage="quantize", model=True)

    t = time.perf_counter()
    from ..events import capture_output

    with capture_output(events, "quantize"):  # the GGUF -> BF16 conversion's warnings and bars: --verbose shows them
        base_dir = materialize(recipe, source)
    timings = {"source": time.perf_counter() - t}
    work = recipe.work_path
    work.mkdir(parents=True, exist_ok=True)
    for stale in [*work.glob("build-*"), *work.glob("ar-*")]:  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    build = work / f"build-{os.getpid()}"
    build.mkdir()
    saved_ar = os.environ.get("AR_WORK_SPACE")
    ar_space = work / f"ar-{os.getpid()}"  # AutoRound litters the cwd otherwise; not inside the release
    os.environ.setdefault("AR_WORK_SPACE", str(ar_space))
    try:
        manifest = _build(recipe, source, base_dir, build, wanted_hash, timings, events, strict)
        manifest.timings["total"] = time.perf_counter() - started
        manifest.write(build / MANIFEST)
        _move_into_place(build, out, work)
    finally:
        if saved_ar is None:
            os.environ.pop("AR_WORK_SPACE", None)
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(ar_space, ignore_errors=True)
    return QuantizeResult(out, manifest, reused=False, base_dir=base_dir)


def _previous_manifest(out: Path) -> Manifest | None:
    if not out.exists():
        return None
    if not out.is_dir():
        raise QuantizeError(f"output_dir: {out} is a file; point output_dir at a folder")
    if not (out / MANIFEST).is_file():
        if any(out.iterdir()):
            raise QuantizeError(f"output_dir: {out} exists and is not a hubpub output (no {MANIFEST}); move it away or set another output_dir")
        return None
    try:
        return Manifest.read(out / MANIFEST)
    except ValueError:
        return None  # unreadable manifest of ours: rebuild


def _move_into_place(build: Path, out: Path, work: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    old = work / f"replaced-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    # a kill here leaves no output, only replaced-PID: recover_swap puts it back on the next start
    os.replace(build, out)
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(out: Path, work: Path) -> None:
    """Finish or undo a swap a killed run left half done (between the two renames above).

    No output but a replaced-* folder: the previous release is restored (newest first). An
    output and replaced-* folders: the swap completed, the leftovers are deleted.
    """
    if not work.is_dir():
        return
    leftovers = sorted(work.glob("replaced-*"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    if not leftovers:
        return
    complete = [p for p in leftovers if (p / MANIFEST).is_file()]
    if not out.exists() and complete:
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(complete[0], out)
        leftovers.remove(complete[0])
    for stale in leftovers:
        shutil.rmtree(stale, ignore_errors=True)


def _build(recipe: "Recipe", source: Any, base_dir: Path, build: Path, rhash: str, timings: dict[str, float],
           events: EventSink | None, strict: bool = False) -> Manifest:
    from ..events import step
    from .backends import BackendJob, backends
    from .backends._autoround import pick_device
    from .formats import formats
    from .manifest import account
    from .split import (check_extracted, copy_side_files, decoder_names, exclude_modules, identity_names, loaded_layout,
                        rename_block_path, sub_config, write_decoder)
    from .tensors import tensor_refs, write_streamed

    q = recipe.quantize
    backend = backends.get(q.method)
    config = read_json(base_dir / "config.json")
    refs = tensor_refs(base_dir)
    t = time.perf_counter()
    other_names: frozenset[str] = frozenset()
    if q.split:
        names = decoder_names(refs, q.split.prefix)
        decoder_config = sub_config(config, q.split.config_key, q.split.architecture, base_dir=base_dir,
                                    trust_remote_code=recipe.model.trust_remote_code)
        decoder_dir = build / ".decoder"
        with step(events, "quantize", "extract decoder"):
            write_decoder(base_dir, names, refs, decoder_config, decoder_dir)
            check_extracted(decoder_dir, names, recipe.model.trust_remote_code)
        timings["extract"] = time.perf_counter() - t
        other_names = frozenset(_module_names(n for n in refs if n not in names.to_decoder))
    else:
        names = identity_names(refs)
        decoder_dir = base_dir
    qdir = build / ".quantized"
    job = BackendJob(recipe=recipe, model_dir=decoder_dir, out_dir=qdir, export=formats.get(q.format), settings=q.settings,
                     device=pick_device(q.device), trust_remote_code=recipe.model.trust_remote_code,
                     to_full=names.to_full, events=events, strict=strict)
    job.other_names = other_names  # type: ignore[attr-defined]
    ran = backend.quantize(job)
    timings.update(ran.timings)

    single_file = bool(getattr(job.export, "single_file", False))
    if single_file:  # gguf:*: the release's weights are the one file the export wrote (no config.json, no safetensors)
        t = time.perf_counter()
        files, inventory = _ship_single_file(qdir, build, refs, recipe.model.display_name or str(config.get("model_type", "model")), job.export)
        block_path = None
        timings["repack"] = time.perf_counter() - t
        shutil.rmtree(qdir, ignore_errors=True)
    else:
        t = time.perf_counter()
        qrefs = tensor_refs(qdir)
        inventory = account(refs, names, qrefs, rescales=bool(getattr(backend, "rescales", False)))
        files = write_streamed(inventory.outputs, build)
        qconfig = read_json(qdir / "config.json")["quantization_config"]
        block_path = qconfig.get("block_name_to_quantize")
        if q.split:
            loaded, outside = loaded_layout(base_dir, {names.to_decoder[f]: r for f, r in refs.items() if f in names.to_decoder},
                                            int(decoder_config["num_hidden_layers"]), recipe.model.trust_remote_code)
            qconfig = exclude_modules(rename_block_path(qconfig, "model.layers", loaded), outside)
            block_path = loaded
            config["quantization_config"] = qconfig
            write_atomic(build / "config.json", json.dumps(config, indent=2) + "\n")
            if (qdir / "quantization_config.json").is_file():
                write_atomic(build / "quantization_config.json", json.dumps(rename_block_path(read_json(qdir / "quantization_config.json"), "model.layers", loaded), indent=2) + "\n")
            files += copy_side_files(base_dir, build, skip={"config.json"})
        else:
            files += copy_side_files(qdir, build, skip=set())
            files += copy_side_files(base_dir, build, skip={"config.json", "quantization_config.json"})
        timings["repack"] = time.perf_counter() - t
        shutil.rmtree(qdir, ignore_errors=True)
        shutil.rmtree(build / ".decoder", ignore_errors=True)
        if q.split:
            t = time.perf_counter()
            verify_loads(build, task_of(config, split=True), recipe.model.trust_remote_code)
            timings["verify"] = time.perf_counter() - t
    write_atomic(build / RECIPE_COPY, recipe.text)

    bytes_before = sum(r.nbytes for r in refs.values())
    bytes_after = sum(r.nbytes for r in inventory.outputs)
    arch = (config.get("architectures") or ["unknown"])[0]
    settings = q.settings.model_dump(mode="json") if q.settings is not None else {}
    emit(events, Notice("quantize", f"{inventory.linears_quantized} linears quantized with {backend.display_name}, {len(refs)} -> {len(inventory.outputs)} tensors"))
    return Manifest(
        hubpub_version=__version__, recipe_hash=rhash, source=source.as_dict(), model_name=recipe.model.display_name,
        model_type=str(config.get("model_type", "unknown")), architecture=arch,
        task=task_of(config, split=bool(q.split)),
        trust_remote_code=recipe.model.trust_remote_code, method=q.method, bits=q.bits, group_size=q.group_size,
        sym=q.sym, format=q.format, iters=ran.iters, nsamples=ran.nsamples_used,
        seqlen=q.seqlen, split_prefix=q.split.prefix if q.split else None, block_name_to_quantize=block_path,
        groups=inventory.groups, tensors_before=len(refs), tensors_after=len(inventory.outputs),
        linears_quantized=inventory.linears_quantized, bytes_before=bytes_before, bytes_after=bytes_after,
        timings={k: round(v, 3) for k, v in timings.items()}, versions={**_versions(), **backend.versions()}, device=ran.device,
        files=sorted({*files, RECIPE_COPY, MANIFEST} | (set() if single_file else {"config.json"}) | ({"quantization_config.json"} if (build / "quantization_config.json").exists() else set())),
        base_dir=str(base_dir), kept_bf16_linears=ran.kept_linears,
        algorithms=ran.algorithms, backend_settings=settings,
        plan=ran.plan.as_dict(names.to_full) if ran.plan is not None else None,
        calibration_coverage=ran.coverage or None,
        calibration_sources=list(getattr(ran, "calibration_sources", None) or []),
    )


def _ship_single_file(qdir: Path, build: Path, refs: dict[str, Any], model_name: str, export: Any) -> tuple[list[str], Any]:
    """Move the one file a single-file format (gguf:*) exported into the release, named as the format
    names it (``<model>-Q4_K_M.gguf``), and account for its tensors (manifest.account_gguf)."""
    from .manifest import account_gguf

    written = [p for p in qdir.iterdir() if p.is_file() and p.name.endswith(".gguf")]
    if len(written) != 1:
        raise QuantizeError(f"quantize: the {export.name!r} export wrote {len(written)} .gguf files (expected 1); report this as a hubpub bug")
    target = build / export.file_name(model_name)
    os.replace(written[0], target)
    return [target.name], account_gguf(refs, target)


def _module_names(tensor_names: Any) -> set[str]:
    """Every module prefix of some tensor names (for keep_bf16 patterns naming the vision tower)."""
    out: set[str] = set()
    for name in tensor_names:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def verify_loads(folder: Path, task: str, trust_remote_code: bool) -> None:
    """Load the release with transformers; any missing or unexpected key is a failure."""
    from ..loading import describe_problems, load_checkpoint

    _, problems = load_checkpoint(folder, task=task, trust_remote_code=trust_remote_code)
    if problems:
        raise QuantizeError(
            f"quantize.split: the repacked checkpoint loads with {describe_problems(problems)};"
            " check quantize.split.prefix / config_key"
        )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"hubpub": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers", "auto-round", "safetensors"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = "missing"
    return out


__all__ = ["QuantizeResult", "quantize", "recipe_hash", "recover_swap"]

make_callable(__name__, quantize)  # `hubpub.quantize(recipe)` works whichever name Python bound
