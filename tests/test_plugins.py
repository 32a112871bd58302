"""Third-party kinds through entry points: a release made with a plugin backend, a plugin eval
kind and a plugin stage (tests/plugins/hubpub_plugin_demo), and nothing in release.py, the CLI
or the card knows their names (issue #9)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubserver import ALICE_TOKEN, start_devhub

RECIPE = """\
output_dir = "out/plugin"

[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "demo-rtn"
note = "made by a plugin backend"
group_size = 32
nsamples = 2
seqlen = 32
device = "cpu"

[validate]
device = "cpu"
max_new_tokens = 4
warmup_runs = 0
latency_runs = 1

[validate.gates]
max_entropy_increase = 0.5

[[eval]]
kind = "demo-entropy"
prompts = ["The capital of France is", "def add(a, b):", "Once upon a time"]

[card]
base_model = "test-org/tiny-qwen2"
license = "apache-2.0"

[push]
repo_id = "alice/tiny-plugin"
tag = "v1"
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    from plugins.activate import activate, deactivate

    tmp = tmp_path_factory.mktemp("plugin")
    names = activate(tmp)
    yield names
    deactivate(tmp, names)


def test_release_with_plugin_backend_eval_kind_and_stage(plugin, tiny_qwen2, tmp_path, monkeypatch):
    from hubpub.stages import stage_names

    assert stage_names() == ["quantize", "validate", "card", "plugin-notes", "push"]
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(source=tiny_qwen2))
    hub = start_devhub(tmp_path / "hub")
    monkeypatch.setenv("HF_TOKEN", ALICE_TOKEN)
    try:
        result = CliRunner().invoke(cli, ["release", str(recipe), "--endpoint", hub.endpoint])
        assert result.exit_code == 0, result.output
        assert "plugin-notes ran in" in result.output
        out = tmp_path / "out" / "plugin"
        manifest = json.loads((out / "hubpub_manifest.json").read_text())
        assert manifest["method"] == "demo-rtn" and manifest["backend_settings"] == {"note": "made by a plugin backend"}
        card = (out / "README.md").read_text()
        assert "Demo RTN (plugin)" in card
        assert (out / "PLUGIN_NOTES.md").read_text().startswith("# Notes")
        from huggingface_hub import HfApi

        from hubpub.hub._client import hub_client

        with hub_client(hub.endpoint):
            remote = {f.path for f in HfApi(endpoint=hub.endpoint, token=ALICE_TOKEN).list_repo_tree(
                "alice/tiny-plugin", revision="v1", recursive=True)}
        assert "PLUGIN_NOTES.md" in remote
        # --from accepts the plugin's stage name; the stages before it are used as they are
        again = CliRunner().invoke(cli, ["release", str(recipe), "--from", "plugin-notes", "--no-push"])
        assert again.exit_code == 0, again.output
        assert "plugin-notes ran in" in again.output and "quantize  skipped (--from plugin-notes)" in again.output
        metrics = json.loads((out / "hubpub_metrics.json").read_text())
        (entropy,) = [e for e in metrics["evals"] if e["kind"] == "demo-entropy"]
        assert entropy["metrics"]["entropy"]["base"] > 0 and entropy["metrics"]["entropy"]["quantized"] > 0
        assert [g["name"] for g in metrics["gates"] if g["name"] == "max_entropy_increase"] == ["max_entropy_increase"]
        assert "Next-token entropy" in card
    finally:
        hub.stop()

