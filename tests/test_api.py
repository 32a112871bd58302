"""The public API: every name in hubpub.__all__ resolves, stage names are callable either way."""

from __future__ import annotations

import inspect
import subprocess
import sys

import hubpub


def test_public_api_names_resolve():
    for name in hubpub.__all__:
        assert getattr(hubpub, name) is not None, name


def test_stage_names_are_callable_even_after_their_packages_are_imported():
    import hubpub.quantize.driver  # noqa: F401  (binds hubpub.quantize to the package)
    import hubpub.release  # noqa: F401
    import hubpub.validate.stage  # noqa: F401

    from hubpub.quantize import quantize
    from hubpub.release import release
    from hubpub.validate import validate

    for name, function in [("quantize", quantize), ("validate", validate), ("release", release)]:
        stage = getattr(hubpub, name)
        assert callable(stage), name
        assert stage.__call__.__doc__ == function.__doc__
    assert inspect.isfunction(hubpub.render_card) and inspect.isfunction(hubpub.push)


def test_calling_the_stage_package_runs_the_stage(write_recipe, tmp_path):
    from hubpub.errors import SourceError

    recipe = hubpub.load_recipe(write_recipe(f'[model]\nsource = "{tmp_path}/missing-model"\n'))
    try:
        hubpub.quantize(recipe)
    except SourceError as exc:  # the stage really ran: it looked for the source
        assert "missing-model" in str(exc)
    else:
        raise AssertionError("quantize of a missing source must fail")


def test_import_hubpub_is_light():
    code = "import sys, hubpub; print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'auto_round', 'jinja2', 'huggingface_hub'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
