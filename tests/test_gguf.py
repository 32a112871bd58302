"""GGUF export (format gguf:<type>) on a tiny GGUF-shaped Qwen2: real AutoRound, real llama.cpp
converter (auto-round's bundled copy), the .gguf loaded back by transformers, validate, card."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.artifacts import MANIFEST, METRICS, Manifest, Metrics
from hubpub.cli import cli
from hubpub.errors import QuantizeError, RecipeError
from hubpub.recipe import load_recipe

import tiny_models

FAST = """
[validate]
max_new_tokens = 8
warmup_runs = 0
latency_runs = 1
"""


# Qwen2's own pre-tokenizer split (its tokenizer.json): what llama.cpp calls the "qwen2" pre-tokenizer
# and what transformers' GGUF reader rebuilds for a qwen2 file, so the .gguf's tokenizer is the base's.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")


def build_qwen2_tokenizer(out_dir: Path, vocab_size: int = 1024):
    """A byte-level BPE trained on the corpus with Qwen2's pre-tokenizer (tiny_models.build_tokenizer
    uses plain ByteLevel splitting, which a GGUF file cannot name)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=tiny_models.SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([tiny_models.corpus_text(200_000)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token=None, pad_token="<|pad|>", unk_token=None)
    fast.chat_template = tiny_models.CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.save_pretrained(out_dir)
    return fast


def make_gguf_qwen2(out_dir: Path, steps: int = 60, seed: int = 0) -> Path:
    """A 2-layer Qwen2 sized for GGUF blocks (hidden 256, intermediate 512: multiples of the
    k-quant super-block of 256 and of the 32-weight blocks of q4_0 / q8_0), trained a little."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = build_qwen2_tokenizer(out_dir)
    cfg = tiny_models.qwen2_text_config(len(tok), hidden_size=256, intermediate_size=512,
                                        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(cfg)
    tiny_models.train_steps(model, tok, steps=steps, seed=seed)
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, do_sample=False)
    model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def gguf_qwen2(tmp_path_factory) -> Path:
    return make_gguf_qwen2(tmp_path_factory.mktemp("gguf") / "qwen2")


def known_pre_tokenizer(model_dir: Path):  # type: ignore[no-untyped-def]
    """llama.cpp's converter knows a BPE tokenizer by the hash of its pre-tokenizer's output on a
    test text, which depends on the vocabulary: the tiny trained one is in no table. For THIS
    vocabulary only, the converter is told "qwen2" (the pre-tokenizer build_qwen2_tokenizer uses);
    any other tokenizer still gets the converter's own answer. Returns the undo."""
    from auto_round.export.export_to_gguf.llama_cpp_conversion import get_conversion

    from hubpub.quantize.formats.gguf import apply_gguf_shim

    apply_gguf_shim()
    get_conversion(model_dir)  # imports the converter package (cached by auto-round from now on)
    from transformers import AutoTokenizer

    base = sys.modules["conversion.base"].TextModel
    original = base.get_vocab_base_pre
    expected = AutoTokenizer.from_pretrained(model_dir).get_vocab()

    def pre(self, tokenizer):  # type: ignore[no-untyped-def]
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if tokenizer.get_vocab() != expected:
                raise
            return "qwen2"

    base.get_vocab_base_pre = pre
    return lambda: setattr(base, "get_vocab_base_pre", original)


@pytest.fixture(scope="module")
def tiny_pre_tokenizer(gguf_qwen2):
    undo = known_pre_tokenizer(gguf_qwen2)
    yield
    undo()


def recipe_for(root: Path, source: Path, fmt: str, extra: str = "") -> Path:
    bits = 8 if fmt == "gguf:q8_0" else 4
    sym = "false" if fmt in ("gguf:q4_1", "gguf:q4_k_m") else "true"
    path = root / f"{fmt.replace(':', '_')}.toml"
    path.write_text(f'output_dir = "{root / fmt.replace(":", "_")}"\n[model]\nsource = "{source}"\nname = "Tiny"\n'
                    f'[quantize]\nmethod = "rtn"\nformat = "{fmt}"\nbits = {bits}\ngroup_size = 32\nsym = {sym}\n{FAST}{extra}')
    return path


def quantize_to(root: Path, source: Path, fmt: str, extra: str = "") -> Path:
    from hubpub.quantize import quantize

    saved = os.environ.get("AR_WORK_SPACE")
    os.environ["AR_WORK_SPACE"] = str(root / "ar_work_space")
    try:
        return quantize(load_recipe(recipe_for(root, source, fmt, extra)), progress=False).output_dir
    finally:
        os.environ.pop("AR_WORK_SPACE") if saved is None else os.environ.__setitem__("AR_WORK_SPACE", saved)


@pytest.fixture(scope="module")
def released(gguf_qwen2, tiny_pre_tokenizer, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf_out")
    return {fmt: quantize_to(root, gguf_qwen2, fmt) for fmt in ("gguf:q4_0", "gguf:q8_0", "gguf:q4_k_m")}


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ----------------------------------------------------------------------------- bad input
def test_unknown_gguf_type_is_one_line_recipe_error_listing_the_types(tmp_path, write_recipe):
    path = write_recipe(f'[model]\nsource = "{tmp_path}"\n[quantize]\nmethod = "rtn"\ngroup_size = 32\nformat = "gguf:q4_k_x"\n')
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:6: quantize.format: unknown GGUF type 'q4_k_x'; did you mean 'gguf:q4_k_")
    for name in ("gguf:q4_0", "gguf:q4_k_m", "gguf:q8_0"):
        assert name in message
    result = run_cli("check", str(path), "--no-model")
    assert result.exit_code == 1
    assert f"{path}:6: quantize.format: unknown GGUF type 'q4_k_x'" in result.output


def test_gguf_type_fixes_the_scheme(tmp_path, write_recipe):
    path = write_recipe(f'[model]\nsource = "{tmp_path}"\n[quantize]\nmethod = "rtn"\nformat = "gguf:q8_0"\ngroup_size = 32\n')
    with pytest.raises(RecipeError, match=r"format 'gguf:q8_0' stores 8-bit symmetric weights in groups of 32: "
                                          r"set bits = 8, group_size = 32, sym = true$"):
        load_recipe(path)
    path = write_recipe(f'[model]\nsource = "{tmp_path}"\n[quantize]\nmethod = "rtn"\nformat = "gguf:q4_0"\n')  # group_size 128
    with pytest.raises(RecipeError, match=r"set bits = 4, group_size = 32, sym = true$"):
        load_recipe(path)


def test_check_refuses_an_architecture_the_converter_cannot_export(tmp_path, write_recipe):
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    folder = tmp_path / "opt"
    OPTForCausalLM(OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                             max_position_embeddings=64, word_embed_proj_dim=32)).to(torch.bfloat16).save_pretrained(folder)
    path = write_recipe(f'[model]\nsource = "{folder}"\n[quantize]\nmethod = "rtn"\nformat = "gguf:q4_0"\ngroup_size = 32\n')
    result = run_cli("check", str(path))
    assert result.exit_code == 1
    line = next(l for l in result.output.splitlines() if "quantize.format" in l)
    assert line.startswith(f"{path}:5: quantize.format: format 'gguf:q4_0': auto-round ")
    assert "converter has no text model 'OPTForCausalLM'" in line and line.endswith("use a safetensors format such as 'auto_round'")


def test_unknown_pre_tokenizer_is_a_quantize_error_not_a_silent_guess(gguf_qwen2, tmp_path):
    """Without the fixture's patch the converter does not know the tiny tokenizer: hubpub says so."""
    from hubpub.quantize.formats.gguf import apply_gguf_shim

    apply_gguf_shim()
    with pytest.raises(QuantizeError, match=r"^quantize.format: llama.cpp's converter .* does not recognise this tokenizer's"
                                            r" BPE pre-tokenizer .*use a safetensors format such as 'auto_round'$"):
        quantize_to(tmp_path, gguf_qwen2, "gguf:q4_0")
    assert not (tmp_path / "gguf_q4_0").exists()  # nothing half-built left as a release


# ----------------------------------------------------------------------------- the release
def test_release_is_the_gguf_file_with_its_tensors_accounted(released, gguf_qwen2):
    from hubpub.quantize.formats.gguf import gguf_tensors
    from hubpub.quantize.tensors import tensor_refs

    for fmt, out in released.items():
        label = fmt.split(":")[1].upper()
        manifest = Manifest.read(out / MANIFEST)
        gguf_name = f"Tiny-{label}.gguf"
        assert sorted(p.name for p in out.iterdir()) == sorted([gguf_name, MANIFEST, "hubpub_recipe.toml"])
        assert manifest.files == sorted([gguf_name, MANIFEST, "hubpub_recipe.toml"])
        assert manifest.format == fmt and manifest.block_name_to_quantize is None
        tensors = gguf_tensors(out / gguf_name)
        assert manifest.tensors_after == len(tensors)
        assert manifest.bytes_after == sum(n for _, _, n, _ in tensors)
        assert manifest.bytes_before == sum(r.nbytes for r in tensor_refs(gguf_qwen2).values())
        assert sum(g.bytes_after for g in manifest.groups) == manifest.bytes_after
        # every base tensor is in some group (mapped through llama.cpp's tensor names)
        assert sum(g.bytes_before for g in manifest.groups) == manifest.bytes_before
        layers = {g.dtype for g in manifest.groups if g.pattern.startswith("model.layers.*.mlp.")}
        # q4_k_m is a mix, as llama.cpp makes it: Q4_K, with Q6_K for some down projections
        assert layers == ({"Q4_K", "Q6_K"} if label == "Q4_K_M" else {label})
        assert manifest.linears_quantized == 2 * 7 + 2  # 7 linears per block, plus embeddings and output head


def test_k_quants_run_on_autorounds_gguf_scheme(released):
    """q4_k_m: AutoRound quantizes on its GGUF:Q4_K_M scheme (super-blocks, Q6_K / Q5_K where llama.cpp's
    q4_k_m puts them), so the file holds real k-quant tensors, not Q4_0 under another name."""
    from hubpub.quantize.formats.gguf import gguf_tensor_types

    (path,) = released["gguf:q4_k_m"].glob("*.gguf")
    types = set(gguf_tensor_types(path).values())
    assert "Q4_K" in types and "Q4_0" not in types
    assert Manifest.read(released["gguf:q4_k_m"] / MANIFEST).format == "gguf:q4_k_m"


def test_gguf_loads_back_with_transformers_and_q8_is_closer_than_q4(released, gguf_qwen2):
    import torch
    from transformers import AutoTokenizer

    from hubpub.loading import gguf_file, load_checkpoint, weight_bytes

    base, _ = load_checkpoint(gguf_qwen2, task="causal-lm", trust_remote_code=False, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(gguf_qwen2)
    ids = tok(tiny_models.corpus_text(4000)[1000:3000], return_tensors="pt").input_ids[:, :256]
    with torch.no_grad():
        ref = base(ids).logits.float().log_softmax(-1)
    kl = {}
    for fmt, out in released.items():
        name = gguf_file(out)
        assert name is not None and name.endswith(".gguf")
        assert weight_bytes(out) == (out / name).stat().st_size
        model, problems = load_checkpoint(out, task="causal-lm", trust_remote_code=False)
        assert problems == {}
        assert model.dtype == torch.bfloat16
        gguf_tok = AutoTokenizer.from_pretrained(out, gguf_file=name)  # the tokenizer the file carries
        assert gguf_tok.get_vocab() == tok.get_vocab() and gguf_tok.chat_template == tok.chat_template
        text = tok.decode(ids[0])  # contractions, digits, punctuation: the same ids as the base's tokenizer
        assert gguf_tok(text, add_special_tokens=False).input_ids == tok(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            got = model(ids).logits.float().log_softmax(-1)
        kl[fmt] = float((ref.exp() * (ref - got)).sum(-1).mean())
        assert kl[fmt] > 0  # really quantized, not a copy of the base
    assert kl["gguf:q8_0"] < kl["gguf:q4_0"]


def test_validate_and_card_describe_the_gguf_file(released, gguf_qwen2, tmp_path):
    import shutil

    from hubpub.quantize.formats.gguf import llama_cpp_version

    out = tmp_path / "q4"
    shutil.copytree(released["gguf:q4_0"], out)
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_for(tmp_path, gguf_qwen2, "gguf:q4_0", """
[[eval]]
kind = "kl"
file = "builtin:pydoc"
seqlen = 64
max_samples = 2

[card]
base_model = "me/Tiny"
license = "apache-2.0"

[push]
repo_id = "me/Tiny-GGUF"
""").read_text().replace(f'output_dir = "{tmp_path / "gguf_q4_0"}"', f'output_dir = "{out}"'))
    result = run_cli("validate", str(recipe), "--quiet")
    assert result.exit_code == 0, result.output
    metrics = Metrics.read(out / METRICS)
    assert metrics.passed
    assert metrics.quantized.weight_bytes == (out / "Tiny-Q4_0.gguf").stat().st_size
    assert metrics.base is not None and metrics.base.weight_bytes > metrics.quantized.weight_bytes
    assert metrics.quantized.load_s is not None  # validate fails on any missing / unexpected key
    result = run_cli("card", str(recipe))
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert card.split("\n# ", 1)[1].startswith("Tiny RTN GGUF Q4_0\n")
    assert "transformers dequantized the GGUF weights on load" in card  # its memory / latency are not llama.cpp's
    assert "llama-cli -m Tiny-Q4_0.gguf" in card
    assert "ollama run hf.co/me/Tiny-GGUF:Q4_0" in card
    assert 'gguf_file="Tiny-Q4_0.gguf"' in card
    import transformers

    assert f"tested with transformers {transformers.__version__}" in card
    if llama_cpp_version() is None:
        assert "llama.cpp: not tested here" in card and "Ollama: not tested here" in card
