"""The README's main command, run twice: the second run must be all cached (issue #15).

Goal: the second `bash scripts/demo.sh` takes <= 5 % of the first run's wall time, and every
stage reports `cached`. Both runs use a fresh devhub data folder and release folder under a
temporary directory (nothing of a previous demo is reused), SKIP_INSTALL=1 (the install is not
what is measured). devhub picks a free port each run, as the script does.

Run:  python bench/bench_rerun.py            # the demo recipe (SmolLM2-135M, ~2-3 min first run)
      python bench/bench_rerun.py --tiny     # the 2-layer test model (seconds)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]


def tiny_recipe(folder: Path) -> Path:
    import tiny_models

    source = tiny_models.make_tiny_qwen2(folder / "qwen2")
    recipe = folder / "tiny.toml"
    recipe.write_text(
        f'output_dir = "out/tiny"\n\n[model]\nsource = "{source}"\n\n[quantize]\nmethod = "rtn"\ngroup_size = 32\n'
        'iters = 0\nnsamples = 4\nseqlen = 32\ndevice = "cpu"\n\n[validate]\ndevice = "cpu"\nmax_new_tokens = 4\n'
        'warmup_runs = 0\nlatency_runs = 1\n\n[card]\nbase_model = "test-org/tiny-qwen2"\nlicense = "apache-2.0"\n\n'
        '[push]\nrepo_id = "hubpub-demo/tiny"\ntag = "v1"\n'
    )
    return recipe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rerun-") as tmp:
        folder = Path(tmp)
        if args.tiny:
            recipe = tiny_recipe(folder)
        else:
            recipe = folder / "demo.toml"
            recipe.write_text((ROOT / "recipes" / "demo.toml").read_text().replace("[model]", f'output_dir = "{folder}/out/demo"\n\n[model]', 1))
        env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
        env.update(SKIP_INSTALL="1", RECIPE=str(recipe), DATA=str(folder / "devhub-data"), PYTHON=sys.executable)
        walls, outputs = [], []
        for _ in range(2):
            started = time.perf_counter()
            run = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=folder, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            if run.returncode != 0:
                sys.exit(f"demo.sh failed:\n{run.stdout}\n{run.stderr}")
            outputs.append(run.stdout)
        statuses = re.findall(r"^(quantize|validate|card|push)\s+(\w+)", outputs[1], re.M)
        print(f"first run:  {walls[0]:.1f} s")
        print(f"second run: {walls[1]:.1f} s  stages: {', '.join(f'{s} {st}' for s, st in statuses)}")
        ratio = walls[1] / walls[0]
        print(f"second / first: {ratio:.3f}  (goal <= 0.05)  {'ok' if ratio <= 0.05 and all(st == 'cached' for _, st in statuses) else 'MISSED'}")


if __name__ == "__main__":
    main()
