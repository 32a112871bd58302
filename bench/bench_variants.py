"""A family of N variants costs one base measurement (issue #11 item 9).

Arm A: one recipe with N [[variant]] tables, `hubpub release R --until validate --no-push` (one command).
Arm B: the same N settings as N separate recipes, each in its own folder, one command each.
Both start from empty folders. Reported: how many times the base model was measured (a base
worker log `validate-base.log` is written each time the base worker runs; a cache hit writes
none) and the wall time of each arm, with the ratio, measured in one run.

Run:  python bench/bench_variants.py            # the tiny 2-layer Qwen2 (about a minute on 2 cores)
      python bench/bench_variants.py --n 2
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

[validate]
device = "cpu"
max_new_tokens = 4
warmup_runs = 0
latency_runs = 1

[[eval]]
kind = "perplexity"
file = "builtin:pydoc"
seqlen = 32
max_samples = 2

[card]
license = "apache-2.0"
base_model = "test-org/tiny-qwen2"
"""
GROUPS = [32, 64, 16, 8]  # the tiny model's linears are 64 wide


def release(recipe: Path) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_XET="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hubpub", "release", str(recipe), "--until", "validate", "--no-push"],
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
    args = parser.parse_args()
    n = max(1, min(args.n, len(GROUPS)))
    import tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = tiny_models.make_tiny_qwen2(root / "qwen2")
        family = root / "family"
        family.mkdir()
        text = HEAD.format(out="fam", source=source, group_size=GROUPS[0])
        for g in GROUPS[:n]:
            text += f'\n[[variant]]\nname = "g{g}"\ngroup_size = {g}\n'
        (family / "recipe.toml").write_text(text)
        wall_family = release(family / "recipe.toml")
        runs_family = base_runs(family)

        wall_separate, runs_separate = 0.0, 0
        for g in GROUPS[:n]:
            folder = root / f"separate-g{g}"
            folder.mkdir()
            (folder / "recipe.toml").write_text(HEAD.format(out=f"g{g}", source=source, group_size=g))
            wall_separate += release(folder / "recipe.toml")
            runs_separate += base_runs(folder)

    print(f"family of {n} variants (one command) vs {n} separate releases (until validate, tiny Qwen2, rtn):")
    print(f"  base measurements: {runs_family} vs {runs_separate}")
    print(f"  wall: {wall_family:.1f} s vs {wall_separate:.1f} s = {wall_family / wall_separate:.2f}x")


if __name__ == "__main__":
    main()
