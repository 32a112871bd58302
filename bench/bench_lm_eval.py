"""lm-eval through hubpub vs the `lm_eval` CLI, on the same tiny model and task: same numbers? wall ratio?

  A) `hubpub validate RECIPE --quiet` with one mode and `[[eval]] kind = "lm_eval"` (base and
     "quantized" = the same weights, two worker processes, the task from tests/data/lm_eval_tasks);
  B) `lm_eval --model hf --tasks hubpub_tiny_mc --include_path ...` run twice (base and quantized),
     as a publisher would reproduce both numbers.

Both include interpreter start-up and imports; B also indexes lm-eval's built-in tasks (the CLI
always does). Goal: the same acc and stderr; A / B <= 1.2.

    python bench/bench_lm_eval.py [WORK_DIR] [LIMIT]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tests" / "data" / "lm_eval_tasks"


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="bench-lm-eval-"))
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tiny_models

    from hubpub.artifacts import MANIFEST, METRICS, Manifest, Metrics

    model = work / "qwen2"
    if not model.exists():
        tiny_models.make_tiny_qwen2(model)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model, out)
    Manifest(hubpub_version="0", recipe_hash="b" * 64, source={"kind": "folder"}, model_name="tiny", model_type="qwen2",
             architecture="Qwen2ForCausalLM", task="causal-lm", method="rtn", bits=4, group_size=32, sym=True, format="auto_round",
             iters=0, nsamples=1, seqlen=8, groups=[], tensors_before=0, tensors_after=0, linears_quantized=0, bytes_before=0,
             bytes_after=0, timings={}, versions={}, device="cpu").write(out / MANIFEST)
    recipe = work / "recipe.toml"
    recipe.write_text(f'output_dir = "{out}"\n[model]\nsource = "{model}"\n[validate]\nmax_new_tokens = 2\nwarmup_runs = 0\n'
                      'latency_runs = 1\n[[validate.modes]]\nname = "greedy"\nprompt = "The function returns"\n'
                      f'[[eval]]\nkind = "lm_eval"\ntasks = ["hubpub_tiny_mc"]\ninclude_path = "{TASKS}"\nlimit = {limit}\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hubpub", "validate", str(recipe), "--quiet"], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"hubpub validate failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    hubpub_s = time.perf_counter() - t
    (row,) = Metrics.read(out / METRICS).evals[0].details["table"]

    cli_s, cli = 0.0, {}
    for role, folder in (("base", model), ("quantized", out)):
        results = work / f"cli_{role}"
        shutil.rmtree(results, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={folder},dtype=auto", "--device", "cpu",
                        "--tasks", "hubpub_tiny_mc", "--include_path", str(TASKS), "--limit", str(limit), "--batch_size", "1",
                        "--output_path", str(results)], check=True, env=env, cwd=TASKS, capture_output=True)
        cli_s += time.perf_counter() - t
        found = json.loads(next(results.rglob("results_*.json")).read_text())["results"]["hubpub_tiny_mc"]
        cli[role] = (found["acc,none"], found["acc_stderr,none"])

    print(f"hubpub validate (1 mode + lm_eval, base and quantized, 2 processes): {hubpub_s:.1f} s; acc {row['base']:.4f} / {row['quantized']:.4f}"
          f" ± {row['base_stderr']:.4f}")
    print(f"lm_eval CLI twice (base, quantized): {cli_s:.1f} s; acc {cli['base'][0]:.4f} / {cli['quantized'][0]:.4f} ± {cli['base'][1]:.4f}")
    same = cli["base"][0] == row["base"] and cli["quantized"][0] == row["quantized"]
    print(f"same numbers: {'yes' if same else 'NO'}; wall ratio hubpub / CLI: {hubpub_s / cli_s:.2f}x (goal <= 1.2x)")


if __name__ == "__main__":
    main()
