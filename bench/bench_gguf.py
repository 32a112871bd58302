"""GGUF types side by side: file size, bits per weight (measured vs the type's nominal) and
KL / top-1 vs the BF16 base, each .gguf loaded back by transformers, all in one run.

    python3 bench/bench_gguf.py                      # the tiny GGUF-shaped Qwen2 (hidden 256)
    python3 bench/bench_gguf.py --model DIR          # any local BF16 transformers folder
    python3 bench/bench_gguf.py --types q4_0,q8_0

Every type is quantized the way a k-quant must be (AutoRound ``scheme="GGUF:<TYPE>"``, iters 0:
round-to-nearest on the type's own grid) and written by auto-round's GGUF export. Ratios are
measured here, in this run; nothing is a recorded figure. Layers whose input size is not a
multiple of 256 are written by auto-round in a fallback type (q5_0) for k-quants: the measured
bits per weight shows it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from test_gguf import known_pre_tokenizer, make_gguf_qwen2  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_TYPES = "q4_0,q4_1,q8_0,q4_k_m,q3_k_m,q2_k_s"


def tiny_model(root: Path) -> Path:
    return make_gguf_qwen2(root / "base", steps=100)


def export(model_dir: Path, gguf_type: str, out: Path) -> tuple[Path, float]:
    import torch
    from auto_round import AutoRound
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    tok = AutoTokenizer.from_pretrained(model_dir)
    t = time.perf_counter()
    rounder = AutoRound(model, tok, scheme=f"GGUF:{gguf_type.upper()}", iters=0, disable_opt_rtn=True, device_map="cpu",
                        enable_torch_compile=False)
    rounder.quantize()
    rounder.save_quantized(str(out), format=f"gguf:{gguf_type}")
    files = list(out.glob("*.gguf"))
    assert len(files) == 1, files
    return files[0], time.perf_counter() - t


def quality(base, model, ids) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        ref = base(ids).logits.float().log_softmax(-1)
        got = model(ids).logits.float().log_softmax(-1)
    kl = float((ref.exp() * (ref - got)).sum(-1).mean())
    top1 = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    return kl, top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a local BF16 transformers folder (default: the tiny GGUF-shaped Qwen2)")
    parser.add_argument("--types", default=DEFAULT_TYPES, help=f"comma-separated GGUF types (default {DEFAULT_TYPES})")
    parser.add_argument("--tokens", type=int, default=512, help="held-out tokens for KL / top-1")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hubpub.quantize.formats.gguf import TYPES, apply_gguf_shim, gguf_tensors
    from hubpub.quantize.tensors import tensor_refs
    from tiny_models import corpus_text

    apply_gguf_shim()
    work = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    os.environ.setdefault("AR_WORK_SPACE", str(work / "ar"))
    model_dir = args.model or tiny_model(work)
    if args.model is None:
        known_pre_tokenizer(model_dir)  # as tests/test_gguf.py: the tiny vocabulary's pre-tokenizer is qwen2's
    base_bytes = sum(r.nbytes for r in tensor_refs(model_dir).values())
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = corpus_text(400_000)[-60_000:]  # the end of the corpus: the tiny model trains on its start
    ids = tok(text, return_tensors="pt").input_ids[:, : args.tokens]
    print(f"base: {model_dir} ({base_bytes:,} weight bytes BF16), {ids.shape[1]} held-out tokens")
    print(f"{'type':8} {'file bytes':>11} {'vs BF16':>8} {'bpw':>6} {'nominal':>7} {'KL':>9} {'top-1':>6} {'export s':>8}  tensor types")
    for name in [t.strip() for t in args.types.split(",") if t.strip()]:
        gtype = TYPES.get(name)
        path, seconds = export(model_dir, name, work / name)
        tensors = gguf_tensors(path)
        linear = [(n, t, b, s) for n, t, b, s in tensors if len(s) == 2 and t not in ("F32", "F16", "BF16")]
        weights = sum(s[0] * s[1] for _, _, _, s in linear)
        bpw = sum(b for _, _, b, _ in linear) * 8 / max(weights, 1)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.bfloat16).eval()
        kl, top1 = quality(base, model, ids)
        kinds: dict[str, int] = {}
        for _, t, _, _ in linear:
            kinds[t] = kinds.get(t, 0) + 1
        size = path.stat().st_size
        nominal = f"{gtype.bpw:.2f}" if gtype else "?"
        print(f"{name:8} {size:>11,} {size / base_bytes:>7.3f}x {bpw:>6.2f} {nominal:>7} {kl:>9.5f} {top1:>6.3f} {seconds:>8.1f}  "
              + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items())))
        del model


if __name__ == "__main__":
    main()
