"""The README documents every recipe field and starts with the two newcomer commands."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from hubpub import recipe as recipe_module

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _fields(model: type[BaseModel], seen: set[type]) -> set[str]:
    names: set[str] = set()
    if model in seen:
        return names
    seen.add(model)
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            for inner in [arg, *getattr(arg, "__args__", ())]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    names |= _fields(inner, seen)
    return names


def test_readme_documents_every_recipe_field():
    fields = _fields(recipe_module.Recipe, set())
    # a field is documented as `name`, a table header [name] / [a.name], or inside {role, content}
    missing = sorted(f for f in fields if not re.search(rf"[`\[.{{ ]{f}[`\]}},= ]", README))
    assert not missing, f"README.md lacks these recipe fields: {missing}"


def test_readme_starts_with_setup_and_test_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines == ["bash scripts/demo.sh", "python3 -m pytest -q"]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "-m pytest -q" in ci
