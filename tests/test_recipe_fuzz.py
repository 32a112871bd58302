"""Property-based: mutated recipes never cause a traceback; every problem is one line that names
a field path (or, for broken TOML, the line); a recipe with problems fails the CLI with exit 1."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

import pytest
import tomlkit
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hubpub.check import check_recipe
from hubpub.cli import cli
from hubpub.errors import RecipeError
from hubpub.recipe import load_recipe, read_recipe

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
FULL = '''output_dir = "out/fuzz"

[model]
source = "org/model"
revision = "main"
name = "Fuzz"

[quantize]
method = "autoround"
bits = 4
group_size = 64
iters = 4
nsamples = 8
seqlen = 64
batch_size = 2
keep_bf16 = ["model.layers.0.*"]
calibration = "builtin:pydoc"
seed = 1

[validate]
max_new_tokens = 8
latency_runs = 2

[[validate.modes]]
name = "greedy"
prompt = "Hello"
generate = { max_new_tokens = 8, do_sample = false, num_beams = 1 }

[[validate.modes]]
name = "chat"
prompt = [{ role = "user", content = "Hi" }]
generate = { do_sample = true, temperature = 0.7, top_p = 0.9, top_k = 20, seed = 3 }
expect = { regex = "\\\\w+" }

[validate.gates]
max_ppl_increase = 0.3

[[eval]]
kind = "perplexity"
file = "builtin:pydoc"
seqlen = 64
max_samples = 2

[[eval]]
kind = "kl"
file = "builtin:pydoc"

[card]
title = "Fuzz"
tags = ["a", "b"]

[push]
repo_id = "org/fuzz-w4"
tag = "v1"
revision = "main"
'''
BASES = [FULL, '[model]\nsource = "org/m"\n'] + [p.read_text(encoding="utf-8") for p in sorted((REPO / "recipes").glob("*.toml"))]

NASTY_STRINGS = ["", " ", "\t", "builtin:wiki", "builtin:", "../../etc/passwd", "/dev/zero", "org/ü", "a/b--c",
                 "x.gguf", "package:nope", "v 1", "main\n", "nul\x00byte", "é" * 3, "-", ".", "a" * 300,
                 "{{ 7*7 }}", "$(rm -rf /)", "org/m", "bfloat16", "auto_round", "perplexity", "README.md.j2"]
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 3, 7, 2**31, 2**32, 2**63 - 1, 10**23]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from(NASTY_STRINGS),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=4), st.sampled_from(NASTY_STRINGS)), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(st.integers(-3, 3), st.text(max_size=3)), max_size=2),
)
TOML_CHARS = st.sampled_from(list('"\'[]{}=.,#\\\n é\x7f') + ['"""', "'''", "[[", "]]", "= ", "\x00"])


def _paths(node, prefix=()):
    """Every key path (with list indices) in the parsed recipe: tables, entries and leaves."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append(prefix + (k,))
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append(prefix + (i,))
            out += _paths(v, prefix + (i,))
    return out


def _parent(data, path):
    node = data
    for part in path[:-1]:
        node = node[part]
    return node


def _typo(word: str, draw) -> str:
    if not word:
        return "x"
    i = draw(st.integers(0, len(word) - 1))
    how = draw(st.sampled_from(["drop", "double", "swap", "case"]))
    if how == "drop":
        return word[:i] + word[i + 1 :] or "y"
    if how == "double":
        return word[:i] + word[i] + word[i:]
    if how == "case":
        return word[:i] + word[i].swapcase() + word[i + 1 :]
    return word[:i] + word[i + 1 : i + 2] + word[i] + word[i + 2 :] if i + 1 < len(word) else word + "s"


@st.composite
def mutated_data(draw):
    """(mutated recipe as TOML text, what was done, where)."""
    data = tomllib.loads(draw(st.sampled_from(BASES)))
    done = []
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        how = draw(st.sampled_from(["set", "set", "set", "rename", "add", "delete"]))
        if how == "add" or not paths:
            tables = [p for p in paths if isinstance(_parent(data, p + ("x",)), dict)] + [()]
            where = draw(st.sampled_from(tables))
            table = _parent(data, where + ("x",)) if where else data
            if isinstance(table, dict):
                table[draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))] = draw(VALUES)
            done.append(("add", where))
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        if how == "set":
            parent[path[-1]] = draw(VALUES)
        elif how == "delete":
            del parent[path[-1]]
        elif how == "rename" and isinstance(parent, dict):
            parent[_typo(str(path[-1]), draw)] = parent.pop(path[-1])
        done.append((how, path))
    try:
        text = tomlkit.dumps(copy.deepcopy(data))
        tomllib.loads(text)
    except Exception:  # a value tomlkit cannot write as TOML (e.g. odd keys): not what we test
        assume(False)
        raise
    return text, done


@st.composite
def mutated_text(draw):
    """A recipe's text with characters inserted or deleted: often broken TOML."""
    text = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:i] + draw(TOML_CHARS) + text[i:]
        else:
            text = text[:i] + text[i + draw(st.integers(1, 20)) :]
    return text


_PART = r'(?:[A-Za-z0-9_\-]+|"(?:[^"\\]|\\.)*")(?:\[\d+\])*'
FIELD = re.compile(rf"^{_PART}(?:\.{_PART})*$")  # quantize.bits, eval[1].kind, model." "
WORKDIR = Path(tempfile.mkdtemp(prefix="hubpub-fuzz-"))


def _write(text: str) -> Path:
    path = WORKDIR / "recipe.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def _assert_problems_are_well_formed(path: Path, problems, *, toml_valid: bool) -> None:
    for p in problems:
        assert p.file == str(path)
        assert p.message and "\n" not in str(p), str(p)
        assert "Traceback" not in p.message and not p.message.startswith("unexpected")
        if toml_valid:
            assert p.field and FIELD.match(p.field), str(p)  # e.g. quantize.bits, eval[1].kind, an unknown key
        else:
            assert p.line is not None or p.field, str(p)  # broken TOML is reported at its line


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(mutated_data())
def test_mutated_recipes_name_a_field_and_never_raise(case):
    text, _ = case
    path = _write(text)
    problems = check_recipe(path, model=False)  # never raises
    _assert_problems_are_well_formed(path, problems, toml_valid=True)
    # load_recipe (what every stage calls) agrees with check on the parse-level problems
    _, parse_problems = read_recipe(path)
    if parse_problems:
        with pytest.raises(RecipeError) as info:
            load_recipe(path)
        assert str(info.value).startswith(str(parse_problems[0]))
    else:
        load_recipe(path)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_text())
def test_broken_text_gets_a_line_and_never_raises(text):
    path = _write(text)
    problems = check_recipe(path, model=False)
    try:
        tomllib.loads(text)
        valid = True
    except tomllib.TOMLDecodeError:
        valid = False
        assert len(problems) == 1 and problems[0].line is not None, [str(p) for p in problems]
    _assert_problems_are_well_formed(path, problems, toml_valid=valid)


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_data().map(lambda c: c[0]), mutated_text()))
def test_cli_check_exit_code_matches_the_problems(text):
    path = _write(text)
    problems = check_recipe(path, model=False)
    result = CliRunner().invoke(cli, ["check", "--no-model", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and "unexpected" not in result.output
    assert result.exit_code == (1 if problems else 0)
    stage = CliRunner().invoke(cli, ["card", str(path)])  # a stage command: one Error line for a bad recipe
    if read_recipe(path)[1]:
        assert stage.exit_code == 1 and stage.stderr.count("\n") == 1 and stage.stderr.startswith(f"Error: {path}")
