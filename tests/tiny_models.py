"""Tiny real models, built offline from configs, for tests and benchmarks.

Nothing here touches the Hub. The text model is trained for a few steps on real English text
so its next-token distributions are peaked: comparisons of base vs quantized then mean
something (a random model's logits are nearly flat and any quantization looks "fine").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# the same template for image-text models: content may be a list of {"type": "image"|"text"} parts
VLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def corpus_text(limit: int = 400_000) -> str:
    """Real English prose that every CPython carries: the language reference topics."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))[:limit]


def build_tokenizer(out_dir: Path, vocab_size: int = 1024, extra_special: list[str] | None = None):
    """A byte-level BPE tokenizer trained on the corpus, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = SPECIAL + list(extra_special or [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([corpus_text(200_000)], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token=None,
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=list(extra_special or []),
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    fast.save_pretrained(out_dir)
    return fast


def qwen2_text_config(vocab_size: int, **overrides):
    from transformers import Qwen2Config

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def train_steps(model, tokenizer, steps: int = 60, seqlen: int = 64, batch: int = 8, seed: int = 0) -> float:
    """A few Adam steps of next-token prediction on the corpus; returns the last loss."""
    import torch

    torch.manual_seed(seed)
    ids = tokenizer(corpus_text(120_000), return_tensors="pt")["input_ids"][0]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seqlen - 1, (batch,))
        x = torch.stack([ids[s : s + seqlen] for s in starts])
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        loss_value = float(out.loss.detach())
    model.eval()
    return loss_value


def make_tiny_qwen2(out_dir: Path, steps: int = 300, seed: int = 0) -> Path:
    """A 2-layer Qwen2ForCausalLM (hidden 64) with a trained tokenizer, in BF16 safetensors."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = build_tokenizer(out_dir)
    cfg = qwen2_text_config(
        len(tok), eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id
    )
    model = Qwen2ForCausalLM(cfg)
    loss = train_steps(model, tok, steps=steps, seed=seed)
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, do_sample=False
    )
    model.save_pretrained(out_dir)
    (out_dir / "hubpub_test_info.json").write_text(json.dumps({"train_loss": loss}))
    return out_dir


def make_tiny_qwen2_vl(out_dir: Path, seed: int = 0) -> Path:
    """A tiny Qwen2-VL (vision tower + merger + Qwen2 decoder) with a processor, BF16."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    extra = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = build_tokenizer(out_dir, extra_special=extra)
    text = qwen2_text_config(len(tok)).to_dict()
    text.pop("architectures", None)
    text.update(rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, model_type="qwen2_vl_text")
    cfg = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2, in_chans=3, mlp_ratio=2),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = Qwen2VLForConditionalGeneration(cfg).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    return out_dir


def make_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """A tiny LLaVA (CLIP vision tower + projector + Qwen2 decoder) with its processor, BF16."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = build_tokenizer(out_dir, extra_special=["<image>"])
    text = qwen2_text_config(len(tok))
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=28, patch_size=14, projection_dim=32)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                      projector_hidden_act="gelu", vision_feature_layer=-1, tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(cfg)
    train_steps(model, tok, steps=300, seed=seed)  # a decoder that writes words, so output checks mean something
    model = model.to(torch.bfloat16)
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.chat_template = VLM_CHAT_TEMPLATE
    images = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=14, chat_template=VLM_CHAT_TEMPLATE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)
    processor.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":  # python tests/tiny_models.py DIR  -> builds all three for a look
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TMPDIR", "/tmp")) / "hubpub-tiny"
    for name, fn in [("qwen2", make_tiny_qwen2), ("qwen2_vl", make_tiny_qwen2_vl), ("llava", make_tiny_llava)]:
        print(name, fn(root / name))
