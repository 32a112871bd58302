"""Release folders for the card tests: what quantize and validate would have written.

The quantize and validate stages write hubpub_manifest.json / hubpub_metrics.json; here they
are built from the real schemas (artifacts.Manifest / Metrics) with realistic numbers so the
card can be rendered and checked without running those stages.
"""

from __future__ import annotations

from pathlib import Path

from hubpub.artifacts import MANIFEST, METRICS, RECIPE_COPY, GateResult, Manifest, Metrics
from hubpub.validate.evals import grounding as grounding_eval
from hubpub.validate.evals.kl import TOP1
from hubpub.validate.evals.perplexity import PPL

VERSIONS = {"auto_round": "0.16.1", "hubpub": "0.1.0", "python": "3.11.7", "torch": "2.13.0", "transformers": "5.23.0"}
ENVIRONMENT = {"device": "cpu", "cpu": "x86_64 (2 cores)", "torch": "2.13.0", "transformers": "5.23.0"}
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

CAUSAL_RECIPE = """\
output_dir = "out"

[model]
source = "base"
name = "Qwen2.5-0.5B-Instruct"

[quantize]
bits = 4
group_size = {group_size}
iters = 200
nsamples = 128
seqlen = 2048

[[validate.modes]]
name = "chat"
prompt = "Name three prime numbers."

[validate.gates]
max_ppl_increase = 0.10

[[eval]]
kind = "perplexity"
file = "builtin:pydoc"

[card]
base_model = "Qwen/Qwen2.5-0.5B-Instruct"
caveats = ["Calibrated on English prose only; other languages may degrade more."]
{card_extra}
[push]
repo_id = "hubpub-demo/Qwen2.5-0.5B-Instruct-AutoRound-W4A16"
{push_extra}"""

VLM_RECIPE = """\
output_dir = "out"

[model]
source = "base"
name = "LocateAnything-3B"

[quantize]
bits = 4
group_size = 128
iters = 200
keep_bf16 = ["model.visual."]

[quantize.split]
prefix = "model.language_model."

[[validate.modes]]
name = "locate"
prompt = "Locate the red square."
images = ["images/shapes.png"]
expect = { boxes = 1 }

[[eval]]
kind = "grounding"
images = 12

[card]
base_model = "example-org/LocateAnything-3B"
tags = ["grounding"]

[push]
repo_id = "hubpub-demo/LocateAnything-3B-AutoRound-W4A16"
"""


def _linear_groups(prefix: str, layers: int, bytes_per_linear: int) -> list[dict]:
    return [
        {
            "pattern": f"{prefix}layers.*.{name}",
            "action": "quantized",
            "tensors": layers,
            "linears": layers,
            "packed_tensors": layers * 3,  # qweight, qzeros, scales
            "bytes_before": layers * bytes_per_linear,
            "bytes_after": layers * bytes_per_linear * 9 // 32,
        }
        for name in LINEARS
    ]


def causal_manifest(group_size: int = 128) -> Manifest:
    groups = _linear_groups("model.", 24, 2_000_000) + [
        {"pattern": "model.embed_tokens", "action": "kept", "tensors": 1, "bytes_before": 272_269_312, "bytes_after": 272_269_312, "dtype": "bfloat16"},
        {"pattern": "lm_head", "action": "kept", "tensors": 1, "bytes_before": 272_269_312, "bytes_after": 272_269_312, "dtype": "bfloat16"},
        {"pattern": "model.layers.*.*_layernorm", "action": "kept", "tensors": 48, "bytes_before": 86_016, "bytes_after": 86_016, "dtype": "bfloat16"},
    ]
    return Manifest(
        hubpub_version="0.1.0",
        recipe_hash=f"causal-g{group_size}",
        source={"kind": "folder", "location": "base", "revision": None, "fingerprint": "abc123"},
        model_name="Qwen2.5-0.5B-Instruct",
        model_type="qwen2",
        architecture="Qwen2ForCausalLM",
        task="causal-lm",
        method="autoround",
        bits=4,
        group_size=group_size,
        sym=True,
        format="auto_round",
        iters=200,
        nsamples=128,
        seqlen=2048,
        groups=groups,
        tensors_before=290,
        tensors_after=626,
        linears_quantized=168,
        bytes_before=988_097_536,
        bytes_after=458_496_000 if group_size == 128 else 478_912_000,
        timings={"load": 3.2, "quantize": 512.4, "export": 6.1, "total": 521.7},
        versions=VERSIONS,
        device="cuda",
        files=["config.json", "model.safetensors", "quantization_config.json", "tokenizer.json", "tokenizer_config.json"],
    )


def causal_metrics(group_size: int = 128) -> Metrics:
    v2 = group_size == 64
    return Metrics(
        hubpub_version="0.1.0",
        recipe_hash=f"causal-g{group_size}",
        passed=True,
        environment=ENVIRONMENT,
        base={"weight_bytes": 988_097_536, "peak_memory_bytes": 1_412_000_000, "resident_bytes": 1_003_000_000, "load_s": 1.84,
              "latency_s": 0.912, "latency_interval": (0.874, 0.951), "latency_runs": 5, "tokens_per_s": 26.3, "validity": 1.0},
        quantized={
            "weight_bytes": 478_912_000 if v2 else 458_496_000,
            "peak_memory_bytes": 742_000_000 if v2 else 716_000_000,
            "resident_bytes": 489_000_000 if v2 else 470_000_000,
            "load_s": 2.31,
            "latency_s": 1.204 if v2 else 1.187,
            "latency_interval": (1.15, 1.26) if v2 else (1.13, 1.24),
            "latency_runs": 5,
            "quant_backend": "auto_round_kernel.qlinear.QuantLinearGPTQ",
            "tokens_per_s": 19.9 if v2 else 20.2,
            "validity": 1.0,
        },
        modes=[
            {"mode": "chat", "model": "base", "ok": True, "expected": "non-empty text", "output": "2, 3 and 5.", "latency_s": 0.91,
             "latencies_s": [0.88, 0.90, 0.91, 0.93, 0.95]},
            {"mode": "chat", "model": "quantized", "ok": True, "expected": "non-empty text", "output": "2, 3, 5.", "latency_s": 1.19,
             "latencies_s": [1.13, 1.17, 1.19, 1.21, 1.24]},
        ],
        evals=[
            {
                "name": "perplexity",
                "kind": "perplexity",
                "metrics": {
                    "perplexity": {"base": 12.107, "quantized": 12.488 if v2 else 12.603},
                    "top1_agreement": {"base": None, "quantized": 0.9412 if v2 else 0.9305},
                },
                "intervals": {
                    "perplexity": {"base": (11.62, 12.61), "quantized": (12.07, 13.11) if not v2 else (11.98, 12.99),
                                   "delta": (0.012, 0.071) if not v2 else (0.004, 0.059)},
                    "top1_agreement": {"quantized": (0.921, 0.939)},
                },
                "display": {"perplexity": PPL.model_dump(), "top1_agreement": TOP1.model_dump()},
            }
        ],
        gates=[{"name": "max_ppl_increase", "threshold": 0.1, "value": 0.0315 if v2 else 0.041, "passed": True, "unit": "relative",
                "note": "from perplexity"}],
        samples=[{"mode": "chat", "prompt": "Name three prime numbers.", "base": "2, 3 and 5.", "quantized": "2, 3, 5."}],
    )


def vlm_manifest() -> Manifest:
    groups = _linear_groups("model.language_model.", 36, 6_000_000) + [
        {"pattern": "model.visual.*", "action": "kept", "tensors": 326, "bytes_before": 1_337_000_000, "bytes_after": 1_337_000_000, "dtype": "bfloat16"},
        {"pattern": "model.language_model.embed_tokens", "action": "kept", "tensors": 1, "bytes_before": 311_000_000, "bytes_after": 311_000_000, "dtype": "bfloat16"},
        {"pattern": "lm_head", "action": "kept", "tensors": 1, "bytes_before": 311_000_000, "bytes_after": 311_000_000, "dtype": "bfloat16"},
    ]
    return Manifest(
        hubpub_version="0.1.0",
        recipe_hash="vlm",
        source={"kind": "folder", "location": "base", "revision": None, "fingerprint": "def456"},
        model_name="LocateAnything-3B",
        model_type="qwen2_5_vl",
        architecture="Qwen2_5_VLForConditionalGeneration",
        task="image-text-to-text",
        method="autoround",
        bits=4,
        group_size=128,
        sym=True,
        format="auto_round",
        iters=200,
        nsamples=128,
        seqlen=2048,
        split_prefix="model.language_model.",
        block_name_to_quantize="model.language_model.layers",
        groups=groups,
        tensors_before=1006,
        tensors_after=1510,
        linears_quantized=252,
        bytes_before=7_509_000_000,
        bytes_after=3_047_000_000,
        timings={"load": 9.0, "quantize": 1630.2, "export": 21.4, "repack": 12.9, "total": 1673.5},
        versions=VERSIONS,
        device="cuda",
    )


def vlm_metrics() -> Metrics:
    per_class = [
        {"class": name, "n": 2, "base_mean_iou": b, "quantized_mean_iou": q, "base_hit": hb, "quantized_hit": hq}
        for name, b, q, hb, hq in [
            ("square", 0.881, 0.874, 1.0, 1.0),
            ("circle", 0.842, 0.829, 1.0, 1.0),
            ("triangle", 0.733, 0.706, 1.0, 0.5),
            ("A", 0.802, 0.797, 1.0, 1.0),
        ]
    ]
    return Metrics(
        hubpub_version="0.1.0",
        recipe_hash="vlm",
        passed=True,
        environment={"device": "cuda", "gpu": "NVIDIA H200", "torch": "2.13.0", "transformers": "5.23.0"},
        base={"weight_bytes": 7_509_000_000, "peak_memory_bytes": 8_120_000_000, "memory_kind": "cuda_max_allocated", "latency_s": 1.42, "validity": 1.0},
        quantized={"weight_bytes": 3_047_000_000, "peak_memory_bytes": 3_690_000_000, "memory_kind": "cuda_max_allocated", "latency_s": 1.71, "validity": 1.0},
        modes=[
            {"mode": "locate", "model": "base", "ok": True, "expected": ">= 1 box", "output": "<box>112,80,220,190</box>"},
            {"mode": "locate", "model": "quantized", "ok": True, "expected": ">= 1 box", "output": "<box>110,82,221,188</box>"},
        ],
        evals=[
            {
                "name": "grounding",
                "kind": "grounding",
                "metrics": {"mean_iou": {"base": 0.8145, "quantized": 0.8015}, "iou@0.5": {"base": 1.0, "quantized": 0.875}},
                "intervals": {"mean_iou": {"base": (0.77, 0.85), "quantized": (0.76, 0.84), "delta": (-0.031, 0.004)},
                              "iou@0.5": {"base": (1.0, 1.0), "quantized": (0.708, 1.0), "delta": (-0.292, 0.0)}},
                "display": {k: v.model_dump() for k, v in grounding_eval.METRICS.items() if k != "parsed"},
                "per_class": per_class,
                "images": ["assets/grounding_0.png"],
            }
        ],
        gates=[{"name": "min_validity", "threshold": 1.0, "value": 1.0, "passed": True, "unit": "%", "note": "modes that pass on the base (1 of 1)"}],
        samples=[
            {"mode": "locate", "prompt": "Locate the red square.", "base": "<box>112,80,220,190</box>", "quantized": "<box>110,82,221,188</box>"},
            {"mode": "locate", "prompt": "Locate every | bar.", "base": "line one\nline two", "quantized": ""},
        ],
    )


def _release_folder(root: Path, recipe_text: str, manifest: Manifest, metrics: Metrics, base_license: str) -> Path:
    base = root / "base"
    base.mkdir(parents=True, exist_ok=True)
    (base / "README.md").write_text(f"---\n{base_license}\n---\n\n# Base model\n", encoding="utf-8")
    out = root / "out"
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "quantization_config.json", "tokenizer.json", "tokenizer_config.json"):
        (out / name).write_text("{}\n", encoding="utf-8")
    (out / "model.safetensors").write_bytes(b"\0" * 4096)
    (out / RECIPE_COPY).write_text(recipe_text, encoding="utf-8")
    manifest.write(out / MANIFEST)
    metrics.write(out / METRICS)
    recipe = root / "recipe.toml"
    recipe.write_text(recipe_text, encoding="utf-8")
    return recipe


def causal_release(root: Path, *, group_size: int = 128, card_extra: str = "", push_extra: str = "") -> Path:
    text = CAUSAL_RECIPE.format(group_size=group_size, card_extra=card_extra, push_extra=push_extra)
    return _release_folder(root, text, causal_manifest(group_size), causal_metrics(group_size), "license: apache-2.0\nlanguage:\n- en")


def vlm_release(root: Path) -> Path:
    recipe = _release_folder(
        root,
        VLM_RECIPE,
        vlm_manifest(),
        vlm_metrics(),
        "license: other\nlicense_name: qwen-research\nlicense_link: https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/LICENSE",
    )
    (root / "out" / "assets").mkdir(exist_ok=True)
    (root / "out" / "assets" / "grounding_0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "out" / "preprocessor_config.json").write_text("{}\n", encoding="utf-8")
    return recipe


def v2_release(root: Path) -> Path:
    """A v2 (group_size 64) release whose v1 (group_size 128) folder sits beside it."""
    previous = root / "v1"
    previous.mkdir(parents=True)
    (previous / RECIPE_COPY).write_text(CAUSAL_RECIPE.format(group_size=128, card_extra="", push_extra='tag = "v1"\n'), encoding="utf-8")
    causal_metrics(128).write(previous / METRICS)
    return causal_release(root, group_size=64, card_extra='previous = "v1"\nprevious_tag = "v1"\n', push_extra='tag = "v2"\n')


def lm_eval_metrics() -> Metrics:
    """The causal release measured with kind = "lm_eval" (arc_easy from the Hub, a local task) and similarity."""
    metrics = causal_metrics()
    table = [
        {"task": "arc_easy", "metric": "acc", "base": 0.7412, "quantized": 0.7336, "recovery": 0.7336 / 0.7412,
         "base_stderr": 0.0090, "quantized_stderr": 0.0091},
        {"task": "hubpub_tiny_mc", "metric": "acc", "base": 0.8125, "quantized": 0.75, "recovery": 0.75 / 0.8125,
         "base_stderr": 0.1008, "quantized_stderr": 0.1118, "label": "hubpub_tiny_mc acc", "below": ["min_recovery"]},
    ]
    table[0].update(label="arc_easy acc", below=[])
    lowest = min(t["recovery"] for t in table)
    metrics.evals.append(Metrics.model_validate({**metrics.model_dump(), "evals": [{
        "name": "benchmarks", "kind": "lm_eval",
        "metrics": {"recovery": {"quantized": (table[0]["recovery"] + table[1]["recovery"]) / 2},
                    "min_task_recovery": {"quantized": lowest},
                    **{f"{t['task']}:acc": {"base": t["base"], "quantized": t["quantized"]} for t in table}},
        "display": {"recovery": {"label": "Mean recovery (lm-eval)", "unit": "%", "digits": 1, "delta": "points"},
                    "min_task_recovery": {"label": "Lowest task recovery (lm-eval)", "unit": "%", "digits": 1, "delta": "points",
                                          "headline": False},
                    **{f"{t['task']}:acc": {"label": f"{t['task']} acc", "digits": 4, "headline": False} for t in table}},
        "details": {
            "table": table, "lm_eval_version": "0.4.13", "num_fewshot": None, "limit": 200,
            "command": "lm_eval --model hf --model_args pretrained=hubpub-demo/Qwen2.5-0.5B-Instruct-AutoRound-W4A16,dtype=auto"
                       " --tasks arc_easy,hubpub_tiny_mc --batch_size 1 --limit 200 --include_path tasks",
            "tasks": [{"task": "arc_easy", "dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy", "version": "1.0", "samples": 200},
                      {"task": "hubpub_tiny_mc", "dataset_path": "json", "version": "1.0", "samples": 16}],
        },
    }]}).evals[0])
    metrics.gates.append(GateResult(name="min_recovery", threshold=0.97, value=lowest, passed=False, unit="%",
                                    note="below the limit: hubpub_tiny_mc acc 92.3 % (from benchmarks)"))
    metrics.passed = False
    return metrics


def lm_eval_release(root: Path) -> Path:
    recipe = causal_release(root)
    lm_eval_metrics().write(root / "out" / METRICS)
    return recipe
