"""The eval-kind registry and the typed worker protocol: recipe union built from the registry,
field errors with the right line, plugins adding kinds and gates, jobs that round-trip typed."""

from __future__ import annotations

import math
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from hubpub.artifacts import EvalResult, MetricInfo
from hubpub.errors import RecipeError
from hubpub.recipe import EvalEntry, load_recipe
from hubpub.validate.evals import GateSpec, bootstrap, eval_kinds
from hubpub.validate.protocol import EvalJob, GenerateArgs, ModeJob, WorkerJob


def test_builtin_kinds_and_their_gates():
    assert eval_kinds.names() == ["grounding", "kl", "lm_eval", "perplexity", "similarity"]
    gates = {g.name: kind.name for kind in eval_kinds for g in kind.gates}
    # the recipe gate names of earlier releases still exist, now declared by their kinds
    assert {"max_ppl_increase", "max_kl", "min_top1_agreement", "min_similarity", "max_iou_drop", "min_recovery"} <= set(gates)
    for kind in eval_kinds:
        assert issubclass(kind.Entry, EvalEntry) and kind.Entry.model_fields["kind"].annotation == Literal[kind.name]
        assert all(isinstance(info, MetricInfo) for info in kind.metrics.values())


def test_a_field_error_in_the_second_eval_names_its_own_line(write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n\n[[eval]]\nkind = "kl"\nfile = "builtin:pydoc"\nseqlen = 64\n\n'
                        '[[eval]]\nkind = "perplexity"\nfile = "builtin:pydoc"\nseqlen = 2\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:12: eval[1].seqlen: must be >= 8 (got 2)"


def test_unknown_eval_field_suggests_the_kinds_own_fields(write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n[[eval]]\nkind = "grounding"\nimage = 4\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:5: eval[0].image: unknown field; did you mean 'images'?"


def test_empty_similarity_prompt_set_is_an_error(write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n[[eval]]\nkind = "similarity"\nprompts = ["  "]\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == (f"{path}:5: eval[0].prompts: lists no prompt; add prompts, or leave the field out to use"
                               " the modes' prompts")


class EchoEntry(EvalEntry):
    kind: Literal["echo_len"]
    words: int = 3


class EchoJob(BaseModel):
    words: int


class EchoOutput(BaseModel):
    lengths: list[int]


class EchoKind:
    """A third-party kind: one class, registered; no edit to hubpub."""

    name = "echo_len"
    display_name = "Echo length"
    reference_url = "https://example.org"
    Entry, Job, Output = EchoEntry, EchoJob, EchoOutput
    metrics = {"words": MetricInfo(label="Words", digits=0)}
    gates = (GateSpec(name="min_echo_words", metric="words", direction="min", bounds=(0.0, math.inf)),)

    def prepare(self, entry: EchoEntry, ctx: Any) -> EchoJob:
        return EchoJob(words=entry.words)

    def steps(self, job: EchoJob) -> int:
        return 1

    def run(self, job: EchoJob, model: Any) -> EchoOutput:
        return EchoOutput(lengths=[job.words])

    def score(self, entry: EchoEntry, job: EchoJob, outputs: dict[str, EchoOutput], ctx: Any) -> EvalResult:
        return EvalResult(name=entry.label, kind=self.name, metrics={"words": {"quantized": outputs["quantized"].lengths[0]}})


def test_a_registered_kind_joins_the_recipe_union_and_its_gate(write_recipe):
    eval_kinds.register(EchoKind, origin="plugin test-echo")
    try:
        path = write_recipe('[model]\nsource = "org/m"\n[validate.gates]\nmin_echo_words = 2\n[[eval]]\nkind = "echo_len"\nwords = 5\n')
        recipe = load_recipe(path)
        (entry,) = recipe.evals
        assert isinstance(entry, EchoEntry) and entry.words == 5
        assert recipe.validate.gates.configured() == {"min_echo_words": 2.0}
        # the kind's Job crosses the process boundary as JSON and comes back typed
        job = EvalJob(index=0, kind="echo_len", label="echo", spec=EchoJob(words=5))
        again = EvalJob.model_validate_json(job.model_dump_json())
        assert isinstance(again.spec, EchoJob) and again.spec.words == 5
    finally:
        eval_kinds.unregister("echo_len")
    path = write_recipe('[model]\nsource = "org/m"\n[[eval]]\nkind = "echo_len"\n')
    with pytest.raises(RecipeError) as info:  # uninstalled: the union is rebuilt without it
        load_recipe(path)
    assert str(info.value).startswith(f"{path}:4: eval[0].kind: unknown eval kind 'echo_len'")
    assert "unknown eval kind 'echo_len'" in str(info.value) and "(installed: grounding, kl, lm_eval, perplexity, similarity)" in str(info.value)


def test_worker_job_round_trips_typed():
    mode = ModeJob(name="greedy", prompt=[{"role": "user", "content": "hi"}], generate=GenerateArgs(max_new_tokens=4))
    job = WorkerJob(role="base", model_dir="/m", task="causal-lm", trust_remote_code=False, dtype="bfloat16", device="cpu",
                    modes=[mode], warmup_runs=0, latency_runs=1, result_path="/r.json")
    again = WorkerJob.model_validate_json(job.model_dump_json())
    assert again == job and again.modes[0].is_chat and again.modes[0].generate.kwargs() == {"max_new_tokens": 4}
    with pytest.raises(ValueError):
        WorkerJob.model_validate({**job.model_dump(), "surprise": 1})  # no untyped keys cross the boundary


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.0, 1.0] * 10
    a = bootstrap(lambda idx: sum(values[i] for i in idx) / len(idx), len(values), seed=3)
    b = bootstrap(lambda idx: sum(values[i] for i in idx) / len(idx), len(values), seed=3)
    assert a == b and a[0] < 0.5 < a[1]
    assert bootstrap(lambda idx: 1.0, 1) is None  # one item: no interval


def test_evals_refuse_to_compare_models_that_tokenized_the_text_differently():
    """A GGUF release carries its own tokenizer: if it splits the eval text differently from the
    base's, per-token perplexity and KL would silently compare different tokens."""
    from hubpub.errors import ValidateError
    from hubpub.validate.evals.perplexity import WindowNLL, perplexity_result

    base = WindowNLL(nll=[10.0], tokens=[31], ids_sha256="a" * 64)
    with pytest.raises(ValidateError, match=r"^ppl: the base and the quantized model tokenized the eval text differently"):
        perplexity_result("ppl", "perplexity", base, WindowNLL(nll=[11.0], tokens=[31], ids_sha256="b" * 64), seed=0)
    same = perplexity_result("ppl", "perplexity", base, WindowNLL(nll=[11.0], tokens=[31], ids_sha256="a" * 64), seed=0)
    assert same.metrics["perplexity"]["quantized"] > same.metrics["perplexity"]["base"]
