"""Push to a local devhub: first push vs a re-push after a card edit (wall time and bytes sent).

Goal: the re-push sends README.md only (0 weight bytes) and takes a small fraction of the first.
Run: python bench/bench_push.py [--mib 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_DISABLE_XET"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hubserver import ALICE_TOKEN, recipe_text, start_devhub, write_card, write_release  # noqa: E402

from hubpub.hub import push  # noqa: E402
from hubpub.recipe import load_recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64, help="size of the extra weight shard")
    args = parser.parse_args()
    os.environ["HF_TOKEN"] = ALICE_TOKEN
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_release(Path(tmp) / "release")
        (folder / "model-big.safetensors").write_bytes(os.urandom(args.mib << 20))
        write_card(folder, "# v1\n")
        recipe_path = Path(tmp) / "recipe.toml"
        recipe_path.write_text(recipe_text())
        hub = start_devhub(Path(tmp) / "data")
        try:
            recipe = load_recipe(recipe_path)
            t0 = time.perf_counter()
            push(recipe, tag="v1", endpoint=hub.endpoint)
            first_s, first_bytes = time.perf_counter() - t0, hub.stats["lfs_bytes"] + hub.stats["commit_bytes"]
            write_card(folder, "# v2, a better card\n")
            t0 = time.perf_counter()
            result = push(recipe, tag="v2", endpoint=hub.endpoint)
            again_s = time.perf_counter() - t0
            again_bytes = hub.stats["lfs_bytes"] + hub.stats["commit_bytes"] - first_bytes
        finally:
            hub.stop()
    changed = [f.path for f in result.plan.add + result.plan.change]
    print(f"first push: {first_s:.2f} s, {first_bytes} bytes received by the server")
    print(f"re-push after card edit: {again_s:.2f} s, {again_bytes} bytes, files sent: {changed}")
    print(f"ratio time: {again_s / first_s:.1%}  bytes: {again_bytes / first_bytes:.4%}")


if __name__ == "__main__":
    main()
