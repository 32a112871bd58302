"""``kind = "lm_eval"``: standard benchmarks through lm-evaluation-harness, base vs quantized.

The worker wraps the model it already loaded in lm-eval's ``HFLM`` and calls ``simple_evaluate``
(the same code path as the ``lm_eval`` CLI, with the CLI's default seeds), so the numbers are
the ones anyone gets with the command the card prints. The card shows task, metric, base,
quantized, recovery % and the stderr lm-eval reports. ``min_recovery`` gates every task (each
task's recovery must reach it; the verdict names the tasks below it and the card's table marks
them), ``min_mean_recovery`` the mean over tasks.

Fields (lm-eval's own names): ``tasks``, ``include_path`` (a folder of your task YAMLs, as
``--include_path``; relative ``data_files`` in them are read from that folder), ``num_fewshot``,
``limit``, ``apply_chat_template``, ``batch_size``.
"""

from __future__ import annotations

import difflib
import math
import os
import shlex
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, field_validator

from ...artifacts import EvalResult, MetricInfo
from ...errors import ValidateError
from ...recipe import EvalEntry
from . import GateSpec, PrepareContext, ScoreContext, eval_kinds

LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas")
RECOVERY = MetricInfo(label="Mean recovery (lm-eval)", unit="%", higher_is_better=True, digits=1, delta="points")
LOWEST = MetricInfo(label="Lowest task recovery (lm-eval)", unit="%", higher_is_better=True, digits=1, delta="points", headline=False)


class LMEvalEntry(EvalEntry):
    kind: Literal["lm_eval"]
    tasks: list[str] = Field(min_length=1)
    include_path: Optional[str] = None
    num_fewshot: Optional[int] = Field(None, ge=0)
    limit: Optional[Union[int, float]] = Field(None, gt=0)
    apply_chat_template: bool = False
    batch_size: Union[int, Literal["auto"]] = 1

    @field_validator("tasks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not t.strip() or "," in t]
        if bad:
            raise ValueError(f"task names are single lm-eval names like 'arc_easy' (got {bad[0]!r})")
        return v

    def input_dirs(self) -> list[str]:
        return [self.include_path] if self.include_path else []


class TaskInfo(BaseModel):
    task: str
    dataset_path: Optional[str] = None
    dataset_name: Optional[str] = None
    dataset_revision: Optional[str] = None
    version: Optional[str] = None
    samples: int = 0


class LMEvalJob(BaseModel):
    tasks: list[str]
    include_path: Optional[str] = None
    include_defaults: bool = True
    num_fewshot: Optional[int] = None
    limit: Optional[Union[int, float]] = None
    apply_chat_template: bool = False
    batch_size: Union[int, str] = 1
    model_task: str = "causal-lm"  # "image-text-to-text": the text path of a VLM, scored through HFLM


class TaskScore(BaseModel):
    task: str
    metric: str
    filter: str = "none"
    value: float
    stderr: Optional[float] = None
    higher_is_better: Optional[bool] = None


class LMEvalOutput(BaseModel):
    scores: list[TaskScore] = Field(default_factory=list)
    tasks: list[TaskInfo] = Field(default_factory=list)
    lm_eval_version: str = ""


def _task_manager(include_path: Optional[str], include_defaults: bool):  # type: ignore[no-untyped-def]
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path, include_defaults=include_defaults, verbosity="ERROR")


_MANAGERS: dict[tuple[Any, ...], Any] = {}


def _indexed_tasks(include_path: Optional[str], include_defaults: bool):  # type: ignore[no-untyped-def]
    """A TaskManager for checking names in the parent (indexing lm-eval's ~15k task YAMLs takes
    seconds to a minute: done once per process, again only when the include folder changed)."""
    files = tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in Path(include_path).rglob("*") if p.is_file())) if include_path else ()
    key = (include_path, include_defaults, files)
    if key not in _MANAGERS:
        _MANAGERS[key] = _task_manager(include_path, include_defaults)
    return _MANAGERS[key]


def _hub_dataset_missing(dataset: str, name: Optional[str]) -> bool:
    """Offline: True when the Hub dataset is not in the local datasets cache (as calibration checks)."""
    try:
        import datasets

        datasets.load_dataset_builder(dataset, name)
    except Exception:  # noqa: BLE001 - datasets raises ConnectionError / FileNotFoundError / its own when not cached
        return True
    return False


def _dataset_of(manager: Any, task: str) -> tuple[Optional[str], Optional[str]]:
    entry = manager.task_index.get(task) or {}
    path = entry.get("yaml_path") if isinstance(entry, dict) else getattr(entry, "yaml_path", None)
    if not path or not os.path.isfile(str(path)):
        return None, None
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            config = yaml.load(fh, Loader=_ignore_tags())  # lm-eval YAMLs use !function tags
    except yaml.YAMLError:
        return None, None
    return (config or {}).get("dataset_path"), (config or {}).get("dataset_name")


def _ignore_tags():  # type: ignore[no-untyped-def]
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return Loader


def command(entry: LMEvalEntry, pretrained: str, include_path: Optional[str], trust_remote_code: bool = False) -> str:
    """The ``lm_eval`` command that reproduces these numbers."""
    remote = ",trust_remote_code=True" if trust_remote_code else ""  # a model with its own code loads only so
    args = ["lm_eval", "--model", "hf", "--model_args", f"pretrained={pretrained},dtype=auto{remote}",
            "--tasks", ",".join(entry.tasks), "--batch_size", str(entry.batch_size)]
    if entry.num_fewshot is not None:
        args += ["--num_fewshot", str(entry.num_fewshot)]
    if entry.limit is not None:
        args += ["--limit", str(entry.limit)]
    if entry.apply_chat_template:
        args += ["--apply_chat_template"]
    if include_path:
        args += ["--include_path", include_path]
    return " ".join(shlex.quote(a) for a in args)


def python_command(entry: LMEvalEntry, repo: str, include_path: Optional[str]) -> str:
    """The lm-eval call that reproduces the numbers of an image-text model's text path."""
    args = [f"tasks={list(entry.tasks)!r}", f"batch_size={entry.batch_size!r}"]
    if entry.num_fewshot is not None:
        args.append(f"num_fewshot={entry.num_fewshot}")
    if entry.limit is not None:
        args.append(f"limit={entry.limit!r}")
    if entry.apply_chat_template:
        args.append("apply_chat_template=True")
    lines = ["from lm_eval import simple_evaluate", "from lm_eval.models.huggingface import HFLM"]
    if include_path:
        lines.append("from lm_eval.tasks import TaskManager")
        args.append(f"task_manager=TaskManager(include_path={Path(include_path).name!r})")
    lines += ["from transformers import AutoModelForImageTextToText, AutoTokenizer", "",
              f"repo = {repo!r}", 'model = AutoModelForImageTextToText.from_pretrained(repo, dtype="auto")',
              f'lm = HFLM(pretrained=model, tokenizer=AutoTokenizer.from_pretrained(repo), backend="causal", batch_size={entry.batch_size!r})',
              f"print(simple_evaluate(model=lm, {', '.join(a for a in args if not a.startswith('batch_size'))})[\"results\"])"]
    return "\n".join(lines)


@eval_kinds.register
class LMEval:
    name = "lm_eval"
    display_name = "lm-evaluation-harness"
    reference_url = "https://github.com/EleutherAI/lm-evaluation-harness"
    Entry = LMEvalEntry
    Job = LMEvalJob
    Output = LMEvalOutput
    metrics = {"recovery": RECOVERY, "min_task_recovery": LOWEST}
    # min_recovery is per task (what a publisher means by "recovers 98 %": no benchmark below it);
    # the gate reads the lowest task's recovery and stage.check_gates names every task below the
    # limit from details["items"]. min_mean_recovery is the average, as auto-round's tables report it.
    gates = (GateSpec(name="min_recovery", metric="min_task_recovery", direction="min", ge=0.0, bounds=(0.0, math.inf), unit="%",
                      description="every task's quantized / base score must reach this (0.98 = 98 % recovered); the failing tasks are named"),
             GateSpec(name="min_mean_recovery", metric="recovery", direction="min", ge=0.0, bounds=(0.0, math.inf), unit="%",
                      description="mean over tasks of quantized / base score (1.0 = fully recovered)"))

    def prepare(self, entry: LMEvalEntry, ctx: PrepareContext) -> LMEvalJob:
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise ValidateError(f"{ctx.where('kind')}: lm_eval needs lm-evaluation-harness: pip install lm-eval") from None
        if ctx.task not in ("causal-lm", "image-text-to-text"):
            raise ValidateError(f"{ctx.where('kind')}: lm_eval runs on text and image-text models (their text path);"
                                f" this model is {ctx.task} (its own API): use its custom modes and evals instead")
        include = None
        if entry.include_path:
            folder = ctx.recipe.resolve(entry.include_path)
            if not folder.is_dir():
                raise ValidateError(f"{ctx.where('include_path')}: {folder} is not a folder; fix the path (relative to the recipe file)")
            include = str(folder.resolve())
        manager = _indexed_tasks(include, include_defaults=False) if include else None
        local = set(manager.all_tasks) if manager else set()
        needs_defaults = [t for t in entry.tasks if t not in local]
        for task in needs_defaults:  # a near-miss of one of your own tasks is a typo: say so without indexing lm-eval's 10k tasks
            close = difflib.get_close_matches(task, sorted(local), n=5, cutoff=0.8)
            if close:
                raise ValidateError(f"{ctx.where('tasks')}: unknown lm-eval task {task!r}; close names: {', '.join(close)}")
        if needs_defaults:
            manager = _indexed_tasks(include, include_defaults=True)
            known = manager.all_tasks
            for task in entry.tasks:
                if task not in known:
                    close = difflib.get_close_matches(task, known, n=5, cutoff=0.6)
                    hint = f"; close names: {', '.join(close)}" if close else "; `lm_eval --tasks list` lists them"
                    raise ValidateError(f"{ctx.where('tasks')}: unknown lm-eval task {task!r}{hint}")
            if any(os.environ.get(k, "").lower() in ("1", "on", "true", "yes") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
                for task in needs_defaults:
                    dataset, name = _dataset_of(manager, task)
                    if dataset and dataset not in LOCAL_BUILDERS and not Path(dataset).exists() and _hub_dataset_missing(dataset, name):
                        raise ValidateError(
                            f"{ctx.where('tasks')}: task {task!r} reads the Hub dataset {dataset!r}, which is not in the local datasets"
                            " cache, and HF_HUB_OFFLINE=1; run once online (the dataset is then cached), or use a local task"
                            " through include_path")
        return LMEvalJob(tasks=entry.tasks, include_path=include, include_defaults=bool(needs_defaults), num_fewshot=entry.num_fewshot,
                         limit=entry.limit, apply_chat_template=entry.apply_chat_template, batch_size=entry.batch_size,
                         model_task=ctx.task)

    def steps(self, job: LMEvalJob) -> int:
        return 1

    def run(self, job: LMEvalJob, model: Any) -> LMEvalOutput:
        from importlib import metadata

        import transformers
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM

        tokenizer = transformers.AutoTokenizer.from_pretrained(model.model_dir)  # as the CLI loads it (not the worker's left-padded one)
        lm = HFLM(pretrained=model.model, tokenizer=tokenizer, batch_size=job.batch_size, backend="causal")
        manager = _task_manager(job.include_path, job.include_defaults)
        here = os.getcwd()
        if job.include_path:
            os.chdir(job.include_path)  # relative data_files in the user's YAMLs
        try:
            results = simple_evaluate(model=lm, tasks=list(job.tasks), num_fewshot=job.num_fewshot, limit=job.limit,
                                      apply_chat_template=job.apply_chat_template, task_manager=manager, log_samples=False)
        finally:
            os.chdir(here)
        out = LMEvalOutput(lm_eval_version=metadata.version("lm-eval"))
        assert results is not None
        higher = results.get("higher_is_better", {})
        for task, values in results["results"].items():
            for key, value in values.items():
                if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                    continue
                metric, _, filt = key.partition(",")
                stderr = values.get(f"{metric}_stderr,{filt}")
                out.scores.append(TaskScore(task=task, metric=metric, filter=filt, value=float(value),
                                            stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                                            higher_is_better=higher.get(task, {}).get(metric)))
        configs = results.get("configs", {})
        for task in results["results"]:
            config = configs.get(task, {})
            n = results.get("n-samples", {}).get(task, {})
            out.tasks.append(TaskInfo(task=task, dataset_path=config.get("dataset_path"), dataset_name=config.get("dataset_name"),
                                      dataset_revision=(config.get("dataset_kwargs") or {}).get("revision"),
                                      version=str(results.get("versions", {}).get(task, "")),
                                      samples=int(n.get("effective", 0)) if isinstance(n, dict) else 0))
        model.progress("done")
        return out

    def score(self, entry: LMEvalEntry, job: LMEvalJob, outputs: dict[str, LMEvalOutput], ctx: ScoreContext) -> EvalResult:
        base = {(s.task, s.metric, s.filter): s for s in outputs["base"].scores}
        result = EvalResult(name=entry.label, kind=self.name)
        table, recoveries = [], []
        for q in outputs["quantized"].scores:
            b = base.get((q.task, q.metric, q.filter))
            if b is None:
                continue
            key = f"{q.task}:{q.metric}" + ("" if q.filter == "none" else f":{q.filter}")
            better_high = q.higher_is_better is not False
            # a task that collapses to 0 recovers 0 %, not "unknown"; only a base score of 0 leaves nothing to recover
            recovery = (q.value / b.value if b.value else None) if better_high else (b.value / q.value if q.value else None)
            if recovery is not None:
                recoveries.append(recovery)
            result.metrics[key] = {"base": b.value, "quantized": q.value}
            result.display[key] = MetricInfo(label=f"{q.task} {q.metric}" + ("" if q.filter == "none" else f" ({q.filter})"),
                                             unit="", higher_is_better=better_high, digits=4, delta="absolute", headline=False)
            sides = {role: (s.value - 1.96 * s.stderr, s.value + 1.96 * s.stderr) for role, s in (("base", b), ("quantized", q)) if s.stderr is not None}
            if b.stderr is not None and q.stderr is not None:
                half = 1.96 * math.hypot(b.stderr, q.stderr)  # independent-samples approximation
                sides["delta"] = (q.value - b.value - half, q.value - b.value + half)
            result.intervals[key] = sides
            metric = q.metric if q.filter == "none" else f"{q.metric} ({q.filter})"
            table.append({"task": q.task, "metric": metric, "label": f"{q.task} {metric}", "base": b.value, "quantized": q.value,
                          "recovery": recovery, "base_stderr": b.stderr, "quantized_stderr": q.stderr, "below": []})
        if recoveries:
            result.metrics = {"recovery": {"quantized": sum(recoveries) / len(recoveries)},
                              "min_task_recovery": {"quantized": min(recoveries)}, **result.metrics}
            result.display = {"recovery": RECOVERY, "min_task_recovery": LOWEST, **result.display}
        repo = ctx.recipe.push.repo_id or "<this repo>"
        include = entry.include_path
        result.details = {
            "table": table,
            # lm-eval's `hf` CLI model loads AutoModelForCausalLM, which an image-text model is not:
            # for one the reproduction is the same HFLM call in Python, on the loaded model
            "command": (command(entry, repo, include, ctx.recipe.model.trust_remote_code) if job.model_task == "causal-lm"
                        else python_command(entry, repo, include)),
            "command_language": "bash" if job.model_task == "causal-lm" else "python",
            "command_base": command(entry, "<the BF16 base>", include, ctx.recipe.model.trust_remote_code),
            "lm_eval_version": outputs["quantized"].lm_eval_version,
            "num_fewshot": entry.num_fewshot,
            "limit": entry.limit,
            "tasks": [t.model_dump() for t in outputs["quantized"].tasks],
            # per-item values behind min_task_recovery: the gate names each one below its limit and
            # marks its table row ("below": the gates it fails; set by validate on every run, so a
            # reused result follows the recipe's current limits)
            "items": {"min_task_recovery": [{"label": t["label"], "value": t["recovery"]} for t in table if t["recovery"] is not None]},
        }
        return result

