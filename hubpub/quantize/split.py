"""Split-and-repack: quantize the text decoder of a multimodal / custom checkpoint.

The decoder's tensors (under ``[quantize.split] prefix``) are extracted into a standalone
causal-LM folder, quantized there, and written back under their original names beside every
other tensor, which is copied bit-for-bit. Checkpoints name the decoder differently:

* LLaVA / InternVL style: ``language_model.model.layers.*`` + ``language_model.lm_head.*``
  (keys under the prefix already start with ``model.`` / ``lm_head.``: strip the prefix);
* Qwen2-VL as saved by transformers 5: ``model.layers.*``, ``model.embed_tokens.*`` with
  prefix ``model.`` and a top-level ``lm_head.*`` (map ``<prefix>X`` -> ``model.X``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..naming import WEIGHT_SUFFIXES
from ..errors import QuantizeError
from .tensors import INDEX, TensorRef, write_streamed

SUB_CONFIG_KEYS = ("text_config", "llm_config", "language_config")
# sub-config model types that have no causal-LM class of their own, and the one that fits
TEXT_MODEL_TYPES = {"qwen2_vl_text": "qwen2", "qwen2_5_vl_text": "qwen2", "qwen3_vl_text": "qwen3"}
SMALL_FILE_BYTES = 64 << 20


@dataclass
class DecoderNames:
    """How the decoder's names in the full checkpoint map to a standalone causal LM's."""

    prefix: str
    strip: bool  # True: "<prefix>model.X" -> "model.X"; False: "<prefix>X" -> "model.X"
    top_level_lm_head: bool
    to_decoder: dict[str, str] = field(default_factory=dict)  # full name -> decoder name

    def to_full(self, name: str) -> str:
        if self.strip:
            return self.prefix + name
        if name.startswith("lm_head.") and self.top_level_lm_head:
            return name
        return self.prefix + name.removeprefix("model.")


def identity_names(refs: dict[str, TensorRef]) -> DecoderNames:
    """A plain causal LM is its own decoder."""
    return DecoderNames(prefix="", strip=True, top_level_lm_head=False, to_decoder={n: n for n in refs})


def decoder_names(refs: dict[str, TensorRef], prefix: str) -> DecoderNames:
    under = [n for n in refs if n.startswith(prefix)]
    if not under:
        tops = sorted({n.split(".")[0] + "." for n in refs})
        raise QuantizeError(
            f"quantize.split.prefix: {prefix!r} matches no tensor of the checkpoint; top-level prefixes found: {', '.join(tops)}"
        )
    rests = [n[len(prefix) :] for n in under]
    strip = all(r.startswith(("model.", "lm_head.")) for r in rests)
    lm_head = [n for n in refs if n.startswith("lm_head.")] if not strip else []
    names = DecoderNames(prefix, strip, bool(lm_head))
    for full, rest in zip(under, rests):
        names.to_decoder[full] = rest if strip else "model." + rest
    for full in lm_head:
        names.to_decoder[full] = full
    if not any(d.startswith("model.layers.") for d in names.to_decoder.values()):
        raise QuantizeError(
            f"quantize.split.prefix: no decoder layers under {prefix!r} (expected '{prefix}model.layers.*' or '{prefix}layers.*'); "
            "set it to the prefix of the text decoder, e.g. 'language_model.'"
        )
    return names


def sub_config(full_config: dict[str, Any], config_key: str | None, architecture: str | None, *,
               base_dir: Path | None = None, trust_remote_code: bool = False) -> dict[str, Any]:
    """The standalone decoder's config.json: the decoder sub-config plus an architecture."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    key = config_key or next((k for k in SUB_CONFIG_KEYS if isinstance(full_config.get(k), dict)), None)
    if key is None or not isinstance(full_config.get(key), dict):
        found = [k for k, v in full_config.items() if isinstance(v, dict)]
        raise QuantizeError(
            f"quantize.split.config_key: {'no ' + repr(key) if key else 'no text_config/llm_config/language_config'} in config.json;"
            f" set it to the decoder's sub-config (tables found: {', '.join(found) or 'none'})"
        )
    sub = dict(full_config[key])
    model_type = TEXT_MODEL_TYPES.get(sub.get("model_type", ""), sub.get("model_type", ""))
    arch = architecture or next(iter(sub.get("architectures") or []), None) or MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    cls = getattr(transformers, arch, None) if arch else None
    if (cls is None or not hasattr(cls, "config_class")) and arch and base_dir is not None:
        module = _code_module(full_config, base_dir, arch)
        if module is not None:  # the model's own decoder class: the extracted decoder loads through it
            return _custom_sub_config(full_config, sub, arch, module, base_dir, trust_remote_code)
    if (cls is None or not hasattr(cls, "config_class")) and arch and arch in _custom_classes(full_config):
        raise QuantizeError(
            f"quantize.split.architecture: the decoder class {arch!r} is named in auto_map but defined in none of the"
            " model's .py files; set architecture to the decoder class its code defines, or quantize the whole model"
            " (remove [quantize.split]; model.trust_remote_code = true)"
        )
    if cls is None or not hasattr(cls, "config_class"):
        raise QuantizeError(
            f"quantize.split.architecture: cannot infer the decoder class for model_type {sub.get('model_type')!r}"
            f"{' (' + repr(arch) + ' is not a transformers class)' if arch else ''}; set it, e.g. architecture = \"Qwen2ForCausalLM\""
        )
    sub["model_type"] = cls.config_class.model_type
    sub["architectures"] = [arch]
    rope = sub.get("rope_parameters") or sub.get("rope_scaling")
    if isinstance(rope, dict) and rope.get("type") == "mrope":
        # text-only positions make multimodal RoPE equal to plain RoPE
        sub["rope_parameters"] = {"rope_type": "default", "rope_theta": rope.get("rope_theta", sub.get("rope_theta", 10000.0))}
        sub.pop("rope_scaling", None)
    _inherit(sub, full_config)
    return sub


def _inherit(sub: dict[str, Any], full_config: dict[str, Any]) -> None:
    """What a standalone decoder's config takes from the full model's, and its dtype."""
    for inherited in ("tie_word_embeddings", "eos_token_id", "pad_token_id", "bos_token_id"):
        if inherited not in sub and inherited in full_config:
            sub[inherited] = full_config[inherited]
    sub["dtype"] = "bfloat16"


def _code_module(full_config: dict[str, Any], base_dir: Path, arch: str) -> str | None:
    """The module of the model's own code that defines class ``arch`` (auto_map first, then a scan)."""
    for ref in (full_config.get("auto_map") or {}).values():
        if isinstance(ref, str) and ref.rsplit(".", 1)[-1] == arch and "--" not in ref:
            return ref.rsplit(".", 1)[0]
    pattern = re.compile(rf"^class {re.escape(arch)}\b", re.M)
    for path in sorted(base_dir.glob("*.py")):
        try:
            if pattern.search(path.read_text(encoding="utf-8")):
                return path.stem
        except (OSError, UnicodeDecodeError):
            continue
    return None


def _custom_sub_config(full_config: dict[str, Any], sub: dict[str, Any], arch: str, module: str, base_dir: Path,
                       trust_remote_code: bool) -> dict[str, Any]:
    """The decoder sub-config of a model whose decoder class is its own code: an auto_map to it
    (and to its config class) so the extracted folder loads with trust_remote_code, as the model."""
    if not trust_remote_code:
        raise QuantizeError(
            f"quantize.split.architecture: the decoder class {arch!r} is the model's own code ({module}.py);"
            " set model.trust_remote_code = true after reviewing it"
        )
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    try:
        cls = get_class_from_dynamic_module(f"{module}.{arch}", str(base_dir))
    except Exception as exc:  # the model's code failed to import
        raise QuantizeError(f"quantize.split.architecture: importing {module}.{arch} from {base_dir} raised"
                            f" {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    config_cls = getattr(cls, "config_class", None)
    out = dict(sub)
    out["architectures"] = [arch]
    out["auto_map"] = {"AutoModelForCausalLM": f"{module}.{arch}"}
    if config_cls is not None and getattr(config_cls, "__module__", "").split(".")[-1] != "configuration_utils":
        config_module = config_cls.__module__.rsplit(".", 1)[-1]
        if not config_cls.__module__.startswith("transformers."):
            out["auto_map"]["AutoConfig"] = f"{config_module}.{config_cls.__name__}"
        out["model_type"] = config_cls.model_type or out.get("model_type")
    _inherit(out, full_config)
    return out


def _custom_classes(full_config: dict[str, Any]) -> set[str]:
    auto_map = full_config.get("auto_map") or {}
    return {str(v).rsplit(".", 1)[-1] for v in auto_map.values()} | set(full_config.get("architectures") or [])


def check_extracted(decoder_dir: Path, names: DecoderNames, trust_remote_code: bool) -> None:
    """Every tensor of the extracted decoder must be one its class loads, before any tuning.

    A decoder class that lacks some of the checkpoint's modules (e.g. a mixture-of-transformers'
    ``_moe_gen`` twins under a stock Qwen2 class) would silently drop them.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(decoder_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    expected = set(model.state_dict())
    from .tensors import tensor_refs

    have = set(tensor_refs(decoder_dir))
    dropped = sorted(have - expected)
    if dropped:
        raise QuantizeError(
            f"quantize.split: {type(model).__name__} has no place for {len(dropped)} tensor(s) of the decoder"
            f" (e.g. {names.to_full(dropped[0])}), which the split would drop; quantize the whole model instead:"
            " remove [quantize.split] and set quantize.targets (and model.trust_remote_code for custom code)"
        )
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = sorted(expected - have - tied)
    if missing:
        raise QuantizeError(
            f"quantize.split: the extracted decoder lacks {len(missing)} tensor(s) {type(model).__name__} needs"
            f" (e.g. {missing[0]}); check quantize.split.prefix and config_key"
        )


def write_decoder(full_dir: Path, names: DecoderNames, refs: dict[str, TensorRef], config: dict[str, Any], out: Path) -> None:
    """A standalone causal-LM folder: streamed decoder tensors, its config, the tokenizer."""
    out.mkdir(parents=True)
    write_streamed([refs[full].renamed(dec) for full, dec in names.to_decoder.items()], out)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # a text-only decoder: processor files would make AutoRound treat it as a multimodal model
    processor_files = {"processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json"}
    # the model's code only when the decoder class is its own (config auto_map), never otherwise
    copy_side_files(full_dir, out, skip={"config.json", "generation_config.json", *processor_files}, code=bool(config.get("auto_map")))


def copy_side_files(src: Path, dst: Path, skip: set[str], code: bool = True) -> list[str]:
    """Tokenizer, processor, chat template, custom code and other small files (never weights)."""
    copied = []
    for path in sorted(src.iterdir()):
        if not path.is_file() or path.name in skip or path.name == INDEX or path.name.endswith(WEIGHT_SUFFIXES):
            continue
        if path.name.startswith(".") or path.stat().st_size > SMALL_FILE_BYTES or (path.suffix == ".py" and not code):
            continue
        if (dst / path.name).exists():
            continue
        shutil.copy2(path, dst / path.name)
        copied.append(path.name)
    return copied


# ----------------------------------------------------------------------------- names as loaded
def loaded_layout(full_dir: Path, decoder_refs: dict[str, TensorRef], num_layers: int,
                  trust_remote_code: bool) -> tuple[str, list[str]]:
    """(block path, unquantized prefixes) of the full model AS transformers builds it.

    Loading renames checkpoint keys (``language_model.model.layers`` becomes
    ``model.language_model.layers``), so the names in the checkpoint cannot be used here.
    The prefixes name every module holding Linear layers outside the decoder blocks (vision
    tower, projector, lm_head): a loader that quantizes "every Linear" must skip them.
    """
    import torch

    layer0 = {n[len("model.layers.0.") : -len(".weight")] for n, r in decoder_refs.items()
              if n.startswith("model.layers.0.") and n.endswith(".weight") and len(r.shape) == 2}
    model = _meta_model(full_dir, trust_remote_code)
    candidates = []
    for name, module in model.named_modules():
        if type(module).__name__ == "ModuleList" and len(module) == num_layers:
            inner = {n for n, _ in module[0].named_modules()}
            if layer0 <= inner:
                candidates.append(name)
    if len(candidates) != 1:
        raise QuantizeError(
            f"quantize.split: cannot tell which module list of {type(model).__name__} is the decoder"
            f" (candidates: {', '.join(candidates) or 'none'}); check quantize.split.prefix and config_key"
        )
    block = candidates[0]
    ancestors = {block.rsplit(".", i)[0] for i in range(block.count(".") + 1)}
    keep: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.startswith(block + "."):
            parts = name.split(".")
            # the shortest prefix of this Linear's name that is not on the way to the decoder blocks
            keep.add(next(".".join(parts[: i + 1]) for i in range(len(parts)) if ".".join(parts[: i + 1]) not in ancestors))
    return block, sorted(keep)


def _meta_model(full_dir: Path, trust_remote_code: bool) -> Any:
    import torch
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(full_dir, trust_remote_code=trust_remote_code)
    arch = (config.architectures or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    with torch.device("meta"):
        if cls is not None:
            return cls._from_config(config)
        for auto in ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel"):
            try:
                return getattr(transformers, auto).from_config(config, trust_remote_code=trust_remote_code)
            except ValueError:
                continue
    raise QuantizeError(f"quantize.split: transformers cannot build {arch!r} from {full_dir}/config.json; set model.trust_remote_code = true if it ships custom code")


def exclude_modules(qconfig: dict[str, Any], prefixes: list[str]) -> dict[str, Any]:
    """Tell every loader to leave the modules under these prefixes unquantized."""
    out = dict(qconfig)
    if out.get("quant_method") == "compressed-tensors":
        ignore = list(out.get("ignore") or [])
        out["ignore"] = ignore + [f"re:^{re.escape(p)}($|\\.)" for p in prefixes if p not in ignore]
    else:
        current = list(out.get("modules_to_not_convert") or [])
        out["modules_to_not_convert"] = current + [p for p in prefixes if p not in current]
    return out


def rename_block_path(value: Any, old: str, new: str) -> Any:
    """Rewrite module names (plain or regex-escaped) inside a quantization_config."""
    old_re, new_re = re.escape(old), re.escape(new)
    pattern = re.compile(r"(^|(?<=[:*^]))(" + re.escape(old) + "|" + re.escape(old_re) + r")(?=$|\.|\\)")

    def fix(s: str) -> str:
        return pattern.sub(lambda m: new if m.group(2) == old else new_re, s)

    if isinstance(value, str):
        return fix(value)
    if isinstance(value, list):
        return [rename_block_path(v, old, new) for v in value]
    if isinstance(value, dict):
        return {fix(k): rename_block_path(v, old, new) for k, v in value.items()}
    return value
