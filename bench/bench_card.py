"""Card stage speed: render time of a full card (front matter, template, 3 plots) vs `import torch`.

The card must not pay for torch: this prints both times, measured in one run, and their ratio.
Run: python bench/bench_card.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _subprocess_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    return time.perf_counter() - start


def main() -> None:
    import card_fixtures

    with tempfile.TemporaryDirectory() as tmp:
        recipe = card_fixtures.vlm_release(Path(tmp))
        render = (
            "import sys; from hubpub.recipe import load_recipe; from hubpub.card import render_card;"
            f"render_card(load_recipe({str(recipe)!r}));"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
        )
        card_s = _subprocess_seconds(render)  # cold: new process, imports + plots
        warm_s = _subprocess_seconds(render)
        torch_s = _subprocess_seconds("import torch")
    print(f"hubpub card (cold process, 3 plots): {card_s:.2f} s; again: {warm_s:.2f} s")
    print(f"python -c 'import torch' alone:      {torch_s:.2f} s")
    print(f"ratio card / import torch:           {warm_s / torch_s:.2f}")


if __name__ == "__main__":
    main()
