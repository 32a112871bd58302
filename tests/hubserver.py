"""Test helpers for push: a devhub server in a thread, and a small realistic release folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from hubpub import artifacts
from hubpub.devhub import DevHub

ALICE, ALICE_TOKEN = "alice", "hf_alice_0123456789secret"
BOB, BOB_TOKEN = "bob", "hf_bob_9876543210secret"
USERS = {ALICE: ALICE_TOKEN, BOB: BOB_TOKEN}
WEIGHT_FILES = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def start_devhub(data_dir: Path, **kwargs) -> DevHub:
    return DevHub(data_dir, USERS, **kwargs).start()


@pytest.fixture
def devhub(tmp_path):
    hub = start_devhub(tmp_path / "devhub-data")
    yield hub
    hub.stop()


def write_release(folder: Path, *, passed: bool = True, seed: int = 0) -> Path:
    """A release folder as quantize + validate + card leave it: real safetensors shards, config,
    tokenizer file, manifest, metrics, card (written last, so it is the newest) and a plot."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for index, name in enumerate(WEIGHT_FILES):
        save_file({f"model.layers.{index}.mlp.qweight": torch.randint(0, 2**31 - 1, (64, 32), generator=gen, dtype=torch.int32),
                   f"model.layers.{index}.mlp.scales": torch.rand(8, 32, generator=gen).to(torch.bfloat16)},
                  str(folder / name), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "quantization_config": {"bits": 4, "group_size": 128}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    (folder / artifacts.RECIPE_COPY).write_text('[model]\nsource = "tiny"\n')
    manifest = artifacts.Manifest(
        hubpub_version="0.1.0", recipe_hash="abc", source={"kind": "folder", "location": "tiny"}, model_name="tiny-qwen2",
        model_type="qwen2", architecture="Qwen2ForCausalLM", task="causal-lm", method="autoround", bits=4, group_size=128,
        sym=True, format="auto_round", iters=0, nsamples=8, seqlen=64, groups=[], tensors_before=10, tensors_after=12,
        linears_quantized=14, bytes_before=4 * 65536, bytes_after=65536, timings={"total": 4.0}, versions={}, device="cpu")
    manifest.write(folder / artifacts.MANIFEST)
    metrics = artifacts.Metrics(
        hubpub_version="0.1.0", recipe_hash="abc", passed=passed, environment={"device": "cpu"},
        base=artifacts.ModelMetrics(weight_bytes=4 * 65536), quantized=artifacts.ModelMetrics(weight_bytes=65536, validity=1.0),
        evals=[artifacts.EvalResult(name="perplexity", kind="perplexity", metrics={"perplexity": {"base": 12.1, "quantized": 12.6}})])
    metrics.write(folder / artifacts.METRICS)
    (folder / artifacts.ASSETS_DIR).mkdir(exist_ok=True)
    (folder / artifacts.ASSETS_DIR / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2048))
    write_card(folder, "# tiny-qwen2 W4\n\nFirst card.\n")
    return folder


def write_card(folder: Path, body: str) -> None:
    readme = folder / artifacts.CARD
    readme.write_text("---\nlicense: apache-2.0\n---\n" + body, encoding="utf-8")
    # a card written in the same clock tick as the metrics must still count as newer
    newest = max((folder / n).stat().st_mtime_ns for n in (artifacts.METRICS, artifacts.MANIFEST))
    if readme.stat().st_mtime_ns <= newest:
        os.utime(readme, ns=(newest + 1_000_000, newest + 1_000_000))


def recipe_text(repo: str = f"{ALICE}/tiny-w4", *, tag: str | None = None, extra: str = "") -> str:
    push = f'repo_id = "{repo}"\n' + (f'tag = "{tag}"\n' if tag else "") + extra
    return f'output_dir = "release"\n\n[model]\nsource = "tiny"\n\n[push]\n{push}'


def wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
