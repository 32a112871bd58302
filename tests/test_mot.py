"""A Lance-style mixture-of-transformers release (issue #10): the tiny MoT model of tests/mot_model,
quantized whole through its own class with AWQ W4 asym, both paths calibrated (text for the
understanding linears, a calibration hook's denoising calls for the ``*_moe_gen`` twins),
released v1 (group 128) then v2 (group 64) with the v1 -> v2 table read from the Hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors import safe_open

from hubpub.artifacts import MANIFEST, Manifest
from hubpub.cli import cli
from hubpub.recipe import load_recipe
from hubpub.release import release
from hubserver import ALICE_TOKEN as TOKEN, start_devhub
from mot_model import GEN_LINEARS, HOOK, UND_LINEARS
from recipe_parts import FAST_VALIDATE

REPO_ID = "alice/tiny-mot-awq"
BLOCKS = "language_model.model.layers"
KEEP = ["vit_model*", "connector*", "vae2llm", "llm2vae", "time_embedder*", "latent_pos_embed", "language_model.lm_head"]
# Lance's AWQ: scales fused into the norms before q/k/v and gate/up of both paths; o_proj / down_proj plain min-max
AWQ_MAPPINGS = """\
[[quantize.awq_mappings]]
smooth_layer = "input_layernorm$"
balance_layers = ['self_attn\\.q_proj$', 'self_attn\\.k_proj$', 'self_attn\\.v_proj$']

[[quantize.awq_mappings]]
smooth_layer = "input_layernorm_moe_gen$"
balance_layers = ["q_proj_moe_gen$", "k_proj_moe_gen$", "v_proj_moe_gen$"]

[[quantize.awq_mappings]]
smooth_layer = "post_attention_layernorm$"
balance_layers = ['mlp\\.gate_proj$', 'mlp\\.up_proj$']

[[quantize.awq_mappings]]
smooth_layer = "post_attention_layernorm_moe_gen$"
balance_layers = ['mlp_moe_gen\\.gate_proj$', 'mlp_moe_gen\\.up_proj$']
"""


def lance_recipe(source: Path, *, name: str, group_size: int = 128, method: str = "awq", hook: bool = True,
                 tag: str = "v1", card_extra: str = "", mappings: bool = True) -> str:
    hook_lines = 'calibration_hook = "mot_calibration.py:generation_calls"\ncalibration_hook_samples = 4\n' if hook else ""
    return f"""\
output_dir = "out/{name}"

[model]
source = "{source}"
name = "tiny-mot"
trust_remote_code = true

[quantize]
method = "{method}"
bits = 4
group_size = {group_size}
sym = false
format = "auto_awq"
nsamples = 4
seqlen = 32
batch_size = 2
device = "cpu"
blocks = ["{BLOCKS}"]
keep_bf16 = {json.dumps(KEEP)}
{hook_lines}{AWQ_MAPPINGS if mappings and method.startswith("awq") else ""}
{FAST_VALIDATE}
[card]
summary = "A tiny Lance-style mixture-of-transformers release."
base_model = "test-org/tiny-mot"
license = "apache-2.0"
{card_extra}
[push]
repo_id = "{REPO_ID}"
tag = "{tag}"
"""


@pytest.fixture(scope="session")
def tiny_mot(tmp_path_factory) -> Path:
    from mot_model import make_tiny_mot

    return make_tiny_mot(tmp_path_factory.mktemp("tiny") / "mot")


@pytest.fixture(scope="module")
def project(tiny_mot, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lance")
    shutil.copy(HOOK, folder / HOOK.name)
    return folder


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = start_devhub(tmp_path_factory.mktemp("hub"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def v1(project, tiny_mot, hub) -> Path:
    """Release v1 (AWQ W4 asym g128, hook-calibrated) to devhub; the release folder."""
    recipe = project / "v1.toml"
    recipe.write_text(lance_recipe(tiny_mot, name="v1"))
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_TOKEN", TOKEN)
    try:
        result = release(load_recipe(recipe), endpoint=hub.endpoint)
    finally:
        mp.undo()
    assert result.outcome("push").status == "ran"
    return project / "out" / "v1"


def _tensors(folder: Path) -> dict[str, object]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            out.update({k: fh.get_tensor(k) for k in fh.keys()})
    return out


def test_every_target_of_both_paths_is_quantized_and_every_kept_tensor_is_bit_identical(v1, tiny_mot):
    manifest = Manifest.read(v1 / MANIFEST)
    layers = [f"{BLOCKS}.{i}" for i in range(2)]
    targets = [f"{layer}.{lin}" for layer in layers for lin in UND_LINEARS + GEN_LINEARS]
    assert manifest.linears_quantized == len(targets) == 28
    assert manifest.plan["quantized"] == 28 and manifest.plan["kept"] == [] and manifest.plan["blocks"] == [BLOCKS]
    after, before = _tensors(v1), _tensors(tiny_mot)
    for name in targets:  # packed AWQ weights replace every target of both paths
        assert {f"{name}.qweight", f"{name}.qzeros", f"{name}.scales"} <= after.keys(), name
        assert f"{name}.weight" not in after
    # the ViT, the projections, the time embedder, the latent positions, embeddings, lm_head: untouched
    norms = [k for k in before if "layernorm" in k]  # AWQ folds its scales into the norms before q/k/v, gate/up
    kept = [k for k in before if not any(k.startswith(t + ".") for t in targets) and k not in norms]
    assert any(k.startswith("vit_model.encoder.") for k in kept) and "latent_pos_embed.pos_embed" in kept
    assert "time_embedder.mlp.0.weight" in kept and "language_model.lm_head.weight" in kept
    for k in kept:
        assert after[k].dtype == before[k].dtype and after[k].equal(before[k]), k
    moved = [k for k in norms if not after[k].equal(before[k])]  # AWQ's grid may keep a norm's scales at 1
    assert any("_moe_gen" in k for k in moved) and any("_moe_gen" not in k for k in moved)  # both paths' norms scaled
    config = json.loads((v1 / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_tiny_mot.TinyMoTForCausalLM"
    assert (v1 / "modeling_tiny_mot.py").read_bytes() == (tiny_mot / "modeling_tiny_mot.py").read_bytes()


def test_the_release_loads_through_its_own_class_with_no_missing_or_unexpected_key(v1):
    from hubpub.loading import load_checkpoint

    model, problems = load_checkpoint(v1, task="custom", trust_remote_code=True)
    assert problems == {}
    assert type(model).__name__ == "TinyMoTForCausalLM"
    assert "QuantLinear" in type(model.language_model.model.layers[0].self_attn.q_proj_moe_gen).__name__
    metrics = json.loads((v1 / "hubpub_metrics.json").read_text())
    assert metrics["passed"] is True
    passed = {m["mode"] for m in metrics["modes"] if m["model"] == "quantized" and m["ok"]}
    assert passed >= {"greedy", "batch", "beam", "stream"}  # its own code is a causal LM: the built-in text modes


def test_the_hook_reaches_every_generation_linear_and_makes_them_differ_from_rtn(v1, project, tiny_mot):
    manifest = Manifest.read(v1 / MANIFEST)
    coverage = manifest.calibration_coverage
    assert coverage["unreached"] == []
    gen = {p: g for p, g in coverage["groups"].items() if "_moe_gen" in p}
    und = {p: g for p, g in coverage["groups"].items() if "_moe_gen" not in p}
    assert len(gen) == len(und) == 7
    # 4 text samples + 4 hook calls of 32 tokens: the captions go the understanding way, the latents the generation way
    assert {g["tokens_min"] for g in gen.values()} == {g["tokens_max"] for g in gen.values()} and min(g["tokens_min"] for g in gen.values()) > 0
    assert all(g["tokens_min"] + next(iter(gen.values()))["tokens_min"] == 8 * 32 for g in und.values())
    assert [s["kind"] for s in manifest.calibration_sources] == ["builtin", "hook"]
    assert manifest.calibration_sources[1] == {"kind": "hook", "name": "mot_calibration.py:generation_calls", "samples": 4, "requested": 4}

    rtn = project / "rtn.toml"
    rtn.write_text(lance_recipe(tiny_mot, name="rtn", method="rtn", hook=False))
    result = CliRunner().invoke(cli, ["quantize", str(rtn), "--no-progress"])
    assert result.exit_code == 0, result.output
    awq, plain = _tensors(v1), _tensors(project / "out" / "rtn")

    def same(name: str) -> bool:
        return all(awq[f"{name}.{t}"].equal(plain[f"{name}.{t}"]) for t in ("qweight", "qzeros", "scales"))

    base = _tensors(tiny_mot)
    feeds = {"input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
             "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
             "input_layernorm_moe_gen": ("self_attn.q_proj_moe_gen", "self_attn.k_proj_moe_gen", "self_attn.v_proj_moe_gen"),
             "post_attention_layernorm_moe_gen": ("mlp_moe_gen.gate_proj", "mlp_moe_gen.up_proj")}
    scaled_gen = 0
    for layer in range(2):
        prefix = f"{BLOCKS}.{layer}."
        for lin in ("self_attn.o_proj", "self_attn.o_proj_moe_gen", "mlp.down_proj", "mlp_moe_gen.down_proj"):
            assert same(prefix + lin), lin  # no AWQ mapping feeds them: plain min-max, as Lance's o_proj / down_proj
        for norm, linears in feeds.items():
            # AWQ searched scales on the activations that reached this path; where its grid kept them at 1
            # the norm is unchanged and its linears are RTN's
            scaled = not awq[f"{prefix}{norm}.weight"].equal(base[f"{prefix}{norm}.weight"])
            scaled_gen += scaled and norm.endswith("_moe_gen")
            for lin in linears:
                assert same(prefix + lin) is not scaled, (norm, lin)
    assert scaled_gen >= 2  # the hook's calls reached the generation path and AWQ used them


def test_v2_with_group_64_shows_the_v1_to_v2_table_from_the_hub(v1, project, tiny_mot, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recipe = project / "v2.toml"
    recipe.write_text(lance_recipe(tiny_mot, name="v2", group_size=64, tag="v2", card_extra='previous_tag = "v1"\n'))
    result = release(load_recipe(recipe), endpoint=hub.endpoint)
    assert result.outcome("push").status == "ran"
    card = (project / "out" / "v2" / "README.md").read_text()
    assert "## v2 update (vs v1)" in card and "| | v1 | v2 | Δ |" in card
    history = card.split("## v2 update (vs v1)")[1].split("\n## ")[0]
    assert "- `quantize.group_size`: 128 → 64" in history and "Perplexity" in history
    assert Manifest.read(project / "out" / "v2" / MANIFEST).group_size == 64


def test_without_the_hook_strict_stops_before_tuning_and_writes_nothing(project, tiny_mot):
    recipe = project / "nohook.toml"
    recipe.write_text(lance_recipe(tiny_mot, name="nohook", method="autoround", hook=False).replace(
        "nsamples = 4", "nsamples = 4\niters = 1"))
    result = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress", "--strict"])
    assert result.exit_code == 1
    first = f"{BLOCKS}.0.self_attn.q_proj_moe_gen"
    assert result.stderr == (
        f"Error: quantize: 7 quantized linear(s) saw no calibration data: {first}, {BLOCKS}.0.self_attn.k_proj_moe_gen,"
        f" {BLOCKS}.0.self_attn.v_proj_moe_gen, ... (7 in all); feed their path with calibration data"
        f" (quantize.calibration_hook) or keep them BF16 (keep_bf16); stopped before tuning {BLOCKS}.0 (--strict)\n")
    assert not (project / "out" / "nohook").exists()


def test_auto_rounds_default_awq_mappings_are_refused_on_a_mot_model(project, tiny_mot):
    recipe = project / "defaults.toml"
    recipe.write_text(lance_recipe(tiny_mot, name="defaults", mappings=False))
    result = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: quantize.awq_mappings (auto-round's default mappings matched this model by name): AWQ mapping"
        f" self_attn.v_proj -> self_attn.o_proj in {BLOCKS}.0 is not an equivalence on this model")
    assert "mappings that hold: input_layernorm -> self_attn.q_proj/self_attn.k_proj/self_attn.v_proj (4 of 5 mappings fail)" in result.stderr
    assert not (project / "out" / "defaults").exists()


@pytest.mark.parametrize("change, message", [
    (("trust_remote_code = true", "trust_remote_code = false"),
     "quantize.calibration_hook: 'mot_calibration.py:generation_calls' is code that would run in this process;"
     " set model.trust_remote_code = true after reviewing it, or remove calibration_hook"),
    (("mot_calibration.py:generation_calls", "missing.py:generation_calls"),
     "quantize.calibration_hook: {folder}/missing.py not found; fix the path (relative to the recipe file)"),
    (("mot_calibration.py:generation_calls", "mot_calibration.py:nothing"),
     "quantize.calibration_hook: 'mot_calibration.py' has no function 'nothing'; its functions: generation_calls"),
    (("mot_calibration.py:generation_calls", "no_such_module:calls"),
     "quantize.calibration_hook: module 'no_such_module' cannot be imported (No module named 'no_such_module');"
     " put no_such_module.py beside the recipe, give a path 'file.py:function', or install the package"),
    (('method = "awq"', 'method = "rtn"'),
     "quantize.calibration_hook: method 'rtn' uses no calibration data, so the hook would never run; use method 'awq'"
     " or 'autoround', or remove calibration_hook"),
])
def test_bad_hooks_are_one_line_errors_before_any_weight_loads(project, tiny_mot, change, message):
    recipe = project / "bad.toml"
    text = lance_recipe(tiny_mot, name="bad").replace(*change)
    if change[1] == 'method = "rtn"':
        text = text.split("[[quantize.awq_mappings]]")[0] + "\n[validate]" + text.split("[validate]")[1]
    recipe.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("calibration_hook ="))
    result = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress"])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"Error: {recipe}:{line}: {message.format(folder=project)}\n"
    assert not (project / "out" / "bad").exists()


def test_a_hook_call_of_the_wrong_shape_is_named(project, tiny_mot):
    (project / "short_calls.py").write_text(
        "import torch\n\ndef calls(model, tokenizer, *, samples, seqlen, seed):\n"
        "    yield {'input_ids': torch.zeros(1, seqlen - 1, dtype=torch.long)}\n")
    recipe = project / "short.toml"
    recipe.write_text(lance_recipe(tiny_mot, name="short").replace("mot_calibration.py:generation_calls", "short_calls.py:calls"))
    result = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress"])
    assert result.exit_code == 1
    assert result.stderr == ("Error: quantize.calibration_hook: call 1 has input_ids of shape (1, 31); each call must be one"
                             " sample of quantize.seqlen = 32 tokens, shape (1, 32)\n")
    assert not (project / "out" / "short").exists()


DECODER_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings", "rms_norm_eps", "latent_token_id", "image_token_id")


def test_split_extracts_the_decoder_through_the_models_own_decoder_class(tiny_mot, tmp_path):
    """[quantize.split] with a decoder class from the model's code (not transformers'): the extracted
    decoder loads through it (so the _moe_gen twins have their places), is checked before tuning,
    and the repacked model loads with no missing / unexpected key."""
    from hubpub.loading import load_checkpoint

    full = tmp_path / "mot-llm-config"
    shutil.copytree(tiny_mot, full)
    config = json.loads((full / "config.json").read_text())
    config["llm_config"] = {"model_type": "tiny_mot", **{k: config[k] for k in DECODER_KEYS}}
    (full / "config.json").write_text(json.dumps(config, indent=2))
    recipe = tmp_path / "split.toml"
    text = (f'output_dir = "out"\n[model]\nsource = "{full}"\ntrust_remote_code = true\n[quantize]\nmethod = "rtn"\n'
            'group_size = 64\nformat = "auto_round"\n[quantize.split]\nprefix = "language_model."\nconfig_key = "llm_config"\n'
            'architecture = "TinyMoTLanguageModel"\n')
    recipe.write_text(text)
    result = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    manifest = Manifest.read(out / MANIFEST)
    assert manifest.linears_quantized == 28 and manifest.split_prefix == "language_model."
    model, problems = load_checkpoint(out, task="custom", trust_remote_code=True)
    assert problems == {}
    assert "QuantLinear" in type(model.language_model.model.layers[1].mlp_moe_gen.down_proj).__name__
    after, before = _tensors(out), _tensors(full)
    for k in [k for k in before if k.startswith(("vit_model.", "time_embedder.", "latent_pos_embed.", "connector."))]:
        assert after[k].equal(before[k]), k

    recipe.write_text(text.replace("trust_remote_code = true", "trust_remote_code = false"))
    refused = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress", "--force"])
    assert refused.exit_code == 1
    assert "model.trust_remote_code" in refused.stderr and "Traceback" not in refused.stderr


def test_the_hook_is_published_beside_the_recipe_and_its_code_is_part_of_the_quantize_key(v1, tiny_mot, tmp_path):
    from hubpub.quantize import recipe_hash

    published = (v1 / "hubpub_recipe.toml").read_text()
    assert 'calibration_hook = "hubpub_inputs/mot_calibration.py:generation_calls"' in published
    assert (v1 / "hubpub_inputs" / "mot_calibration.py").read_bytes() == HOOK.read_bytes()
    # editing the hook re-runs quantize: its content is in the key, like the calibration files'
    shutil.copy(HOOK, tmp_path / HOOK.name)
    recipe = tmp_path / "r.toml"
    recipe.write_text(lance_recipe(tiny_mot, name="key"))
    before = recipe_hash(load_recipe(recipe), "fp")
    (tmp_path / HOOK.name).write_text(HOOK.read_text().replace("a lighthouse at night", "a lighthouse at dawn"))
    assert recipe_hash(load_recipe(recipe), "fp") != before
