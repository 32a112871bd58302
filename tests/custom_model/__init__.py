"""The tiny custom-code grounding model (TinyLocate) and its builder, for validate's tests.

``make_tiny_locate(out_dir, text_model_dir)`` writes a folder loadable only with
trust_remote_code: config.json with auto_map, configuration_/modeling_tiny_locate.py, BF16
safetensors (decoder weights taken from the trained tiny Qwen2) and the tokenizer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

HERE = Path(__file__).parent
CODE = ("configuration_tiny_locate.py", "modeling_tiny_locate.py")


def make_tiny_locate(out_dir: Path, text_model_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    from .configuration_tiny_locate import TinyLocateConfig
    from .modeling_tiny_locate import TinyLocateModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    decoder = Qwen2ForCausalLM.from_pretrained(text_model_dir, dtype=torch.float32)
    llm = decoder.config.to_dict()
    config = TinyLocateConfig(
        llm_config=llm,
        architectures=["TinyLocateModel"],
        auto_map={"AutoConfig": "configuration_tiny_locate.TinyLocateConfig", "AutoModel": "modeling_tiny_locate.TinyLocateModel"},
    )
    model = TinyLocateModel(config)
    model.language_model.load_state_dict(decoder.state_dict())
    model.to(torch.bfloat16).save_pretrained(out_dir)
    for name in CODE:
        shutil.copy(HERE / name, out_dir / name)
    AutoTokenizer.from_pretrained(text_model_dir).save_pretrained(out_dir)
    return out_dir
