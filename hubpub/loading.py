"""Loading a checkpoint with transformers, the one way quantize and validate both use.

"Loads without error" proves nothing: a repacked model with a wrong block path loads, reports
missing/unexpected keys, and generates garbage. So every load asks for output_loading_info
and the caller treats any reported key as a failure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

Task = Literal["causal-lm", "image-text-to-text", "custom"]


def task_of(config: dict[str, Any], split: bool) -> Task:
    """What kind of model a checkpoint's config.json describes."""
    auto_map = config.get("auto_map") or {}
    if auto_map:
        if not split and "AutoModelForCausalLM" in auto_map:
            return "causal-lm"  # its own code, but a causal LM all the same: generate() and the text modes work
        return "custom"  # its own API: modes call its methods (custom_generate)
    return "image-text-to-text" if split else "causal-lm"


def model_class(task: str, model_dir: Path):  # type: ignore[no-untyped-def]
    import transformers

    if task == "image-text-to-text":
        return transformers.AutoModelForImageTextToText
    if task == "custom":
        auto_map = json.loads((Path(model_dir) / "config.json").read_text()).get("auto_map", {})
        return transformers.AutoModelForCausalLM if "AutoModelForCausalLM" in auto_map else transformers.AutoModel
    return transformers.AutoModelForCausalLM


def causal_lm_class(model_dir: Path, trust_remote_code: bool):  # type: ignore[no-untyped-def]
    """The class a standalone checkpoint is quantized through: its own (auto_map, with
    trust_remote_code) when it ships custom code, else AutoModelForCausalLM."""
    import transformers

    auto_map = json.loads((Path(model_dir) / "config.json").read_text()).get("auto_map") or {}
    if trust_remote_code and auto_map and "AutoModelForCausalLM" not in auto_map:
        return transformers.AutoModel
    return transformers.AutoModelForCausalLM


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder: its safetensors shards, or the .gguf of a GGUF
    release (:func:`gguf_file`; a transformers folder that also holds a .gguf counts its shards only)."""
    gguf = gguf_file(folder)
    if gguf is not None:
        return [Path(folder) / gguf]
    return sorted(p for p in Path(folder).glob("*.safetensors") if p.is_file())


def weight_bytes(folder: Path) -> int:
    """Bytes on disk of a checkpoint's weight files (what a user downloads to run it)."""
    return sum(p.stat().st_size for p in weight_files(folder))


def gguf_file(folder: Path) -> str | None:
    """The .gguf a GGUF release is (a folder with no config.json and exactly one .gguf), else None.
    Such a folder loads with ``from_pretrained(folder, gguf_file=NAME)``: transformers reads the
    config and tokenizer from the file and dequantizes its tensors."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return None
    found = sorted(folder.glob("*.gguf"))
    return found[0].name if len(found) == 1 else None


def load_checkpoint(model_dir: Path, *, task: str, trust_remote_code: bool, dtype: Any = "auto",
                    device: str = "cpu") -> tuple[Any, dict[str, list[str]]]:
    """(model, problems): problems maps missing/unexpected/mismatched_keys to the keys reported.

    A GGUF release (:func:`gguf_file`) is loaded from the .gguf itself, dequantized to ``dtype``
    ("auto": bfloat16, the base's dtype, so base vs quantized differ by the file's quantization only).
    """
    import transformers

    gguf = gguf_file(model_dir)
    if gguf is not None:
        import torch

        model, info = transformers.AutoModelForCausalLM.from_pretrained(
            model_dir, gguf_file=gguf, dtype=torch.bfloat16 if dtype == "auto" else dtype, device_map=device,
            output_loading_info=True,
        )
        model.eval()
        return model, {k: sorted(str(x) for x in info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    config = json.loads((Path(model_dir) / "config.json").read_text())
    qconfig = config.get("quantization_config") or {}
    kwargs: dict[str, Any] = {}
    gptq = qconfig.get("quant_method") == "gptq"
    if qconfig:
        from .quantize.formats import format_of

        fmt = format_of(qconfig)  # the export format knows what makes transformers load it here
        if fmt is not None:
            kwargs.update(fmt.load_kwargs(qconfig))
    model, info = model_class(task, model_dir).from_pretrained(
        model_dir, dtype=dtype, device_map=device, output_loading_info=True,
        trust_remote_code=trust_remote_code, **kwargs,
    )
    model.eval()
    problems: dict[str, list[str]] = {}
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        found = [str(k) for k in (info.get(key) or [])]
        if gptq and key == "unexpected_keys" and qconfig.get("desc_act") is False:
            # with desc_act = false a GPTQ g_idx is the trivial column order, which these kernels do not read
            found = [k for k in found if not k.endswith(".g_idx")]
        if found:
            problems[key] = sorted(found)
    return model, problems


def describe_problems(problems: dict[str, list[str]]) -> str:
    """'14 missing, 28 unexpected keys (e.g. a, b, c)' for one-line errors."""
    counts = ", ".join(f"{len(v)} {k.removesuffix('_keys')}" for k, v in problems.items())
    first = [k for v in problems.values() for k in v][:3]
    return f"{counts} keys (e.g. {', '.join(first)})"

