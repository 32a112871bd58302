"""validate's pure parts, with exact numbers: box/point parsing, IoU, output checks, similarity, KL."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from hubpub.recipe import Expect
from hubpub.validate import grounding
from hubpub.validate.evals import grounding as grounding_eval
from hubpub.validate.evals import kl, similarity
from hubpub.validate.modes import check_output


def test_iou_of_known_boxes():
    assert grounding.iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    # 5x5 overlap of two 10x10 boxes: 25 / (100 + 100 - 25)
    assert grounding.iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    # one box inside another: 4x4 / 10x10
    assert grounding.iou((0, 0, 10, 10), (3, 3, 7, 7)) == pytest.approx(0.16)
    assert grounding.iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0  # touching corners
    assert grounding.iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # degenerate, no division by zero


def test_parse_boxes_and_points_on_the_0_1000_scale():
    text = "found <box>100,200,300,400</box> and <box>[10, 20, 30, 40]</box>, bad <box>500,0,100,10</box> <box>1,2,3</box>"
    assert grounding.parse_boxes(text) == [(100.0, 200.0, 300.0, 400.0), (10.0, 20.0, 30.0, 40.0)]
    assert grounding.parse_points("<point>500,250</point> <point>(7, 8)</point> <point>1200,5</point>") == [(500.0, 250.0), (7.0, 8.0)]
    assert grounding.to_pixels((100, 200, 300, 400), 448, 224) == pytest.approx((44.8, 44.8, 134.4, 89.6))


def test_synthetic_benchmark_is_reproducible_and_boxes_hold_the_ink():
    a = grounding.make_benchmark(["square", "circle", "K"], images=3, size=128, seed=7)
    b = grounding.make_benchmark(["square", "circle", "K"], images=3, size=128, seed=7)
    assert [[(o.label, o.box) for o in s.objects] for s in a] == [[(o.label, o.box) for o in s.objects] for s in b]
    for scene in a:
        for obj in scene.objects:
            x1, y1, x2, y2 = (int(v) for v in obj.box)
            crop = np.asarray(scene.image.crop((x1, y1, x2, y2)))
            assert (crop < 200).any(), f"no ink inside the true box of {obj.label}"  # the object is where its box says


def test_check_output_names_the_failure():
    assert check_output("hello", Expect()) is None
    assert check_output("  ", Expect()) == "empty output"
    assert check_output("bad \ufffd byte", Expect()) == "contains U+FFFD (broken UTF-8 bytes)"
    assert check_output("abc", Expect(regex=r"^\d+$")) == r"does not match /^\d+$/"
    assert check_output('{"a": 1}', Expect(json=True)) is None
    assert check_output("{a: 1}", Expect(json=True)).startswith("not JSON (")
    assert check_output("<box>1,2,3,4</box>", Expect(boxes=2)) == "1 valid <box>x1,y1,x2,y2</box> found, 2 expected"
    assert check_output("<point>1,2</point>", Expect(points=1)) is None


def test_text_similarity_exact_numbers():
    assert similarity.text_similarity(["a b c"], ["a b c"]) == {
        "exact_match": 1.0, "char_similarity": 1.0, "difflib_ratio": 1.0, "word_jaccard": 1.0, "flips": 0.0}
    sims = similarity.text_similarity(["kitten sat"], ["sitting sat"])
    assert sims["exact_match"] == 0.0
    assert sims["char_similarity"] == pytest.approx(1 - 3 / 11)  # kitten -> sitting: 3 edits
    assert sims["word_jaccard"] == pytest.approx(1 / 3)  # {sat} of {kitten, sitting, sat}
    assert sims["flips"] == 1.0  # the answer starts with another word
    assert similarity.levenshtein("flaw", "lawn") == 2


def test_empty_outputs_are_failures_never_matches():
    # two models that both answer only newlines have NOT produced the same answer
    both_empty = similarity.text_similarity(["\n\n", "  "], ["\n", ""])
    assert both_empty == {"exact_match": 0.0, "char_similarity": 0.0, "difflib_ratio": 0.0, "word_jaccard": 0.0, "flips": 1.0}
    one_empty = similarity.text_similarity(["a b", "c d"], ["a b", " "])
    assert one_empty["exact_match"] == 0.5 and one_empty["difflib_ratio"] == 0.5 and one_empty["flips"] == 0.5


def test_kl_stats_zero_for_identical_and_positive_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11))
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert kl.kl_stats(lp, lp) == {"kl": 0.0, "top1_agreement": 1.0}
    shifted = lp[..., ::-1].copy()
    stats = kl.kl_stats(lp, shifted)
    assert stats["kl"] > 0.1 and stats["top1_agreement"] < 0.5
    # KL of two known two-way distributions
    p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    assert kl.kl_stats(p, q)["kl"] == pytest.approx(0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1))


def test_score_grounding_uses_the_first_box_and_counts_unparsed_as_zero(tmp_path):
    entry = grounding_eval.GroundingEntry(kind="grounding", images=2, image_size=100, classes=["square"], seed=1)
    bench = grounding_eval.build_grounding(entry, tmp_path, "{target}")
    assert len(bench.items) == 4 and all(item.prompt.startswith("the ") for item in bench.items)
    perfect = []
    for _, obj in bench.truth:
        x1, y1, x2, y2 = (v * 10 for v in obj.box)  # 100 px image -> 0-1000 scale
        perfect.append(f"<box>{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}</box>")
    scores = grounding_eval.score_grounding(bench, perfect[:3] + ["no box here"])
    assert scores["ious"][:3] == [1.0, 1.0, 1.0] and scores["ious"][3] == 0.0
    assert scores["mean_iou"] == 0.75 and scores["iou@0.5"] == 0.75 and scores["parsed"] == 0.75
    saved = grounding_eval.save_annotated(bench, {"quantized": scores["predicted"], "base": scores["predicted"][:1]}, tmp_path / "assets", "g")
    assert [p.name for p in saved] == ["g_00.png", "g_01.png"]
    from PIL import Image

    pixels = set(Image.open(saved[0]).convert("RGB").getdata())
    assert (0, 170, 0) in pixels and (220, 0, 0) in pixels  # green truth and red (quantized) prediction drawn
    assert (30, 90, 230) not in pixels  # the base box coincides with truth and quantized here: drawn over
    rows = grounding_eval.per_class_rows(bench, {"base": scores["ious"], "quantized": scores["ious"]})
    assert [r["class"] for r in rows] == ["square"]  # one class: no group total to add


def test_make_scene_places_objects_without_overlap():
    scene = grounding.make_scene(["square", "circle", "triangle"], 256, random.Random(3), count=3)
    boxes = [o.box for o in scene.objects]
    assert all(grounding.iou(a, b) == 0.0 for i, a in enumerate(boxes) for b in boxes[i + 1:])


# ----------------------------------------------------------------------------- lm_eval: the per-task recovery gate
def _lm_eval_scored(tmp_path, write_recipe, gates: str):
    from hubpub.recipe import load_recipe
    from hubpub.validate.evals import ScoreContext
    from hubpub.validate.evals.lm_eval import LMEval, LMEvalJob, LMEvalOutput, TaskScore
    from hubpub.validate.stage import check_gates

    recipe = load_recipe(write_recipe(f'[model]\nsource = "org/m"\n[validate.gates]\n{gates}\n'
                                      '[[eval]]\nkind = "lm_eval"\nname = "benchmarks"\ntasks = ["arc_easy", "hellaswag", "piqa"]\n'))
    # the same three tasks on both models; hellaswag's acc_norm loses 10 %, piqa collapses to 0 (0 % recovered, not "unknown")
    base = [TaskScore(task="arc_easy", metric="acc", value=0.80, stderr=0.01), TaskScore(task="hellaswag", metric="acc_norm", value=0.50, stderr=0.02),
            TaskScore(task="piqa", metric="acc", value=0.60, stderr=0.02)]
    quant = [TaskScore(task="arc_easy", metric="acc", value=0.79, stderr=0.01), TaskScore(task="hellaswag", metric="acc_norm", value=0.45, stderr=0.02),
             TaskScore(task="piqa", metric="acc", value=0.0, stderr=0.0)]
    entry = recipe.evals[0]
    ctx = ScoreContext(recipe=recipe, index=0, assets=tmp_path / "assets", stem="lm_eval", work=tmp_path)
    result = LMEval().score(entry, LMEvalJob(tasks=entry.tasks), {"base": LMEvalOutput(scores=base), "quantized": LMEvalOutput(scores=quant)}, ctx)
    return result, check_gates(recipe, {"base": [], "quantized": []}, [result])


def test_min_recovery_is_per_task_and_names_every_task_below_it(tmp_path, write_recipe):
    result, gates = _lm_eval_scored(tmp_path, write_recipe, "min_recovery = 0.95\nmin_mean_recovery = 0.5")
    assert [t["recovery"] for t in result.details["table"]] == pytest.approx([0.79 / 0.80, 0.9, 0.0])
    assert result.metrics["recovery"]["quantized"] == pytest.approx((0.79 / 0.80 + 0.9 + 0.0) / 3)
    assert result.metrics["min_task_recovery"]["quantized"] == 0.0
    per_task, mean = (g for g in gates if g.name != "min_validity")
    assert (per_task.name, per_task.value, per_task.passed, per_task.failing) == ("min_recovery", 0.0, False, ["hellaswag acc_norm", "piqa acc"])
    assert per_task.note == "below the limit: hellaswag acc_norm 90.0 %, piqa acc 0.0 % (from benchmarks)"
    assert (mean.name, mean.passed) == ("min_mean_recovery", True) and mean.value == pytest.approx(0.6292, abs=1e-4)
    # the card's table marks the failing rows, and only those
    assert [t["below"] for t in result.details["table"]] == [[], ["min_recovery"], ["min_recovery"]]


def test_min_recovery_passing_names_the_worst_task_and_row_marks_follow_the_limit(tmp_path, write_recipe):
    result, gates = _lm_eval_scored(tmp_path, write_recipe, "min_recovery = 0.0")
    gate = gates[-1]
    assert gate.passed and gate.vacuous and gate.failing == []  # 0 cannot fail, and is reported as such
    assert gate.note == "every one of 3 within the limit; worst piqa acc 0.0 % (from benchmarks)"
    assert all(t["below"] == [] for t in result.details["table"])


def test_a_failing_task_is_marked_in_the_cards_lm_eval_table(tmp_path, write_recipe):
    import card_fixtures as fx

    from hubpub.artifacts import METRICS, Metrics
    from hubpub.card import render_card
    from hubpub.recipe import load_recipe

    scored, gates = _lm_eval_scored(tmp_path / "scored", write_recipe, "min_recovery = 0.95")
    recipe_path = fx.causal_release(tmp_path / "release")
    metrics = Metrics.read(tmp_path / "release" / "out" / METRICS)
    metrics.evals.append(scored)
    metrics.gates += [g for g in gates if g.name == "min_recovery"]
    metrics.passed = False
    metrics.write(tmp_path / "release" / "out" / METRICS)
    text = render_card(load_recipe(recipe_path)).text
    assert "| `hellaswag` | acc_norm | 0.5000 | 0.4500 | 90.0 % **below** `min_recovery` |" in text
    assert "| `arc_easy` | acc | 0.8000 | 0.7900 | 98.8 % |" in text
    assert "below the limit: hellaswag acc_norm 90.0 %, piqa acc 0.0 % (from benchmarks)" in text


# ----------------------------------------------------------------------------- latency claims in the card
def _card_with_latency(tmp_path, base_ci, quant_ci, timing="interleaved"):
    import card_fixtures as fx

    from hubpub.artifacts import METRICS, Metrics
    from hubpub.card import render_card
    from hubpub.recipe import load_recipe

    recipe_path = fx.causal_release(tmp_path)
    path = tmp_path / "out" / METRICS
    metrics = Metrics.read(path)
    metrics.base = metrics.base.model_copy(update={"latency_s": 1.0, "latency_interval": base_ci, "latency_timing": timing})
    metrics.quantized = metrics.quantized.model_copy(update={"latency_s": 0.8, "latency_interval": quant_ci, "latency_timing": timing})
    metrics.write(path)
    return render_card(load_recipe(recipe_path)).text


def test_card_never_calls_overlapping_latencies_a_speed_up(tmp_path):
    text = _card_with_latency(tmp_path, (0.9, 1.2), (0.7, 0.95))  # 20 % faster by the medians, but the intervals overlap
    assert "Speed: no measurable speed difference: the latency intervals overlap." in text
    assert "| Latency (median per call) | 1.00 s | 0.80 s | -20.0 % (within noise) |" in text
    assert "faster" not in text and "slower" not in text and "speed-up" not in text
    assert ("Timing: base and quantized were timed in one process, their calls of each mode alternating (ABBA),"
            " so both ran in the same conditions.") in text
    assert "| `chat` |" in text.split("Latency per call (median, min–max)")[1]  # the per-mode latency table


def test_card_claims_a_speed_difference_only_when_intervals_are_apart(tmp_path):
    text = _card_with_latency(tmp_path, (0.95, 1.1), (0.7, 0.85), timing="separate")
    assert "Speed: the quantized model is faster (-20.0 % per call, interval [" in text
    assert "(within noise)" not in text.split("## TL;DR")[1].split("##")[0]
    assert "Timing: each model was timed in its own process, one after the other" in text


def test_latency_setting_is_checked_with_its_line(write_recipe):
    from hubpub.errors import RecipeError
    from hubpub.recipe import load_recipe

    assert load_recipe(write_recipe('[model]\nsource = "org/m"\n')).validate.latency == "interleaved"  # the default
    path = write_recipe('[model]\nsource = "org/m"\n[validate]\nlatency = "fast"\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:4: validate.latency: must be 'interleaved' or 'separate' (got 'fast')"


def test_abba_order_alternates_who_goes_first():
    from hubpub.validate.worker import abba

    assert abba(4, ["base", "quantized"]) == [["base", "quantized"], ["quantized", "base"], ["base", "quantized"], ["quantized", "base"]]
    assert abba(1, ["base", "quantized"]) == [["base", "quantized"]]
