"""A run killed between quantize's two renames (old output moved aside, new one not yet in
place) must not lose the previous release: the next start restores or clears it (issue #14)."""

from __future__ import annotations

import os

from hubpub.quantize import quantize, recover_swap
from hubpub.recipe import load_recipe

RECIPE = """\
output_dir = "out/swap"

[model]
source = "{source}"

[quantize]
method = "rtn"
group_size = 32
iters = 0
nsamples = 2
seqlen = 32
device = "cpu"
"""


def test_killed_swap_is_restored_on_the_next_start(tiny_qwen2, write_recipe):
    recipe = load_recipe(write_recipe(RECIPE.format(source=tiny_qwen2)))
    first = quantize(recipe)
    out, work = recipe.output_path, recipe.work_path
    files = sorted(p.name for p in out.iterdir())
    # the state a SIGKILL between os.replace(out, old) and os.replace(build, out) leaves
    os.replace(out, work / "replaced-4242")
    (work / "replaced-17").mkdir()  # an older leftover without a manifest: only cleared

    again = quantize(recipe)

    assert again.reused and again.manifest.recipe_hash == first.manifest.recipe_hash
    assert sorted(p.name for p in out.iterdir()) == files
    assert not list(work.glob("replaced-*"))


def test_completed_swap_leftovers_are_cleared(tmp_path):
    out, work = tmp_path / "out", tmp_path / ".out.hubpub"
    out.mkdir()
    (out / "hubpub_manifest.json").write_text("{}")
    (work / "replaced-1").mkdir(parents=True)
    (work / "replaced-1" / "hubpub_manifest.json").write_text("{}")
    recover_swap(out, work)
    assert (out / "hubpub_manifest.json").is_file() and not (work / "replaced-1").exists()
