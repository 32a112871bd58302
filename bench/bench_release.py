"""`hubpub release` against a local devhub: first run vs a re-run after a card template edit.

Goals: the re-run takes <= 10 % of the first run's wall time (quantize and validate are
cached), and it sends README.md and plots only (0 weight bytes). Each release runs as its own
`python -m hubpub release` process, as a user would run it; the devhub server runs in this
process and counts what it receives.

Run:  python bench/bench_release.py                  # the demo recipe (recipes/demo.toml)
      python bench/bench_release.py --tiny           # the 2-layer test model (seconds, no package needed)
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

os.environ["HF_HUB_DISABLE_XET"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hubpub.devhub import DevHub  # noqa: E402
from hubpub.hub._client import hub_client  # noqa: E402
from hubpub.recipe import load_recipe  # noqa: E402

TOKEN = "hf_bench_release_token"
TEMPLATE = '{% extends "base.md.j2" %}\n{% block license %}{{ super() }}\n\nBenchmarked release.\n{% endblock %}\n'
TINY = """\
[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "autoround"
bits = 4
group_size = 32
iters = 4
nsamples = 4
seqlen = 32
batch_size = 4
device = "cpu"

[validate]
device = "cpu"
max_new_tokens = 8

[[eval]]
kind = "perplexity"
file = "builtin:pydoc"
seqlen = 64
max_samples = 4

[card]
base_model = "test-org/tiny-qwen2"
license = "apache-2.0"

[push]
repo_id = "bench/tiny-qwen2-W4A16"
"""


def with_template_dir(text: str, folder: str) -> str:
    """The recipe with [card] template_dir set, so the bench can edit a template."""
    line = f'template_dir = "{folder}"'
    if re.search(r"(?m)^\[card\]\s*$", text):
        return re.sub(r"(?m)^\[card\]\s*$", "[card]\n" + line, text, count=1)
    return text + f"\n[card]\n{line}\n"


def release(recipe: Path, endpoint: str, tag: str, cwd: Path) -> float:
    # PYTHONPATH: this checkout's hubpub, installed or not
    env = {**os.environ, "HF_TOKEN": TOKEN, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hubpub", "release", str(recipe), "--endpoint", endpoint, "--tag", tag],
                          cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    stages = [line for line in proc.stdout.splitlines() if re.match(r"^(quantize|validate|card|push) ", line)]
    print(f"  {tag}: {seconds:.1f} s  ({'; '.join(s.split('(')[0].strip() for s in stages if 'running' not in s)})")
    if proc.returncode != 0:
        sys.exit(f"release {tag} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def remote_files(endpoint: str, repo_id: str, tag: str) -> dict[str, tuple[str, int]]:
    from huggingface_hub import HfApi

    with hub_client(endpoint):
        tree = HfApi(endpoint=endpoint, token=TOKEN).list_repo_tree(repo_id, revision=tag, recursive=True)
        return {f.path: (f.blob_id, f.size) for f in tree if hasattr(f, "size")}


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # progress shows while a long release runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "demo.toml"))
    parser.add_argument("--tiny", action="store_true", help="release the tiny test model instead of the recipe")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-release-") as tmp:
        work = Path(tmp)
        if args.tiny:
            import tiny_models

            text = TINY.format(source=tiny_models.make_tiny_qwen2(work / "tiny-qwen2"))
            name = "tiny"
        else:
            text, name = Path(args.recipe).read_text(), Path(args.recipe).stem
        (work / "templates").mkdir()
        recipe = work / f"{name}.toml"  # the release folder goes to <tmp>/out/<name>
        recipe.write_text(with_template_dir(text, str(work / "templates")))
        repo_id = load_recipe(recipe).push.repo_id
        hub = DevHub(work / "devhub", {repo_id.split("/")[0]: TOKEN}).start()
        try:
            print(f"bench_release: {args.recipe if not args.tiny else 'tiny Qwen2'} -> {hub.endpoint}/{repo_id}")
            first = release(recipe, hub.endpoint, "bench-1", work)
            sent_first = hub.stats["lfs_bytes"] + hub.stats["commit_bytes"]
            before = dict(hub.stats)

            (work / "templates" / "README.md.j2").write_text(TEMPLATE)  # the card edit
            second = release(recipe, hub.endpoint, "bench-2", work)
            lfs_bytes = hub.stats["lfs_bytes"] - before["lfs_bytes"]
            sent = lfs_bytes + hub.stats["commit_bytes"] - before["commit_bytes"]

            v1, v2 = remote_files(hub.endpoint, repo_id, "bench-1"), remote_files(hub.endpoint, repo_id, "bench-2")
            changed = sorted(p for p in v2 if v1.get(p) != v2[p])
            weights = sorted(p for p in changed if p.endswith(".safetensors"))
            allowed = all(p == "README.md" or p.startswith("assets/") for p in changed)
        finally:
            hub.stop()

    ratio = second / first
    print(f"first release            {first:8.1f} s   sent {sent_first / 1e6:8.2f} MB")
    print(f"re-run after card edit   {second:8.1f} s   sent {sent / 1e6:8.3f} MB ({lfs_bytes} LFS bytes)")
    print(f"wall time ratio          {ratio:8.1%}   goal <= 10 %: {'met' if ratio <= 0.10 else 'NOT met'}")
    print(f"files changed on re-run  {', '.join(changed) or 'none'}")
    print(f"weight files re-sent     {len(weights)}   goal: README.md and plots only: {'met' if allowed and not weights else 'NOT met'}")


if __name__ == "__main__":
    main()
