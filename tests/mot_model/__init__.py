"""The tiny Lance-like mixture-of-transformers model (TinyMoT) and its builder.

``make_tiny_mot(out_dir)`` writes a folder loadable only with trust_remote_code: config.json
with auto_map (AutoConfig / AutoModelForCausalLM), configuration_/modeling_tiny_mot.py, BF16
safetensors and a trained tokenizer with ``<|latent|>`` and ``<image>`` tokens. The
understanding path is trained a few steps on English text (peaked next-token distributions);
the generation experts start as noisy copies of it, as Lance's are initialised from the
understanding weights. ``mot_calibration.py`` beside it is the recipe's calibration hook.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

HERE = Path(__file__).parent
CODE = ("configuration_tiny_mot.py", "modeling_tiny_mot.py")
HOOK = HERE / "mot_calibration.py"
# a Lance-style block: 7 understanding linears and their 7 generation twins
UND_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
GEN_LINEARS = ("self_attn.q_proj_moe_gen", "self_attn.k_proj_moe_gen", "self_attn.v_proj_moe_gen",
               "self_attn.o_proj_moe_gen", "mlp_moe_gen.gate_proj", "mlp_moe_gen.up_proj", "mlp_moe_gen.down_proj")


def make_tiny_mot(out_dir: Path, steps: int = 120, seed: int = 0) -> Path:
    import sys

    import torch
    from transformers import GenerationConfig

    sys.path.insert(0, str(HERE.parent))
    from tiny_models import build_tokenizer, train_steps

    from .configuration_tiny_mot import TinyMoTConfig
    from .modeling_tiny_mot import TinyMoTForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = build_tokenizer(out_dir, extra_special=["<|latent|>", "<image>"])
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = TinyMoTConfig(
        vocab_size=len(tok), latent_token_id=tok.convert_tokens_to_ids("<|latent|>"),
        image_token_id=tok.convert_tokens_to_ids("<image>"), eos_token_id=eos, pad_token_id=tok.pad_token_id,
        architectures=["TinyMoTForCausalLM"],
        auto_map={"AutoConfig": "configuration_tiny_mot.TinyMoTConfig",
                  "AutoModelForCausalLM": "modeling_tiny_mot.TinyMoTForCausalLM"},
    )
    model = TinyMoTForCausalLM(config)
    loss = train_steps(model, tok, steps=steps, seed=seed)
    with torch.no_grad():  # generation experts: noisy copies of the understanding path
        for layer in model.language_model.model.layers:
            for und, gen in zip(UND_LINEARS, GEN_LINEARS):
                u, g = layer.get_submodule(und), layer.get_submodule(gen)
                g.weight.copy_(u.weight + 0.3 * u.weight.std() * torch.randn_like(u.weight))
                if u.bias is not None:
                    g.bias.copy_(u.bias)
            for norm in ("input_layernorm", "post_attention_layernorm"):
                layer.get_submodule(norm + "_moe_gen").weight.copy_(layer.get_submodule(norm).weight)
        model.language_model.model.norm_moe_gen.weight.copy_(model.language_model.model.norm.weight)
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id, do_sample=False,
                                               use_cache=False)
    model.save_pretrained(out_dir)
    for name in CODE:
        shutil.copy(HERE / name, out_dir / name)
    config_path = out_dir / "config.json"  # the code files sit beside the weights, as on the Hub
    cfg = json.loads(config_path.read_text())
    cfg["auto_map"] = config.auto_map
    config_path.write_text(json.dumps(cfg, indent=2))
    (out_dir / "hubpub_test_info.json").write_text(json.dumps({"train_loss": loss}))
    return out_dir
