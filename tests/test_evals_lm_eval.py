"""kind = "lm_eval": lm-evaluation-harness on the tiny real Qwen2, offline, with a task YAML and
JSON-lines data shipped in tests/data/lm_eval_tasks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.artifacts import MANIFEST, METRICS, Manifest, Metrics
from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe

TASKS = Path(__file__).parent / "data" / "lm_eval_tasks"
LIMIT = 10


def dressed_as_output(model: Path, out: Path, task: str = "causal-lm", architecture: str = "Qwen2ForCausalLM") -> Path:
    """The base folder dressed as a hubpub output: base and 'quantized' are the same weights."""
    shutil.copytree(model, out)
    Manifest(hubpub_version="0.1.0", recipe_hash="e" * 64, source={"kind": "folder"}, model_name="tiny", model_type="qwen2",
             architecture=architecture, task=task, method="rtn", bits=4, group_size=32, sym=True, format="auto_round",
             iters=0, nsamples=8, seqlen=64, groups=[], tensors_before=0, tensors_after=0, linears_quantized=0, bytes_before=0,
             bytes_after=0, timings={}, versions={}, device="cpu").write(out / MANIFEST)
    return out


def recipe(model: Path, out: Path, eval_extra: str = "", gates: str = "min_recovery = 0.99\n") -> str:
    return (f'output_dir = "{out}"\n[model]\nsource = "{model}"\n'
            '[validate]\nmax_new_tokens = 4\nwarmup_runs = 0\nlatency_runs = 1\n'
            '[[validate.modes]]\nname = "greedy"\nprompt = "The function returns"\n'
            f"[validate.gates]\n{gates}"
            f'[[eval]]\nkind = "lm_eval"\ntasks = ["hubpub_tiny_mc"]\ninclude_path = "{TASKS}"\nlimit = {LIMIT}\n{eval_extra}')


def test_lm_eval_through_the_loaded_model_matches_lm_eval_itself(tiny_qwen2, tmp_path, write_recipe):
    out = dressed_as_output(tiny_qwen2, tmp_path / "out")
    result = CliRunner().invoke(cli, ["validate", str(write_recipe(recipe(tiny_qwen2, out))), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (ev,) = Metrics.read(out / METRICS).evals
    assert ev.kind == "lm_eval"
    (row,) = ev.details["table"]
    assert (row["task"], row["metric"], row["recovery"]) == ("hubpub_tiny_mc", "acc", 1.0)  # the same weights on both sides
    assert row["base_stderr"] is not None and ev.metrics["recovery"] == {"quantized": 1.0}
    assert ev.details["command"].startswith("lm_eval --model hf --model_args 'pretrained=<this repo>,dtype=auto' --tasks hubpub_tiny_mc")
    assert f"--limit {LIMIT}" in ev.details["command"] and f"--include_path {TASKS}" in ev.details["command"]

    # the same task through lm-eval's own loading (what `lm_eval --model hf` does): the same number
    import os

    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    here = os.getcwd()
    os.chdir(TASKS)
    try:
        direct = simple_evaluate(model="hf", model_args=f"pretrained={tiny_qwen2},dtype=auto,device=cpu", tasks=["hubpub_tiny_mc"],
                                 limit=LIMIT, batch_size=1, task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
                                 log_samples=False)
    finally:
        os.chdir(here)
    assert direct["results"]["hubpub_tiny_mc"]["acc,none"] == row["base"]
    assert direct["results"]["hubpub_tiny_mc"]["acc_stderr,none"] == pytest.approx(row["base_stderr"])

    # a stricter per-task limit on the re-run: the benchmark is not run again (its metrics are kept and
    # reused), the gate reads every task, the verdict names the one below the limit, and its row is marked
    strict = CliRunner().invoke(cli, ["validate", str(write_recipe(recipe(tiny_qwen2, out, gates="min_recovery = 1.01\n"))), "--quiet"],
                                catch_exceptions=False)
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines()[-1].startswith(
        "Error: validation failed: gate(s) violated: min_recovery 1 vs 1.01 (below the limit: hubpub_tiny_mc acc 100.0 % (from lm_eval))")
    again = Metrics.read(out / METRICS)
    assert again.evals[0].metrics == ev.metrics and again.evals[0].details["cache_key"] == ev.details["cache_key"]
    assert again.evals[0].details["table"][0]["below"] == ["min_recovery"]
    (gate,) = [g for g in again.gates if g.name == "min_recovery"]
    assert (gate.value, gate.passed, gate.failing) == (1.0, False, ["hubpub_tiny_mc acc"])


def test_unknown_task_lists_close_names_before_loading_a_model(tiny_qwen2, tmp_path, write_recipe):
    out = dressed_as_output(tiny_qwen2, tmp_path / "out")
    path = write_recipe(recipe(tiny_qwen2, out).replace('tasks = ["hubpub_tiny_mc"]', 'tasks = ["hubpub_tiny_mcq"]'))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path.resolve()}: eval[0].tasks: unknown lm-eval task 'hubpub_tiny_mcq'; "
                             "close names: hubpub_tiny_mc\n")
    assert not (out / METRICS).exists()  # nothing ran


def test_gate_on_an_eval_that_is_not_configured(tiny_qwen2, tmp_path, write_recipe):
    path = write_recipe(f'[model]\nsource = "{tiny_qwen2}"\n[validate.gates]\nmin_recovery = 0.95\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == (f"{path}:4: validate.gates.min_recovery: this gate reads an eval of kind 'lm_eval' and the recipe"
                               " has none; add an [[eval]] with kind = 'lm_eval' or remove the gate")


def test_lm_eval_fields_are_checked_with_their_line(tmp_path, write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n\n[[eval]]\nkind = "perplexity"\nfile = "builtin:pydoc"\n\n'
                        '[[eval]]\nkind = "lm_eval"\ntasks = ["arc_easy"]\nnum_fewshot = -1\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:11: eval[1].num_fewshot: must be >= 0 (got -1)"
    path = write_recipe('[model]\nsource = "org/m"\n[[eval]]\nkind = "lm_eval"\ntasks = []\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:5: eval[0].tasks: must not be empty (got [])"


def test_builtin_task_typo_lists_close_names_and_an_uncached_hub_task_is_refused_offline(tiny_qwen2, tmp_path, write_recipe, monkeypatch):
    """lm-eval's own task index (indexed once per process), before any model loads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "empty-datasets-cache"))  # nothing cached
    out = dressed_as_output(tiny_qwen2, tmp_path / "out")
    typo = write_recipe(recipe(tiny_qwen2, out).replace('tasks = ["hubpub_tiny_mc"]', 'tasks = ["hubpub_tiny_mc", "arc_eazy"]'), "typo.toml")
    result = CliRunner().invoke(cli, ["validate", str(typo)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {typo.resolve()}: eval[0].tasks: unknown lm-eval task 'arc_eazy'; close names: arc_easy, ")
    assert result.stderr.count("\n") == 1
    hub = write_recipe(recipe(tiny_qwen2, out).replace('tasks = ["hubpub_tiny_mc"]', 'tasks = ["hubpub_tiny_mc", "arc_easy"]'), "hub.toml")
    result = CliRunner().invoke(cli, ["validate", str(hub)])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {hub.resolve()}: eval[0].tasks: task 'arc_easy' reads the Hub dataset 'allenai/ai2_arc', which is not"
                             " in the local datasets cache, and HF_HUB_OFFLINE=1; run once online (the dataset is then cached), or use a"
                             " local task through include_path\n")
    assert not (out / METRICS).exists()  # nothing ran


def test_an_eval_that_fails_keeps_the_others_and_the_rerun_reuses_them(tiny_qwen2, tmp_path, write_recipe):
    """A broken task file fails only its eval; perplexity's result is written, and reused once the file is fixed."""
    from hubpub.events import Notice
    from hubpub.errors import ValidateError
    from hubpub.validate import validate

    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    data = tasks / "hubpub_tiny_mc.jsonl"
    good = data.read_text()
    data.write_text(good.replace('"answer"', '"solution"'))  # every doc lacks the field doc_to_target reads
    out = dressed_as_output(tiny_qwen2, tmp_path / "out")
    text = recipe(tiny_qwen2, out).replace(str(TASKS), str(tasks)).replace(
        "[[eval]]", '[[eval]]\nkind = "perplexity"\nfile = "builtin:pydoc"\nseqlen = 32\nmax_samples = 2\n\n[[eval]]', 1)
    path = write_recipe(text)
    with pytest.raises(ValidateError) as info:
        validate(load_recipe(path))
    assert "eval[1] (lm_eval) failed on the quantized: " in str(info.value)
    first = Metrics.read(out / METRICS)
    ppl, broken = first.evals
    assert not first.passed and ppl.metrics["perplexity"]["base"] > 1 and ppl.details["cache_key"]
    assert broken.notes[0].startswith("did not run: quantized: ") and "cache_key" not in broken.details

    data.write_text(good)
    events: list = []
    again = validate(load_recipe(path), events=events.append)
    assert again.passed and again.metrics.evals[0] == ppl  # measured once, kept
    assert any(isinstance(e, Notice) and e.message.startswith("eval[0] (perplexity): reusing") for e in events)
    assert again.metrics.evals[1].details["table"][0]["recovery"] == 1.0


def test_lm_eval_scores_the_text_path_of_an_image_text_model(tiny_llava, tmp_path, write_recipe):
    """An image-text model (LLaVA): lm-eval's HFLM scores its text path on the loaded model; the
    card's reproduction is that same call in Python (lm-eval's `hf` CLI model cannot load a VLM)."""
    out = dressed_as_output(tiny_llava, tmp_path / "out", task="image-text-to-text",
                            architecture="LlavaForConditionalGeneration")
    path = write_recipe(recipe(tiny_llava, out, gates="min_recovery = 0.99\n").replace(
        'prompt = "The function returns"', 'prompt = "Describe the picture."'))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    metrics = Metrics.read(out / METRICS)
    ev = next(e for e in metrics.evals if e.kind == "lm_eval")
    row = ev.details["table"][0]
    assert row["task"] == "hubpub_tiny_mc" and row["base"] == row["quantized"] and row["recovery"] == 1.0
    assert ev.details["command_language"] == "python"
    assert 'model = AutoModelForImageTextToText.from_pretrained(repo, dtype="auto")' in ev.details["command"]
    assert "tasks=['hubpub_tiny_mc']" in ev.details["command"] and "limit=10" in ev.details["command"]
    assert "TaskManager(include_path='lm_eval_tasks')" in ev.details["command"]
