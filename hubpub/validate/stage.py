"""validate(): prove the quantized checkpoint loads and works, measure it against the base, gate.

Base and quantized each run in a fresh worker process (runner.py, protocol.py), then, with
[validate] latency = "interleaved" (the default), one more process times both alternating
(``time_interleaved``). This module
prepares their jobs from the recipe (every eval kind's ``prepare`` checks the paths it reads
first, so bad input fails before any model is loaded), judges the outputs, lets each eval kind
score base vs quantized, checks the gates (relative to the base by default), writes
hubpub_metrics.json atomically and reports progress through events. It never prints.
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..artifacts import ASSETS_DIR, MANIFEST, METRICS, EvalResult, GateResult, Manifest, Metrics, ModelMetrics, ModeResult, Sample
from ..errors import ValidateError
from ..events import EventSink, Notice, StepFinished, StepProgress, StepStarted, emit, step
from ..recipe import Mode, Recipe
from .evals import PrepareContext, ScoreContext, eval_kinds, gate_specs
from .grounding import make_scene
from .modes import check_output, describe_expect, mode_job, modes_for
from .protocol import EvalJob, ModeJob, Progress, TimingJob, TimingResult, WorkerJob, WorkerResult
from .runner import run_worker
from . import base_cache

ROLES = ("quantized", "base")  # quantized first: a broken checkpoint fails before the base is run
STAGE = "validate"


@dataclass
class ValidateResult:
    metrics: Metrics
    metrics_path: Path
    passed: bool
    output_dir: Path
    base_dir: Path
    assets: list[Path] = field(default_factory=list)


def weight_bytes(folder: Path) -> int:
    from ..loading import weight_bytes as on_disk  # safetensors shards, or the .gguf of a GGUF release

    return on_disk(folder)


def base_folder(recipe: Recipe) -> Path:
    """The BF16 base model folder (hubpub.source materializes Hub / GGUF / package sources)."""
    from ..source import materialize_base

    return Path(materialize_base(recipe)).resolve()


def checked_output(recipe: Recipe, output_dir: Path | str | None) -> tuple[Path, Manifest]:
    out = (Path(output_dir) if output_dir else recipe.output_path).resolve()  # workers run in another folder
    if not (out / MANIFEST).is_file():
        raise ValidateError(f"{out} is not a hubpub output (no {MANIFEST}); run `hubpub quantize {recipe.path}` first")
    try:
        return out, Manifest.read(out / MANIFEST)
    except ValueError as exc:
        raise ValidateError(f"{out / MANIFEST}: unreadable manifest ({str(exc).splitlines()[0]}); re-run `hubpub quantize {recipe.path} --force`") from None


# ----------------------------------------------------------------------------- job building
@dataclass
class Plan:
    modes: list[Mode]
    mode_jobs: list[ModeJob]
    eval_jobs: list[EvalJob]


def plan(recipe: Recipe, task: str, work: Path) -> Plan:
    """Everything the workers will run; raises ValidateError for any bad input first."""
    modes = modes_for(recipe, task)
    mode_jobs = [mode_job(recipe, i, m) for i, m in enumerate(modes)]
    eval_jobs = []
    for i, entry in enumerate(recipe.evals):
        kind = eval_kinds.get(entry.kind)
        ctx = PrepareContext(recipe=recipe, index=i, task=task, modes=mode_jobs, work=work, all_entries=list(recipe.evals))
        eval_jobs.append(EvalJob(index=i, kind=entry.kind, label=entry.label, spec=kind.prepare(entry, ctx)))
    return Plan(modes, mode_jobs, eval_jobs)


# ----------------------------------------------------------------------------- judging
def judge_modes(plan_: Plan, role: str, result: WorkerResult) -> list[ModeResult]:
    out = []
    for mode, job, run in zip(plan_.modes, plan_.mode_jobs, result.modes):
        problem = run.error
        if problem is None:
            for text in run.outputs or [""]:
                problem = check_output(text, mode.expect)
                if problem:
                    break
        shown = run.outputs[0] if run.outputs else ""
        out.append(ModeResult(mode=job.name, model=role, ok=problem is None, expected=describe_expect(mode.expect), output=shown[:300],
                              latency_s=statistics.median(run.latencies_s) if run.latencies_s else None,
                              latencies_s=[round(v, 6) for v in run.latencies_s], problem=problem))
    return out


def latency_interval(runs: list[list[float]], seed: int = 0) -> tuple[float, float] | None:
    """Bootstrap interval of the median over modes of each mode's median call (runs resampled per mode)."""
    runs = [r for r in runs if r]
    if not runs or min(len(r) for r in runs) < 3:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(400):
        values.append(statistics.median(statistics.median(rng.choice(r) for _ in r) for r in runs))
    values.sort()
    return (values[int(0.025 * (len(values) - 1))], values[int(math.ceil(0.975 * (len(values) - 1)))])


def time_interleaved(jobs: dict[str, WorkerJob], results: dict[str, WorkerResult], work: Path, log: Path,
                     events: EventSink | None) -> str:
    """Time base and quantized in the same conditions; their latencies go into ``results``.

    Why a third process instead of timing inside each model's worker: the two workers run one after
    the other (minutes apart when evals run in between), so their latency difference would hold
    whatever the machine did meanwhile (other load, clocks, thermal state). Here both models are
    loaded in one process and each mode's timed calls alternate ABBA (worker.abba). The per-model
    workers then run each mode once, untimed (outputs, validity, and memory, which stays each
    model's own footprint measured alone), so the generate calls are as many as before; the extra
    cost is one more process start (torch + transformers imports: seconds) and loading both models
    once more; the price is that both must fit in memory together (else [validate] latency =
    "separate"). Not inside the quantized model's worker: there that model would be warm (its
    modes and evals ran) and the base cold, and running out of memory would lose the evals too;
    here both start alike, and a failure costs only the latency (a warning; everything else kept).
    The base's cached measurement (base_cache) has no latencies: the base is timed again beside
    each quantized model, which is the point. Returns how latency was measured, for the metrics.
    """
    timing_job = TimingJob(models=[jobs["base"].model_copy(update={"evals": []}), jobs["quantized"].model_copy(update={"evals": []})],
                           result_path=str(work / "result_timing.json"))
    fix = "if the two models do not fit in memory together, set [validate] latency = \"separate\""
    try:
        timed = _run(timing_job, work, log, events)
        failed = next((f"{m.role}: {m.load_error}" for m in timed.models if m.load_error), None)
    except ValidateError as exc:
        timed, failed = TimingResult(), str(exc)
    if failed is not None or len(timed.models) != len(jobs):
        emit(events, Notice(STAGE, f"interleaved timing failed ({failed}): no latency measured; {fix}", "warning"))
        return "failed"
    for model in timed.models:
        for mode, run, got in zip(jobs[model.role].modes, results[model.role].modes, model.modes):
            run.latencies_s, run.new_tokens = got.latencies_s, got.new_tokens
            if got.error and run.error is None:  # it ran in the model's own worker: validity stands, only its timing is missing
                emit(events, Notice(STAGE, f"{mode.name} ({model.role}): not timed, a timed call failed ({got.error})", "warning"))
    return "interleaved"


def model_metrics(folder: Path, result: WorkerResult, modes: list[ModeResult], timing: str = "separate") -> ModelMetrics:
    runs = [r for r in result.modes if r.latencies_s]
    seconds = sum(sum(r.latencies_s) for r in runs)
    memory = result.memory
    return ModelMetrics(
        weight_bytes=weight_bytes(folder),
        peak_memory_bytes=memory.peak_bytes if memory else None,
        resident_bytes=memory.resident_bytes if memory else None,
        memory_kind=memory.kind if memory else "peak_rss_above_baseline",
        load_s=result.load_s,
        latency_s=statistics.median(statistics.median(r.latencies_s) for r in runs) if runs else None,
        latency_interval=latency_interval([r.latencies_s for r in runs]),
        latency_runs=min((len(r.latencies_s) for r in runs), default=0),
        tokens_per_s=(sum(r.new_tokens for r in runs) / seconds) if seconds > 0 else None,
        validity=(sum(m.ok for m in modes) / len(modes)) if modes else None,
        quant_backend=result.quant_backend,
        latency_timing=timing,  # "interleaved" (base and quantized alternating in one process) | "separate" | "failed"
    )


def load_problem(role: str, folder: Path, result: WorkerResult) -> str | None:
    if result.load_error:
        return f"{folder}: the {role} model does not load: {result.load_error}"
    problems = result.loading_problems
    if not problems.any():
        return None
    parts = []
    for kind, keys in problems.model_dump().items():
        if not keys:
            continue
        shown = ", ".join(keys[:3]) + (f", ... ({len(keys) - 3} more)" if len(keys) > 3 else "")
        parts.append(f"{len(keys)} {kind.replace('_keys', '')} keys ({shown})")
    fix = "re-run `hubpub quantize` (check quantize.split and quantization_config.block_name_to_quantize)" if role == "quantized" else "check the base model files"
    return f"{folder}: the {role} checkpoint does not load cleanly: {'; '.join(parts)}; those weights would be random: {fix}"


def eval_key(recipe: Recipe, manifest: Manifest, job: EvalJob) -> str:
    """What an eval result depends on: the checkpoint (recipe_hash), the prepared job (its inputs,
    file contents included), where it ran and hubpub's version. Same key: the result is reused."""
    import hashlib

    digest = hashlib.sha256("\0".join((manifest.recipe_hash, __version__, recipe.validate.device, recipe.model.dtype, job.kind,
                                        job.spec.model_dump_json())).encode())
    for folder in recipe.evals[job.index].input_dirs():  # e.g. lm_eval's include_path: the task YAMLs and data in it
        root = recipe.resolve(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def reusable(out: Path, manifest: Manifest) -> tuple[dict[str, EvalResult], list[Sample]]:
    """Eval results of an earlier run on this checkpoint ({cache key: result}) and their samples."""
    try:
        previous = Metrics.read(out / METRICS)
    except (OSError, ValueError):
        return {}, []
    if previous.recipe_hash != manifest.recipe_hash:
        return {}, []
    return {e.details["cache_key"]: e for e in previous.evals if e.details.get("cache_key")}, previous.samples


def score_evals(recipe: Recipe, plan_: Plan, results: dict[str, WorkerResult], assets: Path, work: Path,
                cached: dict[int, EvalResult] | None = None, cached_samples: list[Sample] | None = None) -> tuple[list[EvalResult], list[Sample], list[str]]:
    """Each eval kind scores base vs quantized; returns (results, samples, errors)."""
    out, samples, errors = [], [], []
    several = sum(e.kind == "grounding" for e in recipe.evals) > 1
    for job in plan_.eval_jobs:
        entry = recipe.evals[job.index]
        kind = eval_kinds.get(job.kind)
        if cached and job.index in cached:  # measured before on this checkpoint with the same inputs
            out.append(cached[job.index])
            samples += [s for s in cached_samples or [] if s.mode == entry.label]
            continue
        got = {role: next(e for e in results[role].evals if e.index == job.index) for role in ROLES}
        failed = [f"{role}: {got[role].error}" for role in ROLES if got[role].error]
        if failed:
            errors.append(f"eval[{job.index}] ({entry.label}) failed on the {'; '.join(failed)}")
            out.append(EvalResult(name=entry.label, kind=entry.kind, notes=[f"did not run: {f}" for f in failed]))
            continue
        stem = f"{job.kind}_{job.index}" if several else job.kind
        ctx = ScoreContext(recipe=recipe, index=job.index, assets=assets, stem=stem, work=work, all_entries=list(recipe.evals),
                           seed=getattr(entry, "seed", 0))
        result = kind.score(entry, job.spec, {role: got[role].output for role in ROLES}, ctx)
        for sample in result.details.pop("samples", []):
            samples.append(Sample.model_validate(sample))
        if not result.display:
            result.display = dict(kind.metrics)
        out.append(result)
    return out, samples, errors


# ----------------------------------------------------------------------------- gates
def validity_gate(recipe: Recipe, modes: dict[str, list[ModeResult]]) -> GateResult | None:
    g = recipe.validate.gates
    if g.min_validity is None:
        return None
    base_ok = {m.mode for m in modes["base"] if m.ok}
    quant = modes["quantized"]
    if g.absolute_validity:
        counted = quant
        note = "every mode counted (absolute_validity = true)"
    else:
        counted = [m for m in quant if m.mode in base_ok]
        skipped = [m.mode for m in quant if m.mode not in base_ok]
        note = f"modes that pass on the base ({len(counted)} of {len(quant)})" + (
            f"; {', '.join(skipped)} fail on the base too (a base limitation, not counted)" if skipped else "")
    value = sum(m.ok for m in counted) / len(counted) if counted else None
    passed = value is None or value >= g.min_validity
    if value is None:
        note = "no mode passes on the base model: nothing to compare"
    return GateResult(name="min_validity", threshold=g.min_validity, value=value, passed=passed, vacuous=g.min_validity <= 0.0,
                      unit="%", note=note)


def check_gates(recipe: Recipe, modes: dict[str, list[ModeResult]], evals: list[EvalResult]) -> list[GateResult]:
    gates = []
    for ev in evals:  # row marks follow this recipe's limits, also on a result reused from an earlier run
        for row in ev.details.get("table", []) if isinstance(ev.details.get("table"), list) else []:
            if isinstance(row, dict) and "below" in row:
                row["below"] = []
    first = validity_gate(recipe, modes)
    if first is not None:
        gates.append(first)
    specs = gate_specs()
    for name, threshold in recipe.validate.gates.configured().items():
        for kind_name, spec in specs.get(name, []):
            found = next((e for e in evals if e.kind == kind_name and spec.metric in e.metrics), None)
            if found is not None:
                break
        else:
            found, spec = None, specs[name][0][1]
        value = None
        if found is not None:
            b, q = found.metrics[spec.metric].get("base"), found.metrics[spec.metric].get("quantized")
            if spec.value == "quantized":
                value = q
            elif b is not None and q is not None:
                value = {"relative_change": (q - b) / b if b else None, "drop": b - q, "recovery": q / b if b else None}[spec.value]
        violates = (lambda v: v > threshold) if spec.direction == "max" else (lambda v: v < threshold)
        passed = value is not None and not violates(value)
        vacuous = threshold >= spec.bounds[1] if spec.direction == "max" else threshold <= spec.bounds[0]
        note = f"from {found.name}" if found is not None else "not measured"
        failing: list[str] = []
        items = found.details.get("items", {}).get(spec.metric) if found is not None and spec.value == "quantized" else None
        if items:  # a per-item gate (lm_eval's min_recovery: every task): name the items past the limit
            failing = [i["label"] for i in items if violates(i["value"])]
            shown = lambda i: f"{i['label']} {_unit_text(spec.unit, i['value'])}"  # noqa: E731
            worst = (max if spec.direction == "max" else min)(items, key=lambda i: i["value"])
            note = (f"below the limit: {', '.join(shown(i) for i in items if i['label'] in failing)}" if failing
                    else f"every one of {len(items)} within the limit; worst {shown(worst)}") + f" (from {found.name})"
            for row in found.details.get("table", []):
                if isinstance(row, dict) and row.get("label") in failing:
                    row["below"] = [*row.get("below", []), name]
        gates.append(GateResult(name=name, threshold=threshold, value=value, passed=passed, vacuous=vacuous, unit=spec.unit, note=note,
                                failing=failing))
    return gates


def _unit_text(unit: str, value: float) -> str:
    from ..units import percent, signed_percent

    return percent(value) if unit == "%" else signed_percent(value) if unit == "relative" else f"{value:.4g}"


# ----------------------------------------------------------------------------- the stage
def llama_cpp_runtime(out: Path, mode_jobs: list[Any], events: EventSink | None) -> dict[str, dict[str, Any]]:
    """A GGUF release's modes run through llama.cpp itself when llama-cpp-python is installed (the card
    then says "tested with llama.cpp"); {} when it is not (the card says "not tested here")."""
    from ..quantize.formats.gguf import llama_cpp_version, run_llama_cpp_modes

    version = llama_cpp_version()
    files = sorted(out.glob("*.gguf"))
    if version is None or len(files) != 1:
        return {}
    with step(events, STAGE, "modes in llama.cpp"):
        ran = run_llama_cpp_modes(files[0], mode_jobs)
    problems = [f"{m['name']}: {m['error'] or 'empty output'}" for m in ran["modes"]
                if m.get("error") or not any(str(o).strip() for o in m.get("outputs") or [])]
    latencies = [m["latency_s"] for m in ran["modes"] if m.get("latency_s") is not None]
    return {"llama.cpp": {"version": version, "passed": not problems, "problem": "; ".join(problems) or None,
                          "latency_s": statistics.median(latencies) if latencies else None}}


def validate(recipe: Recipe, *, output_dir: Path | str | None = None, progress: bool = True, events: EventSink | None = None) -> ValidateResult:
    """Load base and quantized in fresh processes, run modes and evals, gate, write metrics.

    ``progress`` is kept for callers of the old signature (the CLI renders ``events``).
    Raises ValidateError (with ``.metrics`` set when metrics were written) when something fails.
    """
    out, manifest = checked_output(recipe, output_dir)
    _check_remote_code(recipe, out)
    from ..check import mode_problems  # custom_generate calls vs the model's signatures: before any weight loads
    from ..recipe import problems_error

    if found := mode_problems(recipe, out):
        raise problems_error(found)
    base_dir = base_folder(recipe)
    work_root = recipe.work_path.resolve()
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="validate-", dir=work_root))
    try:
        plan_ = plan(recipe, manifest.task, work)
        keys = {job.index: eval_key(recipe, manifest, job) for job in plan_.eval_jobs}
        earlier, earlier_samples = reusable(out, manifest)
        reused = {i: earlier[k] for i, k in keys.items() if k in earlier}
        for i in reused:
            emit(events, Notice(STAGE, f"eval[{i}] ({recipe.evals[i].label}): reusing the result measured earlier on this checkpoint"))
        to_run = [job for job in plan_.eval_jobs if job.index not in reused]
        scene = make_scene(["square", "circle", "A"], 224, random.Random(0))  # for builtin:scene images
        scene.image.save(work / "scene.png")
        results: dict[str, WorkerResult] = {}
        jobs: dict[str, WorkerJob] = {}
        folders = {"base": base_dir, "quantized": out}
        interleaved = recipe.validate.latency == "interleaved"
        for role in ROLES:
            job = jobs[role] = WorkerJob(
                role=role, model_dir=str(folders[role]), task=manifest.task, trust_remote_code=recipe.model.trust_remote_code,
                dtype=recipe.model.dtype, device=recipe.validate.device, modes=plan_.mode_jobs,
                warmup_runs=recipe.validate.warmup_runs, latency_runs=recipe.validate.latency_runs,
                scene_image=str(work / "scene.png"), evals=to_run, result_path=str(work / f"result_{role}.json"),
                timed=not interleaved)
            cached = base_cache.lookup(recipe, job, work) if role == "base" else None  # measured once (hubpub.variants)
            if cached is not None:
                results[role] = cached
                emit(events, Notice(STAGE, "base model: reusing its measurement (same base files, modes and evals)"))
            else:
                results[role] = _run(job, work, work_root / f"validate-{role}.log", events)
                if role == "base":
                    base_cache.store(recipe, job, work, results[role])
            problem = load_problem(role, folders[role], results[role])
            if problem:
                _write_failed_load(recipe, out, manifest, role, problem, results[role])
                raise ValidateError(problem)
        timing = "separate"
        if interleaved:
            timing = time_interleaved(jobs, results, work, work_root / "validate-timing.log", events)
        modes = {role: judge_modes(plan_, role, results[role]) for role in ROLES}
        modelm = {role: model_metrics(folders[role], results[role], modes[role], timing) for role in ROLES}
        if manifest.format.startswith("gguf:"):
            modelm["quantized"].runtimes.update(llama_cpp_runtime(out, plan_.mode_jobs, events))
        evals_, eval_samples, eval_errors = score_evals(recipe, plan_, results, out / ASSETS_DIR, work, reused, earlier_samples)
        for job, result in zip(plan_.eval_jobs, evals_):
            if not any(n.startswith("did not run") for n in result.notes):
                result.details["cache_key"] = keys[job.index]
        samples = mode_samples(plan_, modes) + eval_samples
        gates = check_gates(recipe, modes, evals_)
        base_ok = {m.mode for m in modes["base"] if m.ok}
        limitations = [f"{m.mode}: {m.problem}" for m in modes["base"] if not m.ok]
        passed = all(g.passed for g in gates) and not eval_errors
        env = results["quantized"].environment
        metrics = Metrics(
            hubpub_version=__version__, recipe_hash=manifest.recipe_hash, passed=passed,
            environment=env.model_dump(exclude_none=True) if env else {}, base=modelm["base"], quantized=modelm["quantized"],
            modes=modes["quantized"] + modes["base"], evals=evals_, gates=gates, samples=samples, base_limitations=limitations,
        )
        metrics_path = out / METRICS
        metrics.write(metrics_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in limitations:
        emit(events, Notice(STAGE, f"base limitation (fails on the base model too, not a regression): {line}", "warning"))
    if not passed:
        broken = [f"{g.name} {_gate_value(g)} vs {g.threshold:g}" + (f" ({_regressions(modes, base_ok)})" if g.name == "min_validity" else
                                                                    f" ({g.note})" if getattr(g, "failing", None) else "")
                  for g in gates if not g.passed]
        what = "; ".join(x for x in (f"gate(s) violated: {', '.join(broken)}" if broken else "", "; ".join(eval_errors)) if x)
        error = ValidateError(f"validation failed: {what}; see the table above and {metrics_path}")
        error.metrics = metrics  # type: ignore[attr-defined]  (the CLI shows the tables)
        raise error
    return ValidateResult(metrics=metrics, metrics_path=metrics_path, passed=passed, output_dir=out, base_dir=base_dir,
                          assets=sorted((out / ASSETS_DIR).glob("*.png")) if any(e.images for e in evals_) else [])


def _gate_value(g: GateResult) -> str:
    return "not measured" if g.value is None else f"{g.value:.4g}"


def _regressions(modes: dict[str, list[ModeResult]], base_ok: set[str]) -> str:
    failed = [m.mode for m in modes["quantized"] if not m.ok and m.mode in base_ok]
    return f"fail on quantized, pass on base: {', '.join(failed)}" if failed else "modes fail on quantized"


def mode_samples(plan_: Plan, modes: dict[str, list[ModeResult]]) -> list[Sample]:
    """Every mode, side by side: its prompt text (first of a batch) and the first output of each model."""
    samples = []
    for job, b, q in zip(plan_.mode_jobs, modes["base"], modes["quantized"]):
        prompt = job.prompts[0] if job.prompts else job.text()
        if job.images:
            prompt = f"[{len(job.images)} image{'s' if len(job.images) > 1 else ''}] {prompt}"
        samples.append(Sample(mode=job.name, prompt=prompt, base=b.output, quantized=q.output))
    return samples


def _check_remote_code(recipe: Recipe, out: Path) -> None:
    config = out / "config.json"
    if not recipe.model.trust_remote_code and config.is_file() and "auto_map" in config.read_text(encoding="utf-8"):
        raise ValidateError(
            f"{config}: the model ships its own code (auto_map) and {recipe.path}: model.trust_remote_code is false;"
            " set model.trust_remote_code = true if you have reviewed that code"
        )


def _run(job: Any, work: Path, log: Path, events: EventSink | None) -> Any:
    """Run one worker (a WorkerJob, or the TimingJob of both models), turning its Progress lines
    into StepStarted / StepProgress / StepFinished."""
    import time

    who = job.role if isinstance(job, WorkerJob) else "base + quantized"

    current: dict[str, Any] = {"step": None, "start": 0.0}

    def finish() -> None:
        if current["step"] is not None:
            emit(events, StepFinished(STAGE, current["step"], time.perf_counter() - current["start"]))
            current["step"] = None

    def on_progress(p: Progress) -> None:
        name = f"{p.step} ({who})"
        if name != current["step"]:
            finish()
            current.update(step=name, start=time.perf_counter())
            emit(events, StepStarted(STAGE, name, p.total, "mode" if p.step in ("modes", "timing") else ""))
        emit(events, StepProgress(STAGE, name, p.done, p.total, p.item))

    current.update(step=f"load ({who})", start=time.perf_counter())
    emit(events, StepStarted(STAGE, current["step"], 1))
    try:
        return run_worker(job, work, log, on_progress)
    finally:
        finish()


def _write_failed_load(recipe: Recipe, out: Path, manifest: Manifest, role: str, problem: str, result: WorkerResult) -> None:
    """A load failure still leaves metrics saying passed=false, so no stale 'passed' survives."""
    metrics = Metrics(
        hubpub_version=__version__, recipe_hash=manifest.recipe_hash, passed=False,
        environment=result.environment.model_dump(exclude_none=True) if result.environment else {},
        quantized=ModelMetrics(weight_bytes=weight_bytes(out)),
        modes=[ModeResult(mode="load", model=role, ok=False, expected="no missing/unexpected/mismatched keys",
                          output="", problem=problem.split(": ", 1)[-1])],
    )
    metrics.write(out / METRICS)
