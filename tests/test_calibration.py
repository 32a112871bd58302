"""[quantize] calibration sources: the one-corpus string form and the list of sources (local
.jsonl / .txt / .parquet files, dataset folders read through `datasets`, builtin:pydoc, hf:),
their sample split, preflight errors and what the manifest records. Real tokenizer, real
datasets / pyarrow, real AutoRound; offline (conftest sets HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.artifacts import MANIFEST, Manifest
from hubpub.calibration import allocate, build_calibration, entries
from hubpub.check import check_recipe
from hubpub.cli import cli
from hubpub.errors import QuantizeError
from hubpub.recipe import load_recipe

SEQ = 'seqlen = 16\ngroup_size = 32\n'


def words(marker: str, n: int = 60) -> str:
    return " ".join([marker] * n)


@pytest.fixture(scope="module")
def tokenizer(tiny_qwen2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen2)


@pytest.fixture
def corpora(tmp_path):
    """One local source of every kind, each text made of its own marker word."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "chat.jsonl").write_text("".join(json.dumps({"msg": words("zebra"), "id": i}) + "\n" for i in range(3)))
    pq.write_table(pa.table({"content": [words("quokka")] * 3, "n": [1, 2, 3]}), tmp_path / "notes.parquet")
    datasets.Dataset.from_dict({"text": [words("walrus")] * 3}).save_to_disk(str(tmp_path / "saved"))
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text(json.dumps({"body": words("narwhal")}) + "\n")
    (files / "test.jsonl").write_text("".join(json.dumps({"body": words("axolotl")}) + "\n" for _ in range(3)))
    return tmp_path


def recipe_at(write_recipe, model: Path | str, quantize: str, out: Path | None = None):
    head = f'output_dir = "{out}"\n' if out else ""
    return write_recipe(f'{head}[model]\nsource = "{model}"\n[quantize]\n{quantize}')


def test_one_source_list_gives_the_same_chunks_as_the_string_form(tiny_qwen2, tokenizer, write_recipe):
    old = build_calibration(load_recipe(recipe_at(write_recipe, tiny_qwen2, SEQ + 'nsamples = 3\n', None)), tokenizer)
    new = build_calibration(load_recipe(recipe_at(write_recipe, tiny_qwen2, SEQ + 'nsamples = 3\ncalibration = [{ source = "builtin:pydoc" }]\n')), tokenizer)
    assert len(old.texts) == 3 and new.texts == old.texts and new.total_tokens == old.total_tokens
    assert old.sources == [{"kind": "builtin", "name": "builtin:pydoc", "samples": 3, "requested": 3, "tokens": old.total_tokens}]


def test_every_local_kind_feeds_its_share_in_order(tiny_qwen2, tokenizer, corpora, write_recipe):
    path = recipe_at(write_recipe, tiny_qwen2, SEQ + (
        'calibration = [\n'
        '  { source = "builtin:pydoc", samples = 1 },\n'
        '  { source = "chat.jsonl", samples = 2, column = "msg" },\n'
        '  { source = "notes.parquet", samples = 1, column = "content" },\n'
        '  { source = "saved", samples = 1 },\n'
        '  { source = "files", samples = 2, column = "body", split = "test", streaming = true },\n'
        ']\n'))
    cal = build_calibration(load_recipe(path), tokenizer)
    markers = [None, "zebra", "zebra", "quokka", "walrus", "axolotl", "axolotl"]
    assert len(cal.texts) == len(markers)
    for text, marker in zip(cal.texts, markers):
        others = {"zebra", "quokka", "walrus", "axolotl", "narwhal"} - {marker}
        assert (marker is None or marker in text) and not any(o in text for o in others), text
        assert len(tokenizer(text)["input_ids"]) >= 16
    rec = {r["name"]: r for r in cal.sources}
    assert [r["samples"] for r in cal.sources] == [1, 2, 1, 1, 2]
    assert rec["chat.jsonl"]["sha256"] == hashlib.sha256((corpora / "chat.jsonl").read_bytes()).hexdigest()
    assert rec["notes.parquet"]["kind"] == "parquet" and rec["notes.parquet"]["column"] == "content"
    assert rec["files"] == {**rec["files"], "kind": "folder", "split": "test", "streaming": True}
    assert len(rec["saved"]["sha256"]) == 64


def test_weights_share_nsamples_after_the_fixed_counts(tiny_qwen2, write_recipe):
    def split(nsamples: int, sources: str) -> list[int]:
        recipe = load_recipe(recipe_at(write_recipe, tiny_qwen2, f'nsamples = {nsamples}\ncalibration = [{sources}]\n'))
        return allocate(recipe, entries(recipe))

    assert split(10, '{ source = "a.txt", weight = 0.3 }, { source = "b.txt", weight = 0.7 }') == [3, 7]
    assert split(10, '{ source = "a.txt", samples = 4 }, { source = "b.txt", weight = 2.0 }, { source = "c.txt" }') == [4, 4, 2]
    assert split(128, '{ source = "a.txt", samples = 4 }, { source = "b.txt", samples = 4 }') == [4, 4]  # nsamples not read
    with pytest.raises(QuantizeError, match=r"quantize.calibration\[1\].weight: quantize.nsamples = 4 minus the fixed samples \(4\) leaves 0"):
        split(4, '{ source = "a.txt", samples = 4 }, { source = "b.txt", weight = 1.0 }')


@pytest.mark.parametrize("sources, field, message", [
    ('{ source = "chat.jsonl", column = "body" }', "quantize.calibration[0].column",
     "'body' is not a column of chat.jsonl; its columns: msg, id; set column to one of them"),
    ('{ source = "notes.parquet" }', "quantize.calibration[0].column",
     "'text' is not a column of notes.parquet; its columns: content, n; set column to one of them"),
    ('{ source = "builtin:pydoc" }, { source = "hf:nobody/no-such-dataset", split = "train" }', "quantize.calibration[1].source",
     "hf:nobody/no-such-dataset is not in the local datasets cache and HF_HUB_OFFLINE=1; load it once online (unset HF_HUB_OFFLINE)"
     " or use a local .jsonl / .parquet file or dataset folder"),
    ('{ source = "absent.parquet" }', "quantize.calibration[0].source", "{dir}/absent.parquet not found; fix the path (relative paths start at the recipe's folder)"),
    ('{ source = "chat.jsonl", column = "msg" }, { source = "nowhere" }', "quantize.calibration[1].source", "{dir}/nowhere not found; fix the path (relative paths start at the recipe's folder)"),
])
def test_check_finds_bad_sources_without_the_model(sources, field, message, corpora, write_recipe):
    path = write_recipe(f'[model]\nsource = "org/m"\n[quantize]\ngroup_size = 32\n\ncalibration = [{sources}]\n')
    problems = [str(p) for p in check_recipe(path, model=False) if p.field.startswith("quantize.calibration")]
    assert problems == [f"{path}:6: {field}: {message.format(dir=corpora)}"]


def test_rtn_reads_no_calibration_source(write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n[quantize]\nmethod = "rtn"\ngroup_size = 32\ncalibration = [{ source = "hf:nobody/none" }]\n')
    assert [p for p in check_recipe(path, model=False) if p.field.startswith("quantize.calibration")] == []


def test_quantize_refuses_an_uncached_hub_dataset_offline_before_loading(tiny_qwen2, tmp_path, write_recipe):
    out = tmp_path / "out"
    path = recipe_at(write_recipe, tiny_qwen2, SEQ + '[[quantize.calibration]]\nsource = "builtin:pydoc"\n'
                     '[[quantize.calibration]]\nsource = "hf:nobody/no-such-dataset"\nrevision = "main"\n', out)
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-progress"])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}:10: quantize.calibration[1].source: hf:nobody/no-such-dataset is not in the local datasets"
                             " cache and HF_HUB_OFFLINE=1; load it once online (unset HF_HUB_OFFLINE) or use a local .jsonl / .parquet"
                             " file or dataset folder\n")
    assert not out.exists()


def test_missing_dataset_column_stops_before_tuning(tiny_qwen2, corpora, write_recipe):
    out = corpora / "out"
    path = recipe_at(write_recipe, tiny_qwen2, SEQ + 'calibration = [{ source = "saved", column = "prompt" }]\n', out)
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-progress"])
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}:7: quantize.calibration[0].column: 'prompt' is not a column of saved; its columns: text;"
                             " set column to one of them\n")
    assert not out.exists()


def test_autoround_run_records_the_sources_in_the_manifest(tiny_qwen2, corpora, write_recipe):
    out = corpora / "out"
    path = recipe_at(write_recipe, tiny_qwen2, 'iters = 1\nbatch_size = 2\n' + SEQ + (
        'calibration = [{ source = "builtin:pydoc", samples = 1 }, { source = "chat.jsonl", column = "msg", samples = 1 }]\n'), out)
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out / MANIFEST)
    assert manifest.nsamples == 2 and manifest.iters == 1
    assert [(s["kind"], s["name"], s["samples"]) for s in manifest.calibration_sources] == [("builtin", "builtin:pydoc", 1), ("jsonl", "chat.jsonl", 1)]
    assert manifest.calibration_sources[1]["sha256"] == hashlib.sha256((corpora / "chat.jsonl").read_bytes()).hexdigest()
    coverage = manifest.calibration_coverage
    assert coverage["unreached"] == [] and sum(g["linears"] for g in coverage["groups"].values()) == manifest.linears_quantized
    for group in coverage["groups"].values():  # every calibration token reached every quantized linear
        assert group["reached"] == group["linears"] and group["tokens_min"] == group["tokens_max"] == manifest.nsamples * manifest.seqlen


def test_rtn_reads_no_source_and_counts_no_coverage(tiny_qwen2, tmp_path, write_recipe):
    out = tmp_path / "out"
    path = recipe_at(write_recipe, tiny_qwen2, 'method = "rtn"\n' + SEQ + 'calibration = [{ source = "hf:nobody/none" }]\n', out)
    result = CliRunner().invoke(cli, ["quantize", str(path), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = Manifest.read(out / MANIFEST)
    assert manifest.calibration_coverage is None and manifest.calibration_sources == [] and manifest.nsamples == 0


def test_a_linear_no_token_is_routed_to_is_reported_unreached():
    import torch

    from hubpub.calibration.coverage import CoverageCounter, unreached_notice

    class Routed(torch.nn.Module):  # understanding rows go through und, generation rows through gen
        def __init__(self):
            super().__init__()
            self.und, self.gen = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x, is_gen):
            out = torch.zeros_like(x)
            out[~is_gen] = self.und(x[~is_gen])
            out[is_gen] = self.gen(x[is_gen])
            return out

    model = Routed()
    x = torch.randn(2, 5, 8)
    with CoverageCounter(model, ["und", "gen"], first_calls=1) as cov:
        model(x, torch.zeros(2, 5, dtype=torch.bool))  # text only
        model(x, torch.ones(2, 5, dtype=torch.bool))  # a later call (tuning re-runs) is not counted as tokens
    report = cov.report()
    assert report["groups"]["und"]["tokens_max"] == 10 and report["groups"]["gen"]["tokens_max"] == 0
    assert report["unreached"] == ["gen"] and report["groups"]["gen"]["calls"] == 2
    assert unreached_notice(report["unreached"]).startswith("1 quantized linear(s) saw no calibration data (quantized as plain RTN): gen;")
