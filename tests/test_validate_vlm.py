"""An image-text model end to end: split-and-repack a tiny LLaVA, then validate it with the
built-in image-text modes (image+text, text-only) on base and quantized, in fresh processes."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hubpub.artifacts import METRICS
from hubpub.cli import cli


def test_vlm_split_quantize_then_builtin_image_text_modes(tiny_llava, tmp_path, write_recipe):
    out = tmp_path / "out"
    recipe = write_recipe(
        f'output_dir = "{out}"\n[model]\nsource = "{tiny_llava}"\n'
        '[quantize]\nmethod = "rtn"\ngroup_size = 32\nnsamples = 4\nseqlen = 64\n'
        '[quantize.split]\nprefix = "language_model."\n'
        '[validate]\nmax_new_tokens = 8\nlatency_runs = 1\n'
    )
    quantized = CliRunner().invoke(cli, ["quantize", str(recipe), "--no-progress"])
    assert quantized.exit_code == 0, quantized.output
    assert (out / "processor_config.json").is_file()  # the processor travels with the release

    validated = CliRunner().invoke(cli, ["validate", str(recipe), "--quiet"])
    assert validated.exit_code == 0, validated.output
    metrics = json.loads((out / METRICS).read_text())
    runs = {(m["mode"], m["model"]): m for m in metrics["modes"]}
    assert set(runs) == {(mode, model) for mode in ("image+text", "text-only") for model in ("base", "quantized")}
    assert all(run["ok"] and run["output"].strip() for run in runs.values()), runs
    assert metrics["passed"] is True
    assert metrics["quantized"]["weight_bytes"] < metrics["base"]["weight_bytes"]
