"""`hubpub init`: a starter recipe and a release-on-tag GitHub Actions workflow for a user's repo.

The starter works as written: its ``group_size`` is one that divides the input size of every
linear layer of the model it names (SmolLM2-135M's 576 / 1536 need 64 or 32, not 128), its
calibration is ``builtin:pydoc`` (present in every CPython, offline), and it passes
``hubpub check``. The files are package data under hubpub/scaffold/:

- ``hubpub-release.yml``: on a tag, one GitHub runner job per recipe runs hubpub through this
  project's composite action (``uses: OWNER/hubpub@<pinned ref>``: the action installs the
  hubpub of that ref with the project's constraints; no package index is involved). It
  authenticates with OIDC trusted publishing by default (``permissions: id-token: write`` and
  ``HF_OIDC_RESOURCE`` = the recipe's repo), HF_TOKEN being the documented fallback.
- ``hubpub-release-jobs.yml`` (``--on hf-jobs``): the same trigger, but one small CPU runner
  submits every recipe as a Hugging Face Job (``hubpub release recipes/*.toml --on hf-jobs``),
  so the GPU work happens on the Hub.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .artifacts import write_atomic
from .errors import HubpubError

TORCH_VERSION = "2.13.0"  # the CPU build the project is tested with (constraints.txt)
DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# the config numbers of the default model, so that `hubpub init` works offline
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    DEFAULT_MODEL: {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "intermediate_size": 1536,
                    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64},
}
GROUP_SIZES = (128, 64, 32)
# where the composite action lives; `hubpub init --action OWNER/REPO@REF` picks another
DEFAULT_ACTION_REPO = "hubpub/hubpub"
RECIPE = Path("recipes") / "model.toml"
WORKFLOWS = {"runner": "hubpub-release.yml", "hf-jobs": "hubpub-release-jobs.yml"}


class InitError(HubpubError):
    stage = "init"


@dataclass
class InitResult:
    directory: Path
    written: list[Path]
    model: str
    group_size: int
    action: str

    @property
    def next_steps(self) -> str:
        recipe = self.directory / RECIPE
        return (
            f"Next: set [push] repo_id in {recipe}, run `hubpub check {recipe}`, add this GitHub repo as a Trusted"
            f" Publisher of the Hub repo (or an HF_TOKEN secret; see the workflow's header), then"
            f" `git tag v1 && git push --tags`. The workflow uses {self.action}."
        )


# ----------------------------------------------------------------------------- fitting the model
def linear_inputs(config: dict[str, Any]) -> dict[str, int]:
    """The input sizes of a decoder's linear layers that a group size must divide."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    sizes = {}
    for key in ("hidden_size", "intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size"):
        if isinstance(text.get(key), int):
            sizes[key] = text[key]
    heads, hidden = text.get("num_attention_heads"), text.get("hidden_size")
    head_dim = text.get("head_dim") or (hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None)
    if isinstance(heads, int) and isinstance(head_dim, int):
        sizes["num_attention_heads x head_dim"] = heads * head_dim  # o_proj's input
    return sizes


def fit_group_size(model: str, config: dict[str, Any]) -> int:
    """The largest of 128 / 64 / 32 that divides every linear input size; InitError says what to set otherwise."""
    if "vision_config" in config or "text_config" in config:
        arch = (config.get("architectures") or ["?"])[0]
        raise InitError(
            f"{model} is an image-text model ({arch}); the starter recipe is for text models: set [quantize.split]"
            " prefix (e.g. 'language_model.' or 'model.language_model.') in the recipe, as recipes/ shows"
        )
    sizes = linear_inputs(config)
    if "hidden_size" not in sizes:
        raise InitError(f"{model}: its config.json has no hidden_size, so hubpub cannot choose a group size; pass --group-size N")
    for size in GROUP_SIZES:
        if all(v % size == 0 for v in sizes.values()):
            return size
    shown = ", ".join(f"{k} {v}" for k, v in sizes.items())
    raise InitError(
        f"{model}: no group size of {', '.join(map(str, GROUP_SIZES))} divides its layer input sizes ({shown});"
        " pass --group-size -1 (per channel) or another power of two that divides them all"
    )


def read_config(model: str) -> dict[str, Any]:
    """config.json of a local folder or a Hub repo (the default model's numbers are built in)."""
    if model in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[model]
    folder = Path(model).expanduser()
    if folder.is_dir():
        try:
            return json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError) as exc:
            raise InitError(f"{folder}: no readable config.json ({type(exc).__name__}); pass the folder of a transformers model") from None
    if model.endswith(".gguf") or model.startswith("package:"):
        raise InitError(f"{model}: hubpub cannot read layer sizes from a GGUF here; pass --group-size N (64 or 32 fits most small models)")
    from .recipe import looks_like_repo_id

    if not (looks_like_repo_id(model) and "/" in model):
        raise InitError(f"--model {model!r}: not a local folder nor a Hub repo id like 'org/name'")
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(model, "config.json")).read_text(encoding="utf-8"))
    except Exception as exc:  # offline, gated, not found: all mean "tell us the group size"
        first = (str(exc).splitlines() or [""])[0]
        raise InitError(f"cannot read {model}'s config.json ({type(exc).__name__}: {first}); pass --group-size N, or a local folder as --model") from None


# ----------------------------------------------------------------------------- the action ref
def default_action() -> str:
    """OWNER/REPO@REF of the composite action: this checkout's git commit when there is one, else v<version>."""
    here = Path(__file__).resolve().parent
    ref = f"v{__version__}"
    repo = DEFAULT_ACTION_REPO
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", head.stdout.strip()):
            ref = head.stdout.strip()
        origin = subprocess.run(["git", "-C", str(here), "remote", "get-url", "origin"], capture_output=True, text=True, timeout=10)
        m = re.search(r"github\.com[:/]([\w.-]+/[\w.-]+?)(?:\.git)?$", origin.stdout.strip())
        if m:
            repo = m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{repo}@{ref}"


def _check_action(action: str) -> str:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+@[\w./-]+", action):
        raise InitError(f"--action {action!r}: expected OWNER/REPO@REF, e.g. hubpub/hubpub@v0.1.0 or a 40-hex commit")
    return action


# ----------------------------------------------------------------------------- writing
def scaffold_text(name: str, **values: Any) -> str:
    text = resources.files("hubpub").joinpath("scaffold", name).read_text(encoding="utf-8")
    defaults = {"HUBPUB_VERSION": __version__, "TORCH_VERSION": TORCH_VERSION, "ACTION": default_action(),
                "MODEL": DEFAULT_MODEL, "NAME": DEFAULT_MODEL.split("/")[-1], "GROUP_SIZE": 64,
                "BASE_MODEL_LINE": f'base_model = "{DEFAULT_MODEL}"'}
    for key, value in {**defaults, **values}.items():
        text = text.replace(f"@{key}@", str(value))
    return text


def init(
    directory: str | Path = ".",
    *,
    force: bool = False,
    model: str | None = None,
    group_size: int | None = None,
    on: str = "runner",
    action: str | None = None,
) -> InitResult:
    """Write recipes/model.toml and the release workflow under directory (nothing when one exists, unless force)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InitError(f"{directory}: is a file; pass a folder (the root of your git repo) to hubpub init")
    if on not in WORKFLOWS:
        raise InitError(f"--on {on!r}: use one of {', '.join(WORKFLOWS)}")
    model = model or DEFAULT_MODEL
    if group_size is None:
        group_size = fit_group_size(model, read_config(model))
    elif group_size != -1 and not (group_size >= 16 and group_size & (group_size - 1) == 0):
        raise InitError(f"--group-size {group_size}: must be -1 (per channel) or a power of two >= 16")
    action = _check_action(action or default_action())
    workflow = Path(".github") / "workflows" / WORKFLOWS[on]
    targets = {RECIPE: "model.toml", workflow: WORKFLOWS[on]}
    if not force:
        for target in targets:
            if (directory / target).exists():
                raise InitError(f"{directory / target}: already exists; pass --force to overwrite it, or move it away")
    from .recipe import looks_like_repo_id

    hub_id = looks_like_repo_id(model) and "/" in model and not Path(model).expanduser().exists()
    name = Path(model.rstrip("/")).name.removesuffix(".gguf").removeprefix("package:")
    source = model if hub_id or not Path(model).expanduser().exists() else str(Path(model).expanduser().resolve())
    values = {"MODEL": source, "NAME": name, "GROUP_SIZE": group_size, "ACTION": action,
              "BASE_MODEL_LINE": f'base_model = "{model}"' if hub_id else '# base_model = "org/name"   # the Hub id of the base model'}
    written = []
    for target, name_ in targets.items():
        write_atomic(directory / target, scaffold_text(name_, **values))
        written.append(directory / target)
    return InitResult(directory=directory, written=written, model=model, group_size=group_size, action=action)
