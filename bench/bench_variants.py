"""A family of N variants costs one base measurement (issue #11 item 9).

Arm A: one recipe with N [[variant]] tables, `hubpub release R --until validate --no-push` (one command).
Arm B: the same N settings as N separate recipes, each in its own folder, one command each.
Both start from empty folders. Reported: how many times the base model was measured (a base
worker log `validate-base.log` is written each time the base worker runs; a cache hit writes
none) and the wall time of each arm, with the ratio, measured in one run.

With --layouts: the family is then published to a local devhub in each [push] layout (repos,
subfolders, branches): commits made, bytes sent and wall time of the publish (card + push), then
of a re-run (which must make no commit and send nothing).

Run:  python bench/bench_variants.py            # the tiny 2-layer Qwen2 (about a minute on 2 cores)
      python bench/bench_variants.py --n 2
      python bench/bench_variants.py --layouts
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]
from recipe_parts import FAST_VALIDATE  # noqa: E402

HEAD = """\
output_dir = "out/{out}"

[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "rtn"
bits = 4
group_size = {group_size}
iters = 0
nsamples = 4
seqlen = 32
device = "cpu"

""" + FAST_VALIDATE + """
[card]
license = "apache-2.0"
base_model = "test-org/tiny-qwen2"
"""
GROUPS = [32, 64, 16, 8]  # the tiny model's linears are 64 wide


def release(recipe: Path, *args: str, env_extra: dict[str, str] | None = None) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_XET="1", TOKENIZERS_PARALLELISM="false", **(env_extra or {}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hubpub", "release", str(recipe), *(args or ("--until", "validate", "--no-push"))],
                          cwd=recipe.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{recipe}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return wall


def base_runs(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("validate-base.log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="variants in the family (at most 4)")
    parser.add_argument("--layouts", action="store_true", help="also publish the family to devhub in each [push] layout")
    args = parser.parse_args()
    n = max(1, min(args.n, len(GROUPS)))
    import tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = tiny_models.make_tiny_qwen2(root / "qwen2")
        family = root / "family"
        family.mkdir()
        (family / "recipe.toml").write_text(family_text(source, n))
        wall_family = release(family / "recipe.toml")
        runs_family = base_runs(family)

        wall_separate, runs_separate = 0.0, 0
        for g in GROUPS[:n]:
            folder = root / f"separate-g{g}"
            folder.mkdir()
            (folder / "recipe.toml").write_text(HEAD.format(out=f"g{g}", source=source, group_size=g))
            wall_separate += release(folder / "recipe.toml")
            runs_separate += base_runs(folder)

        layouts = publish_layouts(family / "recipe.toml", source, n) if args.layouts else []

    print(f"family of {n} variants (one command) vs {n} separate releases (until validate, tiny Qwen2, rtn):")
    print(f"  base measurements: {runs_family} vs {runs_separate}")
    print(f"  wall: {wall_family:.1f} s vs {wall_separate:.1f} s = {wall_family / wall_separate:.2f}x")
    if layouts:
        print(f"publishing the built family of {n} to devhub, per layout (card + push; then a re-run):")
        for name, commits, sent, wall, re_commits, re_sent, re_wall in layouts:
            print(f"  {name:<10} {commits} commit(s), {sent / 1e6:.2f} MB of LFS sent, {wall:.1f} s;"
                  f" re-run: {re_commits} commit(s), {re_sent / 1e6:.2f} MB of LFS sent, {re_wall:.1f} s")


def family_text(source: Path | str, n: int, push: str = "", repo_per_variant: bool = False) -> str:
    text = HEAD.format(out="fam", source=source, group_size=GROUPS[0]) + push
    for g in GROUPS[:n]:
        text += f'\n[[variant]]\nname = "g{g}"\ngroup_size = {g}\n'
        if repo_per_variant:
            text += f'[variant.push]\nrepo_id = "alice/tiny-repos-g{g}"\n'
    return text


def publish_layouts(recipe: Path, source: Path | str, n: int) -> list[tuple[str, int, int, float, int, int, float]]:
    from hubserver import ALICE_TOKEN, start_devhub

    hub = start_devhub(recipe.parent / "hubdata")
    env = {"HF_TOKEN": ALICE_TOKEN}
    rows = []
    try:
        for layout in ("repos", "subfolders", "branches"):
            push = f'\n[push]\nrepo_id = "alice/tiny-{layout}"\ntag = "v1"\nlayout = "{layout}"\n'
            recipe.write_text(family_text(source, n, push, repo_per_variant=layout == "repos"))
            rows.append((layout, *_publish(hub, recipe, env), *_publish(hub, recipe, env)))
    finally:
        hub.stop()
    return rows


def _publish(hub, recipe: Path, env: dict[str, str]) -> tuple[int, int, float]:
    before = dict(hub.stats)
    wall = release(recipe, "--endpoint", hub.endpoint, env_extra=env)
    return hub.stats["commits"] - before["commits"], hub.stats["lfs_bytes"] - before["lfs_bytes"], wall


if __name__ == "__main__":
    main()
