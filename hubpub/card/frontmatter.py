"""The card's YAML front matter, built with huggingface_hub's ModelCardData and checked offline.

The license is inherited from the base model's own README.md when the recipe says "inherit";
the base card is read from disk only (the local source folder, the materialized base, or the
Hub cache), never from the network. ``model-index`` carries THIS model's measured results
only, never the base model's (gguf-my-repo's misattribution).
"""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..artifacts import Manifest, Metrics
from ..errors import CardError
from ..recipe import Recipe, looks_like_repo_id

LICENSE_DOCS = "https://huggingface.co/docs/hub/repositories-licenses"
PIPELINE_TAGS = {"causal-lm": "text-generation", "image-text-to-text": "image-text-to-text"}
REQUIRED = ("base_model", "base_model_relation", "license", "library_name", "pipeline_tag", "tags")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.S)


@lru_cache(maxsize=1)
def hub_licenses() -> tuple[str, ...]:
    text = resources.files("hubpub").joinpath("data/hub_licenses.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def read_front_matter(path: Path) -> dict[str, Any]:
    """The YAML header of a README.md, {} when it has none."""
    import yaml

    match = _FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: the front matter is not valid YAML ({str(exc).splitlines()[0]}); fix it or set [card] license in the recipe") from None
    return data if isinstance(data, dict) else {}


def base_readme(recipe: Recipe, manifest: Manifest) -> Path | None:
    """The base model's README.md on disk, or None. No network."""
    candidates: list[Path] = []
    location = str(manifest.source.get("location") or "")
    if location and Path(location).is_absolute() and Path(location).is_dir():
        candidates.append(Path(location) / "README.md")
    kind = recipe.model.source_kind(recipe.base_dir)
    if kind == "folder":
        candidates.append(recipe.resolve(recipe.model.source) / "README.md")
    elif kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(recipe.model.source, "README.md", revision=recipe.model.revision)
        if isinstance(cached, str):
            candidates.append(Path(cached))
    candidates.append(recipe.work_path / "base" / "README.md")
    return next((path for path in candidates if path.is_file()), None)


def base_model_id(recipe: Recipe, manifest: Manifest) -> str:
    if recipe.card.base_model:
        return recipe.card.base_model
    if manifest.source.get("kind") == "hub" and manifest.source.get("location"):
        return str(manifest.source["location"])
    if recipe.model.source_kind(recipe.base_dir) == "hub":
        return recipe.model.source
    from ..recipe import line_of

    line = line_of(recipe.text, ("card", "base_model")) if recipe.text else None
    raise CardError(
        f"{recipe.path}{f':{line}' if line else ''}: card.base_model: not set and the source {recipe.model.source!r} is not a Hub repo;"
        ' set base_model = "org/name" in [card] so the card links the model it was quantized from'
    )


def check_license(license_id: str, where: str) -> None:
    known = hub_licenses()
    if license_id not in known:
        close = difflib.get_close_matches(license_id, known, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise CardError(f"{where}: unknown license id {license_id!r}; {hint}use a Hub license id ({LICENSE_DOCS})")


def resolve_license(recipe: Recipe, base_card: dict[str, Any], readme: Path | None) -> dict[str, str]:
    """{"license": id} plus license_name/license_link for "other"."""
    if recipe.card.license != "inherit":
        check_license(recipe.card.license, f"{recipe.path}: card.license")
        return {"license": recipe.card.license}
    if readme is None:
        raise CardError(
            f"{recipe.path}: card.license = \"inherit\" but the base model's README.md is not on disk;"
            ' set license = "<Hub license id>" in [card], e.g. license = "apache-2.0"'
        )
    license_id = base_card.get("license")
    if not isinstance(license_id, str) or not license_id:
        raise CardError(
            f"{readme}: the base model's card names no license; set license = \"<Hub license id>\" in [card] of {recipe.path}"
        )
    check_license(license_id, f"{readme}: license (inherited by card.license = \"inherit\" in {recipe.path})")
    found = {"license": license_id}
    for key in ("license_name", "license_link"):
        if isinstance(base_card.get(key), str):
            found[key] = base_card[key]
    return found


def eval_results(manifest: Manifest, metrics: Metrics, pipeline_tag: str, model_name: str) -> list[Any]:
    """model-index entries: the quantized model's numbers only."""
    from huggingface_hub import EvalResult

    results = []
    seen: set[tuple[str, str]] = set()
    for ev in metrics.evals:
        if ev.kind == "lm_eval":  # standard benchmarks: the task scores, named by their datasets
            tasks = {t["task"]: t for t in ev.details.get("tasks", [])}
            for row in ev.details.get("table", []):
                dataset = tasks.get(row["task"], {}).get("dataset_path") or row["task"]
                results.append(EvalResult(task_type=pipeline_tag, dataset_type=dataset, dataset_name=row["task"],
                                          metric_type=row["metric"], metric_value=round(float(row["quantized"]), 6),
                                          source_name="lm-evaluation-harness", source_url=LM_EVAL_URL))
            continue
        for name in ev.metrics:
            value = ev.metrics[name].get("quantized")
            info = ev.display.get(name)
            if value is None or (info is not None and not info.headline) or (ev.name, name) in seen:
                continue
            seen.add((ev.name, name))
            results.append(
                EvalResult(
                    task_type=pipeline_tag,
                    dataset_type=ev.name,
                    dataset_name=f"{ev.name} (hubpub validate)",
                    metric_type=name,
                    metric_value=round(float(value), 6),
                )
            )
    return results


def one_tag_per_concept(tags: list[str]) -> list[str]:
    """'autoround' and 'auto_round' (or 'auto-round') are one concept: keep the first spelling."""
    seen: set[str] = set()
    out = []
    for tag in tags:
        key = tag.lower().replace("_", "").replace("-", "")
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def index_name(recipe: Recipe, model_name: str, manifest: Manifest) -> str:
    """model-index names THIS model (the pushed repo), never the base model it came from."""
    if recipe.push.repo_id:
        return recipe.push.repo_id.split("/")[-1]
    method = {"autoround": "AutoRound", "rtn": "RTN"}.get(manifest.method, manifest.method)
    return recipe.card.title or f"{model_name} {method} W{manifest.bits}A16"


def build_card_data(recipe: Recipe, manifest: Manifest, metrics: Metrics, model_name: str) -> Any:
    """ModelCardData for the quantized model; raises CardError when a required field is missing."""
    from huggingface_hub import ModelCardData

    readme = base_readme(recipe, manifest)
    base_card = read_front_matter(readme) if readme else {}
    pipeline_tag = recipe.card.pipeline_tag or PIPELINE_TAGS.get(manifest.task) or base_card.get("pipeline_tag")
    if not pipeline_tag:
        raise CardError(
            f"{recipe.path}: card.pipeline_tag: not set and the base card names none;"
            ' set pipeline_tag in [card], e.g. pipeline_tag = "text-generation"'
        )
    tags = one_tag_per_concept([manifest.method, f"{manifest.bits}-bit", manifest.format, "hubpub", *recipe.card.tags])
    language = recipe.card.language or base_card.get("language") or None
    results = eval_results(manifest, metrics, pipeline_tag, model_name)
    data = ModelCardData(
        base_model=base_model_id(recipe, manifest),
        base_model_relation="quantized",
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        language=language,
        tags=list(dict.fromkeys(tags)),
        model_name=index_name(recipe, model_name, manifest) if results else None,
        eval_results=results or None,
        **resolve_license(recipe, base_card, readme),
    )
    check_front_matter(data.to_yaml(), str(recipe.path))
    return data


def check_front_matter(yaml_text: str, where: str) -> dict[str, Any]:
    """Offline checks of what the Hub would reject or misread."""
    import yaml

    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:  # pragma: no cover - ModelCardData writes valid YAML
        raise CardError(f"{where}: the card's front matter is not valid YAML: {exc}") from None
    missing = [key for key in REQUIRED if not data.get(key)]
    if missing:
        raise CardError(f"{where}: the card's front matter lacks {', '.join(missing)}; set them in [card]")
    check_license(data["license"], f"{where}: card.license")
    bases = data["base_model"] if isinstance(data["base_model"], list) else [data["base_model"]]
    for base in bases:
        if not (isinstance(base, str) and "/" in base and looks_like_repo_id(base)):
            raise CardError(f"{where}: card.base_model: {base!r} is not a Hub repo id like 'org/name'")
    return data


# ----------------------------------------------------------------------------- .eval_results/*.yaml
EVAL_RESULTS_DIR = ".eval_results"
LM_EVAL_URL = "https://github.com/EleutherAI/lm-evaluation-harness"


def eval_result_files(metrics: Metrics) -> dict[str, str]:
    """``.eval_results/<task>.yaml`` for every lm-eval task that reads a Hub benchmark dataset:
    this model's score, built with huggingface_hub's EvalResultEntry and checked by its own parser."""
    import yaml
    from huggingface_hub import EvalResultEntry
    from huggingface_hub._eval_results import eval_result_entries_to_yaml, parse_eval_result_entries

    files: dict[str, str] = {}
    for ev in metrics.evals:
        if ev.kind != "lm_eval":
            continue
        details = ev.details
        tasks = {t["task"]: t for t in details.get("tasks", [])}
        for row in details.get("table", []):
            info = tasks.get(row["task"], {})
            dataset = info.get("dataset_path") or ""
            if "/" not in dataset or Path(dataset).exists():  # a local or builder dataset: no Hub leaderboard to join
                continue
            setup = ", ".join(f"{k}={details[k]}" for k in ("num_fewshot", "limit") if details.get(k) is not None)
            entry = EvalResultEntry(
                dataset_id=dataset,
                task_id=info.get("dataset_name") or row["task"],
                value=round(float(row["quantized"]), 6),
                dataset_revision=info.get("dataset_revision"),
                source_url=LM_EVAL_URL,
                source_name=f"lm-evaluation-harness {details.get('lm_eval_version', '')}".strip(),
                notes=f"lm-eval task {row['task']}, metric {row['metric']}{', ' + setup if setup else ''}; measured by hubpub validate",
            )
            data = eval_result_entries_to_yaml([entry])
            text = yaml.safe_dump(data, sort_keys=False)
            parsed = parse_eval_result_entries(yaml.safe_load(text))  # the library's own reader must get it back
            if len(parsed) != 1 or parsed[0].dataset_id != dataset or parsed[0].value != entry.value:
                raise CardError(f"{EVAL_RESULTS_DIR}/{row['task']}.yaml does not round-trip through huggingface_hub")
            name = f"{row['task']}_{row['metric']}".replace("/", "_").replace(",", "_")
            files[f"{EVAL_RESULTS_DIR}/{name}.yaml"] = text
    return files
