"""Read and write safetensors checkpoints tensor by tensor, without loading whole models.

A checkpoint is one ``model.safetensors`` or shards listed in ``model.safetensors.index.json``.
:func:`write_streamed` copies each tensor's bytes straight from its source file into the
output, so untouched tensors stay bit-identical and memory stays at one buffer.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import QuantizeError

INDEX = "model.safetensors.index.json"
DTYPE_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
COPY_BUFFER = 16 << 20
SHARD_BYTES = 5 << 30


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes are: file, absolute byte range, dtype, shape."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    def renamed(self, name: str) -> "TensorRef":
        return TensorRef(name, self.file, self.dtype, self.shape, self.begin, self.end)


def checkpoint_files(folder: Path) -> list[Path]:
    index = folder / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return [folder / f for f in sorted(set(weight_map.values()))]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise QuantizeError(f"model.source: {folder} has no *.safetensors weights")
    return files


def read_header(file: Path) -> tuple[dict, int]:
    with open(file, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise QuantizeError(f"model.source: {file} is not a safetensors file (truncated); re-download or re-save it")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(size))
        except ValueError:
            raise QuantizeError(f"model.source: {file} has a corrupt safetensors header; re-download or re-save it") from None
    return header, 8 + size


def tensor_refs(folder: Path) -> dict[str, TensorRef]:
    """Every tensor of a checkpoint folder, by name, in file order."""
    refs: dict[str, TensorRef] = {}
    for file in checkpoint_files(folder):
        if not file.is_file():
            raise QuantizeError(f"model.source: shard {file.name} listed in {INDEX} is missing from {folder}")
        header, base = read_header(file)
        size = file.stat().st_size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            if base + end > size:
                raise QuantizeError(f"model.source: {file} is truncated (tensor {name} ends past the file); re-download it")
            refs[name] = TensorRef(name, file, info["dtype"], tuple(info["shape"]), base + begin, base + end)
    return refs


def write_streamed(refs: list[TensorRef], out_dir: Path, metadata: dict[str, str] | None = None, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """Write refs as a (sharded) safetensors checkpoint into out_dir; returns the file names."""
    shards: list[list[TensorRef]] = [[]]
    size = 0
    for ref in refs:
        if shards[-1] and size + ref.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(ref)
        size += ref.nbytes
    names = ["model.safetensors"] if len(shards) == 1 else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for name, shard in zip(names, shards):
        _write_one(out_dir / name, shard, metadata or {"format": "pt"})
        weight_map.update({ref.name: name for ref in shard})
    if len(names) > 1:
        total = sum(r.nbytes for r in refs)
        (out_dir / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return names


def _write_one(path: Path, refs: list[TensorRef], metadata: dict[str, str]) -> None:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for ref in refs:
        header[ref.name] = {"dtype": ref.dtype, "shape": list(ref.shape), "data_offsets": [offset, offset + ref.nbytes]}
        offset += ref.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format wants the data aligned to 8 bytes
    handles: dict[Path, object] = {}
    try:
        with open(path, "wb") as out:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            for ref in refs:
                src = handles.get(ref.file)
                if src is None:
                    src = handles[ref.file] = open(ref.file, "rb")
                src.seek(ref.begin)  # type: ignore[attr-defined]
                left = ref.nbytes
                while left:
                    chunk = src.read(min(left, COPY_BUFFER))  # type: ignore[attr-defined]
                    if not chunk:
                        raise QuantizeError(f"model.source: {ref.file} ended early while copying {ref.name}; re-download it")
                    out.write(chunk)
                    left -= len(chunk)
    finally:
        for fh in handles.values():
            fh.close()  # type: ignore[attr-defined]
