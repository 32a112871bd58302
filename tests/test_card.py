"""The card stage: golden cards, front matter, numbers, plots, history, determinism, speed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import card_fixtures as fx
from hubpub.artifacts import MANIFEST, METRICS, RECIPE_COPY, Metrics
from hubpub.card import PreviousRelease, compare_releases, render_card
from hubpub.recipe import load_recipe

GOLDEN = Path(__file__).parent / "golden"
RELEASES = {"causal": fx.causal_release, "vlm": fx.vlm_release, "v2": fx.v2_release, "lm_eval": fx.lm_eval_release}


def render(kind: str, root: Path, **kwargs):
    recipe = load_recipe(RELEASES[kind](root))
    return recipe, render_card(recipe, **kwargs)


@pytest.mark.parametrize("kind", sorted(RELEASES))
def test_card_matches_golden(kind, tmp_path):
    _, result = render(kind, tmp_path)
    golden = GOLDEN / f"card_{kind}.md"
    if os.environ.get("HUBPUB_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(result.text, encoding="utf-8")
    assert result.path.read_text(encoding="utf-8") == result.text
    assert result.text == golden.read_text(encoding="utf-8"), f"card differs from {golden}; HUBPUB_UPDATE_GOLDEN=1 rewrites it"


def test_front_matter_round_trips_through_huggingface_hub(tmp_path):
    from huggingface_hub import ModelCard, ModelCardData

    _, result = render("vlm", tmp_path)
    card = ModelCard(result.text)
    data = card.data.to_dict()
    assert data == result.front_matter
    assert data["base_model"] == "example-org/LocateAnything-3B"
    assert data["base_model_relation"] == "quantized"
    # license "other" inherited from the base model's own card, with its name and link
    assert (data["license"], data["license_name"]) == ("other", "qwen-research")
    assert data["tags"] == ["autoround", "4-bit", "hubpub", "grounding"]  # one tag per concept: not also auto_round
    again = ModelCardData(**data)
    assert again.to_dict() == data
    # model-index holds this model's numbers only, never the base model's
    results = {r.metric_type: r.metric_value for r in again.eval_results}
    assert results == {"mean_iou": 0.8015, "iou@0.5": 0.875}
    assert again.model_name == "LocateAnything-3B-AutoRound-W4A16"  # this model's name, not the base's
    assert card.text.startswith("\n# LocateAnything-3B AutoRound W4A16\n")


def test_license_is_inherited_from_the_base_card(tmp_path):
    _, result = render("causal", tmp_path)
    assert result.front_matter["license"] == "apache-2.0"
    assert result.front_matter["language"] == ["en"]


def _tldr(text: str) -> dict[str, list[str]]:
    section = text.split("## TL;DR\n", 1)[1].strip("\n").split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def _number(text: str) -> float:
    value, _, unit = text.partition(" ")
    scale = {"GB": 1e9, "MB": 1e6, "kB": 1e3, "%": 0.01, "pts": 0.01}.get(unit, 1)
    return float(value) * scale


@pytest.mark.parametrize("kind", ["causal", "vlm"])
def test_every_tldr_number_equals_the_metrics_file(kind, tmp_path):
    _, result = render(kind, tmp_path)
    metrics = Metrics.read(tmp_path / "out" / METRICS)
    table = _tldr(result.text)
    fields = {
        "Disk size (weights)": "weight_bytes",
        ("Runtime VRAM (peak while generating)" if metrics.quantized.memory_kind.startswith("cuda") else "Runtime RAM (peak while generating)"): "peak_memory_bytes",
        ("Runtime VRAM (resident after load)" if metrics.quantized.memory_kind.startswith("cuda") else "Runtime RAM (resident after load)"): "resident_bytes",
        "Load time": "load_s",
        "Latency (median per call)": "latency_s",
        "Throughput": "tokens_per_s",
        "Output validity": "validity",
    }
    expected = {}
    for label, attr in fields.items():
        base, quant = getattr(metrics.base, attr), getattr(metrics.quantized, attr)
        if base is not None and quant is not None:
            relative = attr != "validity"
            expected[label] = (base, quant, (quant - base) / base * 100 if relative else (quant - base) * 100)
    for ev in metrics.evals:
        for name, sides in ev.metrics.items():
            info = ev.display[name]  # the eval kind says how its numbers read: no guessing from names
            base, quant = sides["base"], sides["quantized"]
            if base is None:
                delta = None
            elif info.delta == "relative":
                delta = (quant - base) / base * 100  # shown as % (the unit the max_ppl_increase gate uses)
            else:
                delta = (quant - base) * (100 if info.unit == "%" else 1)
            expected[info.label] = (base, quant, delta)
    assert set(table) == set(expected)
    for label, (base, quant, delta) in expected.items():
        shown_base, shown_quant, shown_delta = table[label]
        tolerance = 0.051 * max(abs(quant), 1e-9) if shown_quant.endswith("GB") else 0.006 * max(abs(quant), 1e-9)  # shown digits
        assert abs(_number(shown_quant) - quant) <= tolerance, label
        if base is None:
            assert shown_base == shown_delta == "—", label
            continue
        assert abs(_number(shown_base) - base) <= (0.051 if shown_base.endswith("GB") else 0.006) * abs(base), label
        assert abs(float(shown_delta.split()[0]) - delta) <= 0.051, label


def test_rendering_is_deterministic_plots_included(tmp_path):
    _, first = render("vlm", tmp_path / "a")
    _, second = render("vlm", tmp_path / "b")
    assert first.text == second.text
    assert [p.name for p in first.plots] == ["size.png", "memory.png", "latency.png"]
    for a, b in zip(first.plots, second.plots):
        png = a.read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and png == b.read_bytes()
        assert b"matplotlib" not in png.lower()  # no version/date metadata
        assert f"](assets/{a.name})" in first.text


def test_plots_off_renders_no_images(tmp_path):
    recipe = load_recipe(fx.causal_release(tmp_path, card_extra="plots = false\n"))
    result = render_card(recipe)
    assert result.plots == [] and not (tmp_path / "out" / "assets").exists()
    assert "](assets/" not in result.text


def test_history_from_file_contents(tmp_path):
    """The push stage passes the previous release's two files as text."""
    fx.v2_release(tmp_path)
    previous = PreviousRelease(
        (tmp_path / "v1" / METRICS).read_text(), (tmp_path / "v1" / RECIPE_COPY).read_text(), tag="v1"
    )
    now = Metrics.read(tmp_path / "out" / METRICS)
    history = compare_releases(previous, (tmp_path / "out" / RECIPE_COPY).read_text(), now, "v2")
    assert [(c.field, c.before, c.after) for c in history.changes] == [("quantize.group_size", "128", "64")]
    assert history.storage_text == "458.5 MB → 478.9 MB (+4.5 %)"
    rows = {r.label: (r.left_text, r.right_text, r.delta_text) for r in history.rows}
    assert rows["Perplexity"] == ("12.60", "12.49", "-0.9 %")  # relative, as the max_ppl_increase gate reads
    assert rows["Top-1 agreement"] == ("93.0 %", "94.1 %", "+1.1 pts")


def test_usage_snippets_are_valid_python_for_each_model_kind(tmp_path):
    # a custom model has no pipeline_tag of its own: the recipe names it
    recipe = load_recipe(fx.causal_release(tmp_path, card_extra='pipeline_tag = "text-generation"\n'))
    manifest_path = tmp_path / "out" / MANIFEST
    expected = {
        "causal-lm": "AutoModelForCausalLM.from_pretrained(repo, device_map=\"auto\")",
        "image-text-to-text": "AutoModelForImageTextToText.from_pretrained(repo, device_map=\"auto\")",
        "custom": "AutoModel.from_pretrained(repo, device_map=\"auto\", trust_remote_code=True)",
    }
    for task, call in expected.items():
        manifest = fx.causal_manifest()
        manifest.task = task
        manifest.trust_remote_code = task == "custom"
        manifest.write(manifest_path)
        text = render_card(recipe).text
        blocks = re.findall(r"```python\n(.*?)```", text, re.S)
        assert len(blocks) == 1 and call in blocks[0], task
        compile(blocks[0], f"usage-{task}", "exec")
    assert "trust_remote_code=True`): read the `.py` files first." in text


def test_render_does_not_import_torch(tmp_path):
    recipe = fx.causal_release(tmp_path)
    code = (
        "import sys; from hubpub.recipe import load_recipe; from hubpub.card import render_card;"
        f"render_card(load_recipe({str(recipe)!r}));"
        "heavy = sorted(m for m in ('torch', 'transformers', 'auto_round') if m in sys.modules); print(heavy)"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_lm_eval_results_table_command_and_hub_eval_results(tmp_path):
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub._eval_results import parse_eval_result_entries

    _, result = render("lm_eval", tmp_path)
    text = result.text
    assert "| `arc_easy` | acc | 0.7412 | 0.7336 | 99.0 % | 0.0090 / 0.0091 |" in text
    assert "```bash\nlm_eval --model hf --model_args pretrained=hubpub-demo/" in text
    # the gate reads as a percentage, as it is defined (every task's recovery >= 97 %), names the task
    # below it, marks its row, and agrees with the verdict
    assert "| `min_recovery` | ≥ 97.0 % | 92.3 % | FAIL | below the limit: hubpub_tiny_mc acc 92.3 % (from benchmarks) |" in text
    assert "| `hubpub_tiny_mc` | acc | 0.8125 | 0.7500 | 92.3 % **below** `min_recovery` | 0.1008 / 0.1118 |" in text
    assert "it FAILED 1 of 2 quality gates: min_recovery = 92.3 % (limit 97.0 %)" in text
    # .eval_results: only the Hub benchmark (arc_easy), never the local task; read back by huggingface_hub itself
    files = sorted(p.name for p in (tmp_path / "out" / ".eval_results").iterdir())
    assert files == ["arc_easy_acc.yaml"]
    entries = parse_eval_result_entries(yaml.safe_load((tmp_path / "out" / ".eval_results" / "arc_easy_acc.yaml").read_text()))
    assert [(e.dataset_id, e.task_id, e.value) for e in entries] == [("allenai/ai2_arc", "ARC-Easy", 0.7336)]
    assert "limit=200" in entries[0].notes and entries[0].source_url.endswith("lm-evaluation-harness")
    # model-index: this model's task scores, each once, with their source
    card = ModelCard(text)
    got = [(r.dataset_type, r.metric_type, r.metric_value) for r in card.data.eval_results]
    assert ("allenai/ai2_arc", "acc", 0.7336) in got and ("json", "acc", 0.75) in got
    assert len(got) == len(set((d, m) for d, m, _ in got))
