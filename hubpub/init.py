"""`hubpub init`: a starter recipe and a release-on-tag GitHub Actions workflow for a user's repo.

The files are package data under hubpub/scaffold/; the workflow gets the hubpub and torch
versions of the hubpub that wrote it, so CI releases with the same tool the user tried locally.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import __version__
from .artifacts import write_atomic
from .errors import HubpubError

TORCH_VERSION = "2.13.0"  # the CPU build the project is tested with (constraints.txt)

# scaffold file -> where it goes in the user's repo
FILES = {
    "model.toml": Path("recipes") / "model.toml",
    "hubpub-release.yml": Path(".github") / "workflows" / "hubpub-release.yml",
}


@dataclass
class InitResult:
    directory: Path
    written: list[Path]

    @property
    def next_steps(self) -> str:
        recipe, workflow = (self.directory / p for p in FILES.values())
        return (
            f"Next: set [model] source and [push] repo_id in {recipe}, add the HF_TOKEN secret to the GitHub "
            f"repo (or OIDC, see {workflow}), then `git tag v1 && git push --tags`."
        )


def scaffold_text(name: str) -> str:
    text = resources.files("hubpub").joinpath("scaffold", name).read_text(encoding="utf-8")
    return text.replace("@HUBPUB_VERSION@", __version__).replace("@TORCH_VERSION@", TORCH_VERSION)


def init(directory: str | Path = ".", *, force: bool = False) -> InitResult:
    """Write recipes/model.toml and .github/workflows/hubpub-release.yml under directory.

    Nothing is written when one of them exists already, unless force is set.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise HubpubError(f"{directory}: is a file; pass a folder (the root of your git repo) to hubpub init")
    if not force:
        for target in FILES.values():
            if (directory / target).exists():
                raise HubpubError(f"{directory / target}: already exists; pass --force to overwrite it, or move it away")
    written = []
    for name, target in FILES.items():
        write_atomic(directory / target, scaffold_text(name))
        written.append(directory / target)
    return InitResult(directory=directory, written=written)
