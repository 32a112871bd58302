"""Quantize backends and export formats as registries: recipe checks, algorithms, schemes, plugins.

Real tiny Qwen2, real auto-round, real reloads; the numbers compared (KL vs base) are measured here.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe

FAST = 'iters = 2\nnsamples = 4\nseqlen = 64\nbatch_size = 4\ngroup_size = 32\n'


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def recipe_text(source, out, extra: str = "") -> str:
    return f'output_dir = "{out}"\n[model]\nsource = "{source}"\n[quantize]\n{FAST}{extra}'


def check_error(write_recipe, quantize_lines: str) -> str:
    path = write_recipe(f'[model]\nsource = "org/m"\n[quantize]\n{quantize_lines}\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return str(info.value).removeprefix(f"{path}:")


def test_builtin_backends_and_formats_are_registered():
    from hubpub.quantize.backends import backends
    from hubpub.quantize.formats import formats

    assert {"rtn", "autoround", "awq", "awq+autoround"} <= set(backends.names())
    assert {"auto_round", "auto_gptq", "auto_awq", "llm_compressor"} <= set(formats.names())
    assert backends.get("awq").display_name == "AWQ" and backends.get("rtn").needs_calibration is False
    assert formats.get("auto_awq").install_line == "autoawq"


BAD = [
    ('method = "awk"', "4: quantize.method: unknown quantize backend 'awk'; did you mean 'awq'? (installed: autoround, awq, awq+autoround, rtn)"),
    ('method = "awq"\nn_grid = 0', "5: quantize.n_grid: must be >= 1 (got 0)"),
    ('method = "awq"\nn_gird = 3', "5: quantize.n_gird: unknown field; did you mean 'n_grid'?"),
    ('method = "rtn"\nn_grid = 3', "5: quantize.n_grid: read by method 'awq' / 'awq+autoround' only, not 'rtn'; remove it or change quantize.method"),
    ('method = "autoround"\nlr = -1.0', "5: quantize.lr: must be > 0.0 (got -1.0)"),
    ('targets = ["model.layers.*", " "]', "4: quantize.targets: patterns must not be empty; give module names or globs like 'model.layers.*.mlp.*'"),
    # (scheme, format) combinations that cannot be written or loaded back, with what works instead
    ('sym = false\nformat = "llm_compressor"', "3: quantize: format 'llm_compressor' cannot store asymmetric (zero points) weights: set sym = true, or use format 'auto_round'"),
    ('bits = 8\nsym = false', "3: quantize: 8-bit asymmetric weights cannot be exported by auto-round (its kernels store zero points up to 7 bits); set sym = true, or use bits = 4 with sym = false"),
    ('bits = 8\nsym = false\nformat = "auto_gptq"', "3: quantize: 8-bit asymmetric GPTQ weights cannot be exported by auto-round (vLLM serves W8 GPTQ symmetric only); set sym = true, or use bits = 4 with sym = false"),
    ('bits = 3\nsym = false\nformat = "auto_gptq"', "3: quantize: 3-bit asymmetric GPTQ weights do not load back (transformers' GPTQ loader fails on them); use format 'auto_round', or sym = true"),
    ('bits = 8\nformat = "auto_awq"', "3: quantize: format 'auto_awq' supports bits = 4 only; use format 'auto_round'"),
    ('bits = 2\nformat = "llm_compressor"', "3: quantize: format 'llm_compressor' supports bits = 4 or 8 only; use format 'auto_round'"),
]


@pytest.mark.parametrize("lines,message", BAD, ids=[b[0].split("\n")[-1] for b in BAD])
def test_recipe_check_refuses_with_field_and_fix(lines, message, write_recipe):
    assert check_error(write_recipe, lines) == message


def test_backend_settings_are_validated_and_hashed(write_recipe, tmp_path):
    from hubpub.quantize import recipe_hash

    a = load_recipe(write_recipe('[model]\nsource = "org/m"\n[quantize]\nmethod = "awq"\nduo_scaling = "both"\nn_grid = 5\n', "a.toml"))
    assert a.quantize.settings.model_dump() == {"duo_scaling": "both", "n_grid": 5, "apply_clip": False, "awq_seqlen": None,
                                                "awq_mappings": None}
    b = load_recipe(write_recipe('[model]\nsource = "org/m"\n[quantize]\nmethod = "awq"\nduo_scaling = "both"\nn_grid = 6\n', "b.toml"))
    assert recipe_hash(a, "x") != recipe_hash(b, "x")  # a backend-only key changes the cache key
    default = load_recipe(write_recipe('[model]\nsource = "org/m"\n', "c.toml"))
    assert default.quantize.settings.model_dump() == {"lr": None, "minmax_lr": None, "enable_minmax_tuning": True}


# ----------------------------------------------------------------------------- real runs
def kl_vs_base(base_dir, quant_dir) -> float:
    """Mean KL(base || quantized) of next-token distributions on held-out text."""
    import torch

    from hubpub.loading import load_checkpoint
    from pydoc_data.topics import topics
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    text = "\n".join(topics[k] for k in sorted(topics)[-6:])
    ids = tok(text, return_tensors="pt")["input_ids"][:, :512]
    logp = []
    for folder in (base_dir, quant_dir):
        model, problems = load_checkpoint(folder, task="causal-lm", trust_remote_code=False, dtype=torch.bfloat16)
        assert problems == {}
        with torch.no_grad():
            logp.append(torch.log_softmax(model(input_ids=ids).logits.float(), -1))
    return float((logp[0].exp() * (logp[0] - logp[1])).sum(-1).mean())


@pytest.fixture(scope="module")
def quantized(tiny_qwen2, tmp_path_factory):
    """{method: (out dir, manifest)} for rtn / awq / autoround on the same tiny model, same scheme."""
    done = {}

    def get(method: str, extra: str = ""):
        key = method + extra
        if key not in done:
            root = tmp_path_factory.mktemp(method.replace("+", "_"))
            (root / "r.toml").write_text(recipe_text(tiny_qwen2, root / "out", f'method = "{method}"\nbits = 3\nsym = false\n{extra}'))
            result = run_cli("quantize", str(root / "r.toml"), "--no-progress")
            assert result.exit_code == 0, result.output
            done[key] = (root / "out", json.loads((root / "out" / "hubpub_manifest.json").read_text()))
        return done[key]

    return get


def test_awq_differs_measurably_from_rtn(quantized, tiny_qwen2):
    rtn_dir, rtn = quantized("rtn")
    awq_dir, awq = quantized("awq", "n_grid = 10\n")
    assert (rtn["algorithms"], awq["algorithms"]) == (["rtn"], ["awq", "rtn"])
    assert awq["backend_settings"]["n_grid"] == 10 and awq["nsamples"] == 4 and rtn["nsamples"] == 0
    # AWQ folds its scales into the norms in front of the linears: those come from the export
    rescaled = {g["pattern"]: g["rescaled"] for g in awq["groups"] if g["action"] == "kept" and g["rescaled"]}
    assert set(rescaled) <= {"model.layers.*.input_layernorm.weight", "model.layers.*.post_attention_layernorm.weight"} and rescaled
    assert not any(g.get("rescaled") for g in rtn["groups"])
    kl_rtn, kl_awq = kl_vs_base(tiny_qwen2, rtn_dir), kl_vs_base(tiny_qwen2, awq_dir)
    assert kl_awq < kl_rtn * 0.97, (kl_rtn, kl_awq)  # activation-aware scales help at 3 bits


def test_asymmetric_auto_round_reloads_and_generates(quantized, tiny_qwen2):
    import torch

    from hubpub.loading import load_checkpoint

    out, manifest = quantized("rtn")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["bits"], qc["sym"], qc["packing_format"]) == ("auto-round", 3, False, "auto_round")
    model, problems = load_checkpoint(out, task="causal-lm", trust_remote_code=False)
    assert problems == {}
    ids = torch.tensor([[5, 6, 7, 8]])
    assert model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, do_sample=False).shape == (1, 8)


@pytest.mark.parametrize("fmt,bits,sym", [("auto_round", 4, False), ("auto_round", 8, True), ("auto_gptq", 8, True), ("llm_compressor", 8, True),
                                          ("auto_gptq", 4, False), ("auto_awq", 4, False)])
def test_every_allowed_scheme_reloads_with_zero_key_problems(fmt, bits, sym, tiny_qwen2, tmp_path, write_recipe):
    import torch

    from hubpub.loading import load_checkpoint

    out = tmp_path / "out"
    text = recipe_text(tiny_qwen2, out, f'method = "rtn"\nformat = "{fmt}"\nbits = {bits}\nsym = {str(sym).lower()}\n')
    result = run_cli("quantize", str(write_recipe(text)), "--no-progress")
    assert result.exit_code == 0, result.output
    model, problems = load_checkpoint(out, task="causal-lm", trust_remote_code=False)
    assert problems == {}
    ids = torch.tensor([[5, 6, 7, 8]])
    assert model.generate(input_ids=ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, 7)


def test_events_report_the_plan_and_blocks_and_nothing_leaks(tiny_qwen2, tmp_path, write_recipe, capfd):
    from hubpub.events import Notice, StepProgress, ThirdPartyOutput
    from hubpub.quantize import quantize

    events = []
    recipe = load_recipe(write_recipe(recipe_text(tiny_qwen2, tmp_path / "out", 'method = "rtn"\nkeep_bf16 = ["model.layers.1.mlp.*"]\n')))
    result = quantize(recipe, events=events.append)
    notices = [e.message for e in events if isinstance(e, Notice)]
    assert notices[0].startswith("plan: 11 linears quantized, 3 kept BF16 in model.layers:\n  model.layers.*.mlp.down_proj: 1 quantized, 1 BF16\n")
    blocks = [(e.done, e.total, e.item) for e in events if isinstance(e, StepProgress) and e.step == "quantize blocks"]
    assert blocks == [(1, 2, "model.layers.0"), (2, 2, "model.layers.1")]
    assert any("packing" in e.text for e in events if isinstance(e, ThirdPartyOutput))  # captured, not printed
    out, err = capfd.readouterr()
    assert "packing" not in out + err and "Quantizing" not in out + err
    plan = result.manifest.plan
    assert plan["quantized"] == 11 and sorted(plan["kept"]) == ["model.layers.1.mlp.down_proj", "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"]
    assert plan["groups"]["model.layers.*.self_attn.q_proj"] == {"quantized": 2, "kept": 0}


# ----------------------------------------------------------------------------- plugins
@pytest.fixture(scope="module")
def demo_plugin(tmp_path_factory):
    from plugins.activate import activate, deactivate

    tmp = tmp_path_factory.mktemp("plugin")
    names = activate(tmp)
    yield names
    deactivate(tmp, names)


def test_plugin_backend_is_listed_and_its_settings_checked(demo_plugin, write_recipe):
    assert "demo-rtn" in demo_plugin
    assert check_error(write_recipe, 'method = "demo-rt"') == (
        "4: quantize.method: unknown quantize backend 'demo-rt'; did you mean 'demo-rtn'? (installed: autoround, awq, awq+autoround, demo-rtn, rtn)")
    assert check_error(write_recipe, 'method = "demo-rtn"\nnote = 3') == "5: quantize.note: must be a string in quotes (got 3)"
    assert check_error(write_recipe, 'method = "demo-rtn"\nformat = "llm_compressor"') == (
        "3: quantize: method 'demo-rtn' cannot write format 'llm_compressor'; use format 'auto_round'")


def test_quantize_with_a_plugin_backend(demo_plugin, tiny_qwen2, tmp_path, write_recipe):
    from hubpub.card.context import method_name
    from hubpub.loading import load_checkpoint

    out = tmp_path / "out"
    result = run_cli("quantize", str(write_recipe(recipe_text(tiny_qwen2, out, 'method = "demo-rtn"\nnote = "from a plugin"\n'))), "--no-progress")
    assert result.exit_code == 0, result.output
    m = json.loads((out / "hubpub_manifest.json").read_text())
    assert (m["method"], m["algorithms"], m["backend_settings"]) == ("demo-rtn", ["demo-rtn", "rtn"], {"note": "from a plugin"})
    assert m["versions"]["hubpub_plugin_demo"] == "0.1.0" and m["linears_quantized"] == 14
    _, problems = load_checkpoint(out, task="causal-lm", trust_remote_code=False)
    assert problems == {}
    assert method_name("demo-rtn") == "Demo RTN (plugin)"


def test_lance_recipe_parses_and_checks():
    """recipes/lance-3b.toml (for a GPU machine with Hub access): offline, `hubpub check` finds only
    the Hub dataset it cannot reach; its calibration hook imports and its AWQ mappings parse."""
    from pathlib import Path

    from hubpub.calibration.hook import load_hook

    path = Path(__file__).resolve().parents[1] / "recipes" / "lance-3b.toml"
    recipe = load_recipe(path)
    q = recipe.quantize
    assert (q.method, q.bits, q.group_size, q.sym, q.format, q.split) == ("awq", 4, 128, False, "auto_awq", None)
    assert recipe.model.trust_remote_code and q.settings.n_grid == 20 and q.blocks == ["language_model.model.layers"]
    assert {"time_embedder*", "latent_pos_embed*", "language_model.lm_head"} <= set(q.keep_bf16)
    assert callable(load_hook(recipe))
    smooth = [m.smooth_layer for m in q.settings.awq_mappings]
    assert smooth == ["input_layernorm$", "input_layernorm_moe_gen$", "post_attention_layernorm$", "post_attention_layernorm_moe_gen$"]
    result = run_cli("check", str(path))
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        f"{path}:28: quantize.calibration[0].source: hf:NeelNanda/pile-10k is not in the local datasets cache and"
        " HF_HUB_OFFLINE=1; load it once online (unset HF_HUB_OFFLINE) or use a local .jsonl / .parquet file or dataset folder")