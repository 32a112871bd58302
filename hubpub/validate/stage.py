"""validate(): prove the quantized checkpoint loads and works, measure it against the base, gate.

Base and quantized each run in a fresh worker process (runner.py). This module prepares their
jobs from the recipe (checking every path the recipe names first, so bad input fails before
any model is loaded), judges the outputs, computes comparisons and gates, writes
hubpub_metrics.json atomically and prints the report.
"""

from __future__ import annotations

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
from ..recipe import Mode, Recipe
from . import evals as ev
from .grounding import make_scene
from .modes import check_output, describe_expect, mode_job, modes_for
from .report import print_report
from .runner import run_worker

GENERIC_GROUNDING_PROMPT = "Locate {target} in the image. Answer as <box>x1,y1,x2,y2</box> on a 0-1000 scale."
ROLES = ("quantized", "base")  # quantized first: a broken checkpoint fails before the base is run


@dataclass
class ValidateResult:
    metrics: Metrics
    metrics_path: Path
    passed: bool
    output_dir: Path
    base_dir: Path
    assets: list[Path] = field(default_factory=list)


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def base_folder(recipe: Recipe) -> Path:
    """The BF16 base model folder (hubpub.source materializes Hub / GGUF / package sources)."""
    try:
        from ..source import materialize_base
    except ImportError:  # source stage not available: local folders only
        path = recipe.resolve(recipe.model.source)
        if not (path / "config.json").is_file():
            raise ValidateError(f"{recipe.path}: model.source: {path} is not a model folder (no config.json)") from None
        return path
    return Path(materialize_base(recipe))


def checked_output(recipe: Recipe, output_dir: Path | str | None) -> tuple[Path, Manifest]:
    out = Path(output_dir) if output_dir else recipe.output_path
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
    mode_jobs: list[dict[str, Any]]
    eval_jobs: list[dict[str, Any]]
    benches: dict[int, ev.GroundingBench]
    steps: int  # progress steps per model


def plan(recipe: Recipe, task: str, work: Path) -> Plan:
    """Everything the workers will run; raises ValidateError for any missing file first."""
    modes = modes_for(recipe, task)
    mode_jobs = [mode_job(recipe, i, m) for i, m in enumerate(modes)]
    eval_jobs: list[dict[str, Any]] = []
    benches: dict[int, ev.GroundingBench] = {}
    steps = 1 + len(mode_jobs)
    for i, entry in enumerate(recipe.evals):
        job: dict[str, Any] = {"index": i, "kind": entry.kind}
        if entry.kind in ("perplexity", "kl"):
            job.update(texts=ev.load_texts(recipe, i, entry), seqlen=entry.seqlen, max_samples=entry.max_samples)
            if entry.kind == "kl":
                job["logprobs_out"] = str(work / f"logprobs_{i}_{{role}}.npy")
            steps += 1
        elif entry.kind == "similarity":
            prompts = entry.prompts or [p for j in mode_jobs if isinstance(j["prompt"], str) and not j["images"] for p in [j["prompt"]]]
            prompts = prompts or ev.DEFAULT_SIMILARITY_PROMPTS
            plain = [j for j in mode_jobs if not j["custom_generate"] and not j["images"]]
            # an instruct model answers a bare prompt with nothing: ask through its chat template when a mode does
            chat_mode = next((j for j in plain if isinstance(j["prompt"], list)), None)
            base_mode = chat_mode or (plain[0] if plain else mode_jobs[0])
            job["mode"] = dict(base_mode, stream=False, prompts=None,
                               generate={"max_new_tokens": entry.max_new_tokens, "do_sample": False})
            job["items"] = [{"prompt": [{"role": "user", "content": p}] if chat_mode else p} for p in dict.fromkeys(prompts)]
            steps += len(job["items"])
        else:  # grounding
            grounding_mode = _grounding_mode(recipe, i, entry.mode, mode_jobs, task)
            template = "{target}" if grounding_mode["custom_generate"] else GENERIC_GROUNDING_PROMPT
            bench = ev.build_grounding(entry, work / f"grounding_{i}", template)
            benches[i] = bench
            job["mode"] = dict(grounding_mode, generate=dict(grounding_mode["generate"], max_new_tokens=entry.max_new_tokens))
            job["items"] = bench.items
            steps += len(bench.items)
        eval_jobs.append(job)
    return Plan(modes, mode_jobs, eval_jobs, benches, steps)


def _grounding_mode(recipe: Recipe, index: int, name: str | None, mode_jobs: list[dict[str, Any]], task: str) -> dict[str, Any]:
    if name is not None:
        found = next((j for j in mode_jobs if j["name"] == name), None)
        if found is None:
            names = ", ".join(j["name"] for j in mode_jobs)
            raise ValidateError(f"{recipe.path}: eval[{index}].mode: no mode named {name!r}; use one of: {names}")
        return found
    found = next((j for j in mode_jobs if j["task"] == "ground"), None)
    if found is not None:
        return found
    if task == "causal-lm":
        raise ValidateError(f"{recipe.path}: eval[{index}]: the grounding benchmark needs an image model; remove it or set eval[{index}].mode")
    return {"name": "grounding", "prompt": None, "prompts": None, "images": [], "generate": {"do_sample": False},
            "stream": False, "custom_generate": None, "task": "ground"}


# ----------------------------------------------------------------------------- judging
def judge_modes(plan_: Plan, role: str, result: dict[str, Any]) -> list[ModeResult]:
    out = []
    for mode, job, res in zip(plan_.modes, plan_.mode_jobs, result["modes"]):
        expected = describe_expect(mode.expect)
        problem = res.get("error")
        outputs = res.get("outputs") or []
        if problem is None:
            for text in outputs or [""]:
                problem = check_output(text, mode.expect)
                if problem:
                    break
        shown = outputs[0] if outputs else ""
        out.append(ModeResult(mode=job["name"], model=role, ok=problem is None, expected=expected, output=shown[:300],
                              latency_s=res.get("latency_s"), problem=problem))
    return out


def model_metrics(folder: Path, result: dict[str, Any], modes: list[ModeResult]) -> ModelMetrics:
    runs = [r for r in result.get("modes", []) if "latency_s" in r]
    seconds = sum(r["seconds"] for r in runs)
    return ModelMetrics(
        weight_bytes=weight_bytes(folder),
        peak_memory_bytes=result.get("peak_memory_bytes"),
        memory_kind=result.get("memory_kind", "peak_rss_above_baseline"),
        load_s=result.get("load_s"),
        latency_s=statistics.median(r["latency_s"] for r in runs) if runs else None,
        tokens_per_s=(sum(r["new_tokens"] for r in runs) / seconds) if seconds > 0 else None,
        validity=(sum(m.ok for m in modes) / len(modes)) if modes else None,
    )


def load_problem(role: str, folder: Path, result: dict[str, Any]) -> str | None:
    if "load_error" in result:
        return f"{folder}: the {role} model does not load: {result['load_error']}"
    problems = result.get("loading_problems")
    if not problems:
        return None
    parts = []
    for kind, keys in problems.items():
        shown = ", ".join(keys[:3]) + (f", ... ({len(keys) - 3} more)" if len(keys) > 3 else "")
        parts.append(f"{len(keys)} {kind.replace('_keys', '')} keys ({shown})")
    fix = "re-run `hubpub quantize` (check quantize.split and quantization_config.block_name_to_quantize)" if role == "quantized" else "check the base model files"
    return f"{folder}: the {role} checkpoint does not load cleanly: {'; '.join(parts)}; those weights would be random: {fix}"


def score_evals(recipe: Recipe, plan_: Plan, results: dict[str, dict[str, Any]], work: Path, assets: Path) -> tuple[list[EvalResult], list[Sample], list[Path]]:
    out, samples, images = [], [], []
    for job in plan_.eval_jobs:
        i = job["index"]
        entry = recipe.evals[i]
        got = {role: next(e for e in results[role]["evals"] if e["index"] == i) for role in ROLES}
        result = EvalResult(name=entry.label, kind=entry.kind)
        if entry.kind in ("perplexity", "kl"):
            result.metrics["perplexity"] = {role: got[role]["perplexity"] for role in ROLES}
        if entry.kind == "kl":
            import numpy as np

            stats = ev.kl_stats(*(np.load(job["logprobs_out"].format(role=role)) for role in ("base", "quantized")))
            result.metrics["kl"] = {"quantized": stats["kl"]}
            result.metrics["top1_agreement"] = {"quantized": stats["top1_agreement"]}
        elif entry.kind == "similarity":
            sims = ev.text_similarity(got["base"]["outputs"], got["quantized"]["outputs"])
            for name, value in sims.items():
                result.metrics[name] = {"quantized": value}
            for item, b, q in zip(job["items"], got["base"]["outputs"], got["quantized"]["outputs"]):
                prompt = item["prompt"] if isinstance(item["prompt"], str) else item["prompt"][-1]["content"]
                samples.append(Sample(mode=entry.label, prompt=prompt, base=b, quantized=q))
        elif entry.kind == "grounding":
            bench = plan_.benches[i]
            scores = {role: ev.score_grounding(bench, got[role]["outputs"]) for role in ROLES}
            for name in ("mean_iou", "iou@0.5", "parsed"):
                result.metrics[name] = {role: scores[role][name] for role in ROLES}
            for label, count in scores["base"]["count"].items():
                result.per_class.append({"class": label, "group": ev.grounding_class_group(label), "count": count,
                                         **{f"iou_{role}": scores[role]["per_class"][label] for role in ROLES}})
            stem = f"grounding_{i}" if len(plan_.benches) > 1 else "grounding"
            saved = ev.save_annotated(bench, scores["quantized"]["predicted"], assets, stem)
            result.images = [f"{ASSETS_DIR}/{p.name}" for p in saved]
            images += saved
        out.append(result)
    return out, samples, images


def check_gates(recipe: Recipe, modelm: dict[str, ModelMetrics], evals: list[EvalResult]) -> list[GateResult]:
    g = recipe.validate.gates
    gates = []

    def first(metric: str, role: str = "quantized") -> float | None:
        return next((e.metrics[metric].get(role) for e in evals if metric in e.metrics), None)

    def add(name: str, threshold: float | None, value: float | None, ok_if_below: bool) -> None:
        if threshold is None:
            return
        passed = value is not None and (value <= threshold if ok_if_below else value >= threshold)
        gates.append(GateResult(name=name, threshold=threshold, value=value, passed=passed))

    add("min_validity", g.min_validity, modelm["quantized"].validity, ok_if_below=False)
    ppl_b, ppl_q = first("perplexity", "base"), first("perplexity")
    if g.max_ppl_increase is not None and ppl_b is not None and ppl_q is not None:
        add("max_ppl_increase", g.max_ppl_increase, (ppl_q - ppl_b) / ppl_b, ok_if_below=True)
    add("max_kl", g.max_kl, first("kl"), ok_if_below=True)
    add("min_top1_agreement", g.min_top1_agreement, first("top1_agreement"), ok_if_below=False)
    add("min_similarity", g.min_similarity, first("difflib_ratio"), ok_if_below=False)
    iou_b, iou_q = first("mean_iou", "base"), first("mean_iou")
    if g.max_iou_drop is not None:
        add("max_iou_drop", g.max_iou_drop, None if iou_b is None or iou_q is None else iou_b - iou_q, ok_if_below=True)
    return gates


# ----------------------------------------------------------------------------- the stage
def validate(recipe: Recipe, *, output_dir: Path | str | None = None, progress: bool = True) -> ValidateResult:
    """Load base and quantized in fresh processes, run modes and evals, gate, write metrics."""
    from rich.console import Console

    out, manifest = checked_output(recipe, output_dir)
    base_dir = base_folder(recipe)
    _check_remote_code(recipe, out)
    console = Console(stderr=True)
    if not console.is_terminal:  # logs and CI: wide enough that table cells are not folded
        console = Console(stderr=True, width=200)
    work_root = recipe.work_path
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="validate-", dir=work_root))
    try:
        plan_ = plan(recipe, manifest.task, work)
        scene = make_scene(["square", "circle", "A"], 224, random.Random(0))  # for builtin:scene images
        scene.image.save(work / "scene.png")
        common = {
            "task": manifest.task,
            "trust_remote_code": recipe.model.trust_remote_code,
            "dtype": recipe.model.dtype,
            "device": recipe.validate.device,
            "modes": plan_.mode_jobs,
            "warmup_runs": recipe.validate.warmup_runs,
            "latency_runs": recipe.validate.latency_runs,
            "scene_image": str(work / "scene.png"),
        }
        results: dict[str, dict[str, Any]] = {}
        folders = {"base": base_dir, "quantized": out}
        for role in ROLES:
            evals = [dict(e, logprobs_out=e["logprobs_out"].format(role=role)) if "logprobs_out" in e else e for e in plan_.eval_jobs]
            job = dict(common, role=role, model_dir=str(folders[role]), evals=evals)
            results[role] = _run_with_progress(job, work, work_root / f"validate-{role}.log", plan_.steps, progress, console)
            problem = load_problem(role, folders[role], results[role])
            if problem:
                _write_failed_load(recipe, out, manifest, role, problem, results[role])
                raise ValidateError(problem)
        modes = {role: judge_modes(plan_, role, results[role]) for role in ROLES}
        modelm = {role: model_metrics(folders[role], results[role], modes[role]) for role in ROLES}
        evals_, samples, images = score_evals(recipe, plan_, results, work, out / ASSETS_DIR)
        for mode, b, q in zip(plan_.mode_jobs, modes["base"], modes["quantized"]):  # noqa: B905
            if not mode["images"] and isinstance(mode["prompt"], str):
                samples.append(Sample(mode=mode["name"], prompt=mode["prompt"], base=b.output, quantized=q.output))
        gates = check_gates(recipe, modelm, evals_)
        passed = all(m.ok for role in ROLES for m in modes[role]) and all(g.passed for g in gates)
        metrics = Metrics(
            hubpub_version=__version__, recipe_hash=manifest.recipe_hash, passed=passed,
            environment=results["quantized"]["environment"], base=modelm["base"], quantized=modelm["quantized"],
            modes=modes["quantized"] + modes["base"], evals=evals_, gates=gates, samples=samples,
        )
        metrics_path = out / METRICS
        metrics.write(metrics_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress or not passed:
        print_report(metrics, console, only_failures=not progress)
    if not passed:
        failed = [f"{m.mode} ({m.model})" for m in metrics.modes if not m.ok]
        broken = [f"{g.name} {g.value if g.value is None else round(g.value, 4)} vs {g.threshold:g}" for g in gates if not g.passed]
        what = "; ".join(x for x in (
            f"{len(failed)} mode run(s) failed: {', '.join(failed[:4])}{' ...' if len(failed) > 4 else ''}" if failed else "",
            f"gate(s) violated: {', '.join(broken)}" if broken else "",
        ) if x)
        raise ValidateError(f"validation failed: {what}; see the table above and {metrics_path}")
    return ValidateResult(metrics=metrics, metrics_path=metrics_path, passed=passed, output_dir=out, base_dir=base_dir, assets=images)


def _check_remote_code(recipe: Recipe, out: Path) -> None:
    config = out / "config.json"
    if not recipe.model.trust_remote_code and config.is_file() and "auto_map" in config.read_text(encoding="utf-8"):
        raise ValidateError(
            f"{config}: the model ships its own code (auto_map) and {recipe.path}: model.trust_remote_code is false;"
            " set model.trust_remote_code = true if you have reviewed that code"
        )


def _run_with_progress(job: dict[str, Any], work: Path, log: Path, steps: int, show: bool, console: Any) -> dict[str, Any]:
    if not show:
        return run_worker(job, work, log)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"validate {job['role']}: loading", total=steps)
        return run_worker(job, work, log, lambda label: bar.update(task, advance=1, description=f"validate {job['role']}: {label}"))


def _write_failed_load(recipe: Recipe, out: Path, manifest: Manifest, role: str, problem: str, result: dict[str, Any]) -> None:
    """A load failure still leaves metrics saying passed=false, so no stale 'passed' survives."""
    metrics = Metrics(
        hubpub_version=__version__, recipe_hash=manifest.recipe_hash, passed=False,
        environment=result.get("environment", {}), quantized=ModelMetrics(weight_bytes=weight_bytes(out)),
        modes=[ModeResult(mode="load", model=role, ok=False, expected="no missing/unexpected/mismatched keys",
                          output="", problem=problem.split(": ", 1)[-1])],
    )
    metrics.write(out / METRICS)
