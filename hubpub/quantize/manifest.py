"""The inventory: every base tensor is either kept (copied bit-for-bit) or part of a quantized linear.

:func:`account` decides, per tensor of the base checkpoint, where its bytes go in the release
folder and groups the decisions by name pattern for ``hubpub_manifest.json``. A tensor that is
neither kept nor quantized is an error, and so is a tensor AutoRound wrote that we cannot place.
"""

from __future__ import annotations

import re
from pathlib import Path
from dataclasses import dataclass

from ..artifacts import TensorGroup
from ..errors import QuantizeError
from .split import DecoderNames
from .tensors import TensorRef

# the tensor that marks a linear as packed, per export format
PACKED_MARKERS = (".qweight", ".weight_packed")


@dataclass
class Inventory:
    outputs: list[TensorRef]  # the release checkpoint's tensors, in order, with their sources
    groups: list[TensorGroup]
    linears_quantized: int


def _pattern(name: str) -> str:
    return re.sub(r"\.\d+(?=\.|$)", ".*", name)


def _changed(base: TensorRef, exported: TensorRef) -> bool:
    """Did the backend change this tensor's values (not just its dtype)? AWQ folds its scales into norms."""
    from safetensors import safe_open

    with safe_open(str(base.file), "pt") as f:
        a = f.get_tensor(base.name).float()
    with safe_open(str(exported.file), "pt") as f:
        b = f.get_tensor(exported.name).float()
    scale = float(a.abs().max()) or 1.0
    return float((a - b).abs().max()) > 1e-2 * scale  # a bf16 <-> fp16 cast moves values by < 0.4 %


def account(refs: dict[str, TensorRef], names: DecoderNames, qrefs: dict[str, TensorRef],
            rescales: bool = False) -> Inventory:
    """``rescales``: the backend may change non-quantized tensors (AWQ folds scales into the
    preceding norms); those whose values changed are taken from the export, the rest from the base."""
    quantized = {n[: -len(m)] for n in qrefs for m in PACKED_MARKERS if n.endswith(m)}
    packed_of: dict[str, list[TensorRef]] = {m: [] for m in quantized}
    placed: set[str] = set()
    for n, ref in qrefs.items():
        module = n.rsplit(".", 1)[0]
        if module in packed_of:
            packed_of[module].append(ref)
            placed.add(n)

    groups: dict[tuple[str, str], TensorGroup] = {}

    def group(pattern: str, action: str, dtype: str | None = None) -> TensorGroup:
        key = (pattern, action)
        if key not in groups:
            groups[key] = TensorGroup(pattern=pattern, action=action, tensors=0, bytes_before=0, bytes_after=0, dtype=dtype)  # type: ignore[arg-type]
        return groups[key]

    outputs: list[TensorRef] = []
    emitted: set[str] = set()
    for full, ref in refs.items():
        dec = names.to_decoder.get(full)
        if dec is None:  # outside the decoder (vision tower, projector): untouched
            g = group(full.split(".")[0] + ".*", "kept", ref.dtype)
            g.tensors += 1
            g.bytes_before += ref.nbytes
            g.bytes_after += ref.nbytes
            outputs.append(ref)
            continue
        module = dec.rsplit(".", 1)[0]
        if module in quantized:
            g = group(_pattern(names.to_full(module)), "quantized")
            g.tensors += 1
            g.bytes_before += ref.nbytes
            if module not in emitted:
                emitted.add(module)
                packed = packed_of[module]
                g.linears += 1
                g.packed_tensors += len(packed)
                g.bytes_after += sum(p.nbytes for p in packed)
                outputs.extend(p.renamed(names.to_full(p.name)) for p in packed)
            continue
        if dec in qrefs:
            if qrefs[dec].shape != ref.shape:
                raise QuantizeError(f"quantize: exported tensor {dec} has shape {qrefs[dec].shape}, the base has {ref.shape}; report this as a hubpub bug")
            placed.add(dec)
            if rescales and len(ref.shape) == 1 and _changed(ref, qrefs[dec]):
                new = qrefs[dec].renamed(full)
                g = group(_pattern(full), "kept", new.dtype)
                g.tensors += 1
                g.bytes_before += ref.nbytes
                g.bytes_after += new.nbytes
                g.rescaled += 1
                outputs.append(new)  # the backend's values (scales folded in)
                continue
            g = group(_pattern(full), "kept", ref.dtype)
            g.tensors += 1
            g.bytes_before += ref.nbytes
            g.bytes_after += ref.nbytes
            outputs.append(ref)  # the base's own bytes: bit-identical
            continue
        raise QuantizeError(f"quantize: base tensor {full} was neither kept nor quantized by the export; report this as a hubpub bug")
    stray = [n for n in qrefs if n not in placed]
    if stray:
        raise QuantizeError(f"quantize: the export wrote {len(stray)} tensor(s) with no base tensor ({', '.join(stray[:3])}); report this as a hubpub bug")
    return Inventory(outputs, list(groups.values()), len(quantized))


# ----------------------------------------------------------------------------- GGUF (one file)
GGUF_FLOAT_TYPES = ("F32", "F16", "BF16", "F64")


def account_gguf(refs: dict[str, TensorRef], gguf_path: Path) -> Inventory:
    """The inventory of a GGUF release: every tensor of the .gguf file (its ggml type and bytes),
    grouped by the base tensor it came from (llama.cpp's name map: ``blk.0.attn_q.weight`` <-
    ``model.layers.0.self_attn.q_proj.weight``). Float tensors (norms, biases) are "kept"; a group
    of a quantized pattern whose layers got different ggml types (Q4_K_M gives some Q6_K) is one
    group per type. Embeddings and the output head are quantized too in GGUF."""
    import gguf

    from .formats.gguf import gguf_tensors

    reader = gguf.GGUFReader(str(gguf_path))
    field = reader.fields.get("general.architecture")
    arch_name = bytes(field.parts[field.data[0]]).decode() if field is not None else ""
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(arch_name)
    blocks = 1 + max([int(m.group(1)) for n in refs for m in [re.search(r"\.layers\.(\d+)\.", n)] if m] or [-1])
    name_map = gguf.get_tensor_name_map(arch, blocks) if arch is not None else None
    origin: dict[str, str] = {}  # gguf name -> base name
    for name in refs:
        mapped = name_map.get_name(name, try_suffixes=(".weight", ".bias")) if name_map is not None else None
        if mapped:  # with try_suffixes the mapped name keeps the suffix (".weight")
            origin[mapped] = name
    outputs: list[TensorRef] = []
    groups: dict[tuple[str, str], TensorGroup] = {}
    linears = 0
    for t, (name, ggml, nbytes, shape) in zip(reader.tensors, gguf_tensors(gguf_path)):
        begin = int(t.data_offset)
        outputs.append(TensorRef(name, gguf_path, ggml, shape, begin, begin + nbytes))
        base = origin.get(name)
        quantized = ggml not in GGUF_FLOAT_TYPES
        pattern = _pattern(base.rsplit(".", 1)[0] if quantized else base) if base else _pattern(name)
        key = (pattern, ggml)
        if key not in groups:
            groups[key] = TensorGroup(pattern=pattern, action="quantized" if quantized else "kept", tensors=0,
                                      bytes_before=0, bytes_after=0, dtype=ggml)
        g = groups[key]
        g.tensors += 1
        g.bytes_before += refs[base].nbytes if base else 0
        g.bytes_after += nbytes
        if quantized and len(shape) == 2:
            g.linears += 1
            g.packed_tensors += 1
            linears += 1
    return Inventory(outputs, sorted(groups.values(), key=lambda g: (g.pattern, g.dtype or "")), linears)
