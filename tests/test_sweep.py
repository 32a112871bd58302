"""`hubpub sweep` on the tiny Qwen2: a 2-point grid (group_size 32 vs 64) quantized and validated
for real, the pick that follows from the measured sizes written back as a recipe that `hubpub check`
accepts, the no-point error naming the closest points, a cached re-run, and bad grids."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe
from hubpub.sweep import SweepError, pareto, parse_grid, plan, point_name
from recipe_parts import FAST_VALIDATE

RECIPE = """\
# the sweep test recipe (this comment must survive the pick)
output_dir = "out/sw"

[model]
source = "{source}"
name = "tiny-qwen2"

[quantize]
method = "rtn"
bits = 4
group_size = 128  # the grid replaces this
iters = 0
nsamples = 4
seqlen = 32
device = "cpu"

""" + FAST_VALIDATE + """
[card]
license = "apache-2.0"
base_model = "test-org/tiny-qwen2"

[sweep]
grid = {{ group_size = [32, 64] }}
"""


def sweep_cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["sweep", *args])


@pytest.fixture(scope="module")
def swept(tiny_qwen2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "recipe.toml"
    path.write_text(RECIPE.format(source=tiny_qwen2))
    result = sweep_cli(str(path))
    return path, result


def _metrics(path, name):  # type: ignore[no-untyped-def]
    return json.loads((path.parent / "out" / "sw" / "sweep" / name / "hubpub_metrics.json").read_text())


def test_sweep_builds_every_point_and_prints_the_table(swept):
    path, result = swept
    assert result.exit_code == 0, result.output
    assert "point 1/2: g32 (group_size=32; first point)" in result.output
    assert "point 2/2: g64 (group_size=64; " in result.output and "per point" in result.output
    assert result.output.count("quantize  ran") == 2
    sizes = {n: _metrics(path, n)["quantized"]["weight_bytes"] for n in ("g32", "g64")}
    assert sizes["g32"] > sizes["g64"]  # more groups: more scales
    for name in sizes:
        assert name in result.output
        assert load_recipe(path.parent / "out" / "sw" / "sweep" / name / "hubpub_recipe.toml").name  # the recipe beside the weights
    assert "perplexity" in result.output and "Pareto front: smaller weight size vs lower perplexity" in result.output
    # the front follows from the measured numbers
    ppl = {n: next(e["metrics"]["perplexity"]["quantized"] for e in _metrics(path, n)["evals"] if "perplexity" in e["metrics"])
           for n in sizes}
    expected = sorted(n for n in sizes if not any(sizes[o] <= sizes[n] and ppl[o] <= ppl[n] and (sizes[o], ppl[o]) != (sizes[n], ppl[n])
                                                   for o in sizes if o != n))
    front_line = next(line for line in result.output.splitlines() if line.startswith("Pareto front: ") and "vs" not in line)
    assert sorted(front_line.removeprefix("Pareto front: ").split(", ")) == expected
    # the base was measured once for both points, in the recipe's own base cache
    from hubpub.validate import base_cache

    assert len(list(base_cache.cache_dir(load_recipe(path)).iterdir())) == 1


def test_pick_under_a_size_budget_writes_a_releasable_recipe(swept):
    path, first = swept
    assert first.exit_code == 0, first.output
    sizes = {n: _metrics(path, n)["quantized"]["weight_bytes"] for n in ("g32", "g64")}
    budget = (sizes["g32"] + sizes["g64"]) / 2 / 1e6  # between the two: only the smaller fits
    expected = min(sizes, key=sizes.get)
    result = sweep_cli(str(path), "--pick", f"max_size_mb={budget:.6f},min_passed=1")
    assert result.exit_code == 0, result.output
    assert "quantize  ran" not in result.output and "validate  ran" not in result.output  # all cached
    assert result.output.count("quantize  cached") == 2
    picked = path.with_name("recipe.picked.toml")
    assert f"picked: {expected}" in result.output and str(picked) in result.output
    text = picked.read_text()
    assert "# the sweep test recipe (this comment must survive the pick)" in text and "[sweep]" not in text
    recipe = load_recipe(picked)
    assert recipe.quantize.group_size == int(expected.removeprefix("g")) and recipe.quantize.method == "rtn"
    assert recipe.quantize.iters == 0 and recipe.evals[0].kind == "perplexity"
    check = CliRunner().invoke(cli, ["check", str(picked)])
    assert check.exit_code == 0, check.output


def test_pick_nothing_satisfies_names_the_closest(swept):
    path, _ = swept
    out = tmp = path.with_name("never.toml")
    result = sweep_cli(str(path), "--pick", "max_size_mb=0.001", "--write", str(out))
    assert result.exit_code == 1
    sizes = {n: _metrics(path, n)["quantized"]["weight_bytes"] for n in ("g32", "g64")}
    from hubpub.units import human_bytes

    smaller = min(sizes, key=sizes.get)
    larger = max(sizes, key=sizes.get)
    assert (f"Error: --pick max_size_mb=0.001: no point satisfies it; closest: {smaller} (size {human_bytes(sizes[smaller])}),"
            f" {larger} (size {human_bytes(sizes[larger])})") in result.output
    assert not tmp.exists()


def test_bad_grids_fail_before_any_work(write_recipe, tmp_path):
    path = write_recipe(RECIPE.format(source="tiny").replace("[sweep]\ngrid = { group_size = [32, 64] }\n", ""))
    for args, message in [
        (["--grid", "group_sise=[32,64]"], "Error: --grid 'group_sise=[32,64]': unknown [quantize] field 'group_sise'; did you mean 'group_size'?"),
        (["--grid", "group_size=32,64"], "Error: --grid 'group_size=32,64': must look like --grid 'group_size=[32,64]'"),
        (["--grid", "bits=[4,5]"], "grid point w5 (bits=5): bits: must be 2, 3, 4 or 8 (got 5)"),
        ([], "nothing to sweep; give --grid"),
        (["--grid", "group_size=[32]", "--pick", "smallest"], "Error: --pick: 'smallest' must look like max_size_mb=120 or min_top1=0.85"),
    ]:
        result = sweep_cli(str(path), *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "unexpected" not in result.output
    assert not (tmp_path / "out").exists()


def test_sweep_table_errors_name_the_recipe_line(write_recipe):
    path = write_recipe(RECIPE.format(source="tiny").replace("group_size = [32, 64]", "group_sise = [32, 64]"))
    with pytest.raises(RecipeError, match=r"recipe\.toml:\d+: sweep\.grid\.group_sise: unknown field; did you mean 'group_size'\?"):
        load_recipe(path)
    path = write_recipe(RECIPE.format(source="tiny") + 'pick = "smallest"\n')
    with pytest.raises(RecipeError, match=r"sweep\.pick: 'smallest' must look like max_size_mb=120"):
        load_recipe(path)


def test_grid_parsing_names_and_front():
    assert parse_grid(["group_size=[32, 64]", "method=[rtn,'awq']", "sym=[true,false]"]) == {
        "group_size": [32, 64], "method": ["rtn", "awq"], "sym": [True, False]}
    assert point_name({"group_size": 32, "method": "rtn"}) == "g32-rtn"
    assert point_name({"format": "gguf:q4_0", "sym": False}) == "gguf-q4_0-asym"
    with pytest.raises(SweepError, match="is not a number"):
        parse_grid(["method=[a b]"])
    rows = [{"size_mb": 3.0, "top1_agreement": 0.9}, {"size_mb": 2.0, "top1_agreement": 0.8},
            {"size_mb": 3.5, "top1_agreement": 0.85}, {"size_mb": 2.0, "top1_agreement": None}]
    assert pareto(rows, "top1_agreement", True) == [0, 1]  # 2 is larger and worse than 0; 3 is not measured
    assert pareto(rows, "top1_agreement", False) == [1]


def test_plan_puts_points_under_sweep_and_shares_the_base_cache(write_recipe):
    recipe = load_recipe(write_recipe(RECIPE.format(source="tiny")))
    points = plan(recipe, {"method": ["rtn"], "group_size": [32, 64]})
    assert [p.name for p in points] == ["g32-rtn", "g64-rtn"]  # the [sweep] table's fields first, --grid replaces values
    assert [p.recipe.quantize.group_size for p in points] == [32, 64]
    assert all(p.recipe.output_path == recipe.output_path / "sweep" / p.name for p in points)
    assert all(p.recipe._shared_work == recipe.work_path for p in points)
