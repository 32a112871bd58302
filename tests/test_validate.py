"""`hubpub validate` end to end on the tiny real Qwen2: real quantize, real worker processes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.artifacts import MANIFEST, METRICS, Manifest, Metrics
from hubpub.cli import cli
from hubpub.recipe import load_recipe

QUANTIZE = """
[quantize]
method = "rtn"
group_size = 32
nsamples = 8
seqlen = 64
"""
FAST = """
[validate]
max_new_tokens = 8
warmup_runs = 0
latency_runs = 1
"""


@pytest.fixture(scope="session")
def quantized_qwen2(tiny_qwen2, tmp_path_factory) -> Path:
    """tiny_qwen2 quantized to W4 by hubpub's own quantize stage (RTN: seconds)."""
    from hubpub.quantize import quantize

    root = tmp_path_factory.mktemp("validate_q")
    recipe = root / "recipe.toml"
    recipe.write_text(f'output_dir = "out"\n[model]\nsource = "{tiny_qwen2}"\n{QUANTIZE}')
    saved = os.environ.get("AR_WORK_SPACE")
    os.environ["AR_WORK_SPACE"] = str(root / "ar_work_space")
    try:
        return quantize(load_recipe(recipe), progress=False).output_dir
    finally:
        os.environ.pop("AR_WORK_SPACE") if saved is None else os.environ.__setitem__("AR_WORK_SPACE", saved)


def copy_output(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / METRICS).unlink(missing_ok=True)
    return dst


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def recipe_text(source: Path, output: Path, extra: str = "", validate: str = FAST) -> str:
    return f'output_dir = "{output}"\n[model]\nsource = "{source}"\n{QUANTIZE}{validate}{extra}'


def test_validate_passes_with_builtin_modes_and_writes_metrics(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    text = recipe_text(tiny_qwen2, out, """
[validate.gates]
min_top1_agreement = 0.5
max_ppl_increase = 0.5

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 3

[[eval]]
kind = "similarity"
prompts = ["The class statement", "A for loop"]
""")
    result = run_cli("validate", str(write_recipe(text)), "--quiet")
    assert result.exit_code == 0, result.output
    assert f"wrote {out / METRICS}" in result.stdout

    metrics = Metrics.read(out / METRICS)
    manifest = Manifest.read(out / MANIFEST)
    assert metrics.passed and metrics.recipe_hash == manifest.recipe_hash
    names = ["greedy", "chat", "sampling", "beam", "batch", "stream"]
    assert [(m.mode, m.model) for m in metrics.modes] == [(n, "quantized") for n in names] + [(n, "base") for n in names]
    assert all(m.ok and m.output.strip() for m in metrics.modes)
    greedy = {m.model: m.output for m in metrics.modes if m.mode == "greedy"}
    stream = {m.model: m.output for m in metrics.modes if m.mode == "stream"}
    assert stream == greedy  # the streamer yields exactly the greedy text

    q, b = metrics.quantized, metrics.base
    assert q.weight_bytes == sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert b.weight_bytes == sum(p.stat().st_size for p in tiny_qwen2.glob("*.safetensors")) > q.weight_bytes
    assert q.memory_kind == "peak_rss_above_baseline" and q.peak_memory_bytes > 0
    assert q.resident_bytes is not None and b.resident_bytes is not None  # the model's own footprint, apart from evals
    assert "QuantLinear" in q.quant_backend and b.quant_backend is None  # the kernel that ran the quantized layers
    assert q.load_s > 0 and q.latency_s > 0 and q.tokens_per_s > 0 and q.validity == 1.0
    # timed interleaved (the default): one timed call per mode and model (latency_runs = 1), from the same process
    assert q.latency_timing == b.latency_timing == "interleaved" and b.latency_s > 0
    assert all(len(m.latencies_s) == 1 for m in metrics.modes)
    assert metrics.environment["device"] == "cpu" and metrics.environment["torch"].startswith("2.")
    assert metrics.environment["auto_round"]

    kl, sim = metrics.evals
    assert kl.kind == "kl" and 0 < kl.metrics["kl"]["quantized"] < 1.0
    assert 0.5 <= kl.metrics["top1_agreement"]["quantized"] < 1.0  # 4-bit changes some argmaxes, not most
    assert kl.metrics["perplexity"]["base"] > 1 and kl.metrics["perplexity"]["quantized"] > 1
    assert set(sim.metrics) == {"exact_match", "char_similarity", "difflib_ratio", "word_jaccard", "flips"}
    assert [g.name for g in metrics.gates] == ["min_validity", "min_top1_agreement", "max_ppl_increase"]
    assert {g.name: g.note for g in metrics.gates}["max_ppl_increase"] == "from kl"  # kl reports perplexity: no perplexity eval here
    assert all(g.passed for g in metrics.gates)
    # every mode side by side (chat and batch included), then the similarity prompts
    assert [s.mode for s in metrics.samples] == names + ["similarity", "similarity"]
    assert [s.prompt for s in metrics.samples if s.mode == "similarity"] == ["The class statement", "A for loop"]
    assert metrics.samples[names.index("batch")].prompt == "The class statement"  # the first prompt of the batch


def test_base_against_itself_gives_kl_zero_top1_one_similarity_one(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    # the base folder dressed as a hubpub output: every comparison must come out exact
    same = copy_output(tiny_qwen2, tmp_path / "same")
    shutil.copy(quantized_qwen2 / MANIFEST, same / MANIFEST)
    text = recipe_text(tiny_qwen2, same, """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 2

[[eval]]
kind = "similarity"
prompts = ["The class statement", "A for loop", "An exception"]
""")
    from hubpub.validate import validate

    result = validate(load_recipe(write_recipe(text)), progress=False)
    kl, sim = result.metrics.evals
    assert kl.metrics["kl"]["quantized"] == pytest.approx(0.0, abs=1e-9)
    assert kl.metrics["top1_agreement"]["quantized"] == 1.0
    assert kl.metrics["perplexity"]["base"] == kl.metrics["perplexity"]["quantized"]
    assert sim.metrics == {**{name: {"quantized": 1.0} for name in ("exact_match", "char_similarity", "difflib_ratio", "word_jaccard")},
                           "flips": {"quantized": 0.0}}
    compared = [s for s in result.metrics.samples if s.mode == "similarity"]
    assert len(compared) == 3 and all(s.base.strip() and s.base == s.quantized for s in compared)  # real text, not two empties


def _rewrite_without(path: Path, drop: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k != drop}
        meta = fh.metadata()
    save_file(tensors, path, metadata=meta)


def test_checkpoint_with_a_tensor_removed_fails_the_load_check(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    (shard,) = out.glob("*.safetensors")
    _rewrite_without(shard, "model.layers.1.mlp.down_proj.qweight")
    result = run_cli("validate", str(write_recipe(recipe_text(tiny_qwen2, out))), "--quiet")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: {out}: the quantized checkpoint does not load cleanly: 1 missing keys (model.layers.1.mlp.down_proj.qweight)")
    assert "re-run `hubpub quantize`" in result.stderr
    metrics = Metrics.read(out / METRICS)  # no stale 'passed' can survive a failed load
    assert not metrics.passed and metrics.modes[0].mode == "load"


def test_wrong_block_path_fails_the_load_check(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["block_name_to_quantize"] = "language_model.model.layers"
    (out / "config.json").write_text(json.dumps(config))
    result = run_cli("validate", str(write_recipe(recipe_text(tiny_qwen2, out))), "--quiet")
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line
    # the linears stayed plain nn.Linear: their .weight is missing, the packed tensors unexpected
    assert line.startswith(f"Error: {out}: the quantized checkpoint does not load cleanly: 14 missing keys (model.layers.0.mlp.down_proj.weight, ")
    assert "unexpected keys (model.layers.0.mlp.down_proj.qweight, " in line


def test_mode_whose_output_does_not_parse_fails_the_gate_with_a_table(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    text = recipe_text(tiny_qwen2, out, """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[validate.modes]]
name = "boxes"
prompt = "Where is the cat?"
expect = { boxes = 1 }

[[validate.modes]]
name = "json"
prompts = ["Return JSON:", "A dict"]
expect = { json = true }

[validate.gates]
max_kl = 0.0

[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 2
""")
    result = run_cli("validate", str(write_recipe(text)), "--quiet")
    assert result.exit_code == 1
    err = result.stderr
    # boxes and json fail on the base model too: a base limitation, not a regression; only max_kl fails
    assert err.strip().splitlines()[-1].startswith("Error: validation failed: gate(s) violated: max_kl ")
    assert f"see the table above and {out / METRICS}" in err
    # the table: mode, model, expected, what came out
    assert "Generation modes" in err and "0 valid <box>x1,y1,x2,y2</box> found, 1" in err and "not JSON" in err
    metrics = Metrics.read(out / METRICS)
    assert not metrics.passed
    assert {(m.mode, m.ok) for m in metrics.modes} == {("greedy", True), ("boxes", False), ("json", False)}
    assert metrics.quantized.validity == pytest.approx(1 / 3)
    validity = metrics.gates[0]
    assert (validity.name, validity.value, validity.passed) == ("min_validity", 1.0, True)
    assert "boxes, json fail on the base too" in validity.note
    assert [line.split(":")[0] for line in metrics.base_limitations] == ["boxes", "json"]


# ----------------------------------------------------------------------------- bad input
def test_not_a_hubpub_output(tiny_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, tmp_path / "nothing"))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {tmp_path / 'nothing'} is not a hubpub output (no hubpub_manifest.json); "
                             f"run `hubpub quantize {path}` first\n")


def test_unknown_generate_kwarg(tiny_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, tmp_path, """
[[validate.modes]]
name = "greedy"
prompt = "hi"
generate = { max_new_token = 5 }
"""))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {path}:")
    assert "validate.modes[0].generate: unknown generate argument 'max_new_token'; did you mean 'max_new_tokens'?" in result.stderr


def test_missing_image_path_names_the_field(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, quantized_qwen2, """
[[validate.modes]]
name = "greedy"
prompt = "hi"

[[validate.modes]]
name = "look"
prompt = "What is this?"
images = ["pics/cat.png"]
"""))
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}:23: validate.modes[1].images[0]: {path.resolve().parent / 'pics/cat.png'} not found; "
                             "fix the path (relative paths start at the recipe's folder)\n")


def test_missing_eval_file_names_the_field(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    path = write_recipe(recipe_text(tiny_qwen2, quantized_qwen2, """
[[eval]]
kind = "perplexity"
file = "data/wiki.txt"
"""))
    before = (quantized_qwen2 / METRICS).read_bytes() if (quantized_qwen2 / METRICS).exists() else None
    result = run_cli("validate", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}:18: eval[0].file: {path.resolve().parent / 'data/wiki.txt'} not found; "
                             "fix the path (relative paths start at the recipe's folder)\n")
    after = (quantized_qwen2 / METRICS).read_bytes() if (quantized_qwen2 / METRICS).exists() else None
    assert before == after  # bad input changes nothing


def test_relative_output_dir_events_and_no_print(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe, monkeypatch, capfd):
    """--output-dir relative to the cwd works (workers run elsewhere); progress arrives as events, nothing is printed."""
    from hubpub.events import Notice, StepFinished, StepProgress, StepStarted
    from hubpub.validate import validate

    copy_output(quantized_qwen2, tmp_path / "rel" / "out")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write_recipe(recipe_text(tiny_qwen2, Path("elsewhere"), """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[validate.modes]]
name = "json"
prompt = "Return JSON:"
expect = { json = true }
""")))
    events: list = []
    capfd.readouterr()
    result = validate(recipe, output_dir="rel/out", events=events.append)
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""  # the library never prints
    assert result.passed and result.metrics_path == tmp_path / "rel" / "out" / METRICS
    started = [e.step for e in events if isinstance(e, StepStarted)]
    # each model alone (outputs, memory, evals), then both together for the interleaved timing
    assert started == ["load (quantized)", "modes (quantized)", "load (base)", "modes (base)", "load (base + quantized)", "timing (base + quantized)"]
    assert [e.item for e in events if isinstance(e, StepProgress) and e.step == "modes (base)"] == ["greedy", "json"]
    assert [e.item for e in events if isinstance(e, StepProgress) and e.step == "timing (base + quantized)"] == ["greedy", "json"]
    assert len([e for e in events if isinstance(e, StepFinished)]) == 6
    # json fails on the base too: a base limitation, reported, not a regression (min_validity counts greedy only)
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert notice.level == "warning" and notice.message.startswith("base limitation (fails on the base model too, not a regression): json: not JSON")
    assert result.metrics.gates[0].value == 1.0 and result.metrics.base_limitations[0].startswith("json: not JSON")
    log = (recipe.work_path / "validate-base.log").read_text()
    assert "found in sys.modules" not in log  # the worker runs as a module the package does not import


def test_min_validity_zero_cannot_fail_and_absolute_validity_counts_everything(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    out = copy_output(quantized_qwen2, tmp_path / "out")
    modes = """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[validate.modes]]
name = "json"
prompt = "Return JSON:"
expect = { json = true }
"""
    zero = run_cli("validate", str(write_recipe(recipe_text(tiny_qwen2, out, modes + "[validate.gates]\nmin_validity = 0.0\n"))), "--quiet")
    assert zero.exit_code == 0, zero.output  # the gate table and the exit code agree
    gate = Metrics.read(out / METRICS).gates[0]
    assert (gate.name, gate.passed, gate.vacuous) == ("min_validity", True, True)
    strict = run_cli("validate", str(write_recipe(recipe_text(tiny_qwen2, out, modes + "[validate.gates]\nabsolute_validity = true\n"))), "--quiet")
    assert strict.exit_code == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("Error: validation failed: gate(s) violated: min_validity 0.5 vs 1 ")
    assert "| min_validity" in strict.stderr or "min_validity" in strict.stderr  # the failing gate's table is shown


def test_a_rerun_reuses_evals_already_measured_on_this_checkpoint(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    from hubpub.events import Notice
    from hubpub.validate import validate

    out = copy_output(quantized_qwen2, tmp_path / "out")
    recipe = load_recipe(write_recipe(recipe_text(tiny_qwen2, out, """
[[validate.modes]]
name = "greedy"
prompt = "The function returns"

[[eval]]
kind = "perplexity"
file = "builtin:pydoc"
seqlen = 32
max_samples = 2
""")))
    first = validate(recipe).metrics.evals[0]
    events: list = []
    again = validate(recipe, events=events.append).metrics.evals[0]
    assert again == first and first.details["cache_key"]  # the same numbers, not measured twice
    assert any(isinstance(e, Notice) and "reusing the result measured earlier" in e.message for e in events)
    assert not any(getattr(e, "step", "").startswith("eval") for e in events)  # no eval step ran in the workers


# ----------------------------------------------------------------------------- latency: interleaved timing
def test_timing_phase_alternates_base_and_quantized_calls_in_one_process(tiny_qwen2, quantized_qwen2, tmp_path):
    """The timing worker loads both models and times each mode's calls ABBA: base, quantized, quantized, base, ..."""
    from hubpub.validate.protocol import GenerateArgs, ModeJob, TimingJob, WorkerJob
    from hubpub.validate.runner import run_worker

    modes = [ModeJob(name="greedy", prompt="The function returns", generate=GenerateArgs(max_new_tokens=4)),
             ModeJob(name="batch", prompts=["A for loop", "The class statement"], generate=GenerateArgs(max_new_tokens=4))]

    def job(role: str, folder: Path) -> WorkerJob:
        return WorkerJob(role=role, model_dir=str(folder), task="causal-lm", trust_remote_code=False, dtype="bfloat16", device="cpu",
                         modes=modes, warmup_runs=1, latency_runs=4, result_path=str(tmp_path / f"unused_{role}.json"))

    timing = TimingJob(models=[job("base", tiny_qwen2), job("quantized", quantized_qwen2)], result_path=str(tmp_path / "timing.json"))
    seen: list = []
    result = run_worker(timing, tmp_path, tmp_path / "timing.log", seen.append)
    assert [m.role for m in result.models] == ["base", "quantized"] and not any(m.load_error for m in result.models)
    for i, name in enumerate(["greedy", "batch"]):
        runs = {m.role: m.modes[i] for m in result.models}
        assert all(len(r.latencies_s) == 4 and r.error is None and r.new_tokens > 0 for r in runs.values())
        calls = sorted((start, role) for role, r in runs.items() for start in r.starts_s)
        assert [role for _, role in calls] == ["base", "quantized", "quantized", "base"] * 2  # ABBA: neither always goes first
    assert [(p.step, p.item) for p in seen] == [("load", "base"), ("load", "quantized"), ("timing", "greedy"), ("timing", "batch")]


def test_latency_separate_times_each_model_in_its_own_worker(tiny_qwen2, quantized_qwen2, tmp_path, write_recipe):
    from hubpub.events import StepStarted
    from hubpub.validate import validate

    out = copy_output(quantized_qwen2, tmp_path / "out")
    validate_section = FAST.replace("latency_runs = 1", 'latency_runs = 3\nlatency = "separate"')
    recipe = load_recipe(write_recipe(recipe_text(tiny_qwen2, out, '[[validate.modes]]\nname = "greedy"\nprompt = "The function returns"\n',
                                                  validate=validate_section)))
    events: list = []
    metrics = validate(recipe, events=events.append).metrics
    assert [e.step for e in events if isinstance(e, StepStarted)] == ["load (quantized)", "modes (quantized)", "load (base)", "modes (base)"]
    for m in (metrics.quantized, metrics.base):
        assert m.latency_timing == "separate" and m.latency_runs == 3 and m.latency_interval is not None
        assert m.latency_interval[0] <= m.latency_s <= m.latency_interval[1]
    assert all(len(r.latencies_s) == 3 for r in metrics.modes)
