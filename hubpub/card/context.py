"""The template context: everything a card template may use, computed from recipe + manifest + metrics.

Templates only lay out; every number, delta, verdict and snippet choice is decided here so a
user template gets them for free. Iteration orders are fixed (sorted or schema order) so the
same inputs render the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..naming import WEIGHT_SUFFIXES
from ..artifacts import ASSETS_DIR, CARD, Manifest, Metrics
from ..recipe import Recipe
from .history import History
from .numbers import DASH, Row, human_bytes, human_seconds, tldr_rows
from .plots import Plot


def method_name(method: str) -> str:
    """The quantize backend's display name (its registry entry), or the raw name if not installed."""
    from ..quantize.backends import backends

    return backends.get(method).display_name if method in backends else method


def cpu_kernels(fmt: str) -> str:
    """The package with fast CPU kernels for a format (auto-round suggests it at load time), or ''."""
    from ..quantize.formats import formats

    return getattr(formats.get(fmt), "cpu_kernels", "") if fmt in formats else ""


def format_install(fmt: str) -> str:
    """What a user pip-installs to load an export format with transformers (its registry entry)."""
    from ..quantize.formats import formats

    return formats.get(fmt).install_line if fmt in formats else ""


DEFAULT_PROMPT = "Explain in one sentence what weight quantization does."


def scheme(manifest: Manifest) -> str:
    if manifest.format.startswith("gguf:"):  # the file type names the scheme: "GGUF Q4_K_M"
        return f"GGUF {manifest.format.split(':', 1)[1].upper()}"
    return f"W{manifest.bits}A16"


def build_context(
    recipe: Recipe,
    manifest: Manifest,
    metrics: Metrics,
    *,
    output_dir: Path,
    recipe_toml: str,
    card_data: Any,
    plots: list[Plot],
    history: History | None,
) -> dict[str, Any]:
    rows = tldr_rows(metrics, manifest.bytes_before)
    method = method_name(manifest.method)
    name = recipe.model.display_name or manifest.model_name
    title = recipe.card.title or f"{name} {method} {scheme(manifest)}"
    base_model = card_data.base_model
    verdict = accuracy_verdict(rows, metrics)
    return {
        "title": title,
        "model": {
            "name": name,
            "repo_id": recipe.push.repo_id or f"<your-namespace>/{title.replace(' ', '-')}",
            "base_model": base_model,
            "base_model_url": f"https://huggingface.co/{base_model}",
            "task": manifest.task,
            "architecture": manifest.architecture,
            "model_type": manifest.model_type,
            "trust_remote_code": manifest.trust_remote_code,
        },
        "quant": {
            "method": method,
            "scheme": scheme(manifest),
            "bits": manifest.bits,
            "group_size": manifest.group_size,
            "sym": manifest.sym,
            "format": manifest.format,
            "iters": manifest.iters,
            "nsamples": manifest.nsamples,
            "seqlen": manifest.seqlen,
            "device": manifest.device,
            "total_time": human_seconds(manifest.timings.get("total")),
        },
        "summary": recipe.card.summary or summary_sentence(title, method, manifest, rows, base_model, verdict),
        "verdict": verdict,
        "passed": metrics.passed,
        "tldr": rows,
        "inventory": inventory(manifest),
        "recipe_toml": recipe_toml.rstrip("\n"),
        "usage": usage(recipe, manifest, metrics),
        "evals": evals(metrics),
        "modes": mode_table(metrics),
        "gates": gate_rows(metrics),
        "latency": latency_table(metrics),
        "runtime": runtime(metrics),
        "base_limitations": [cell(line) for line in metrics.base_limitations],
        "samples": [
            {"mode": s.mode, "prompt": cell(s.prompt), "base": cell(s.base), "quantized": cell(s.quantized)} for s in metrics.samples
        ],
        "plots": [{"title": p.title, "path": f"{ASSETS_DIR}/{p.name}"} for p in plots],
        "files_tree": files_tree(output_dir, [f"{ASSETS_DIR}/{p.name}" for p in plots]),
        "caveats": caveats(recipe, manifest, metrics),
        "credits": list(recipe.card.credits),
        "license": {
            "id": card_data.license,
            "name": getattr(card_data, "license_name", None),
            "link": getattr(card_data, "license_link", None),
        },
        "history": history,
        "environment": {k: metrics.environment[k] for k in sorted(metrics.environment)},
        "versions": {k: manifest.versions[k] for k in sorted(manifest.versions)},
        "variants": recipe._family,  # the family comparison table (hubpub.variants), None for a single release
    }


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    # < and > escaped: outputs like <box>1,2,3,4</box> would vanish as unknown HTML tags
    escaped = text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\r", "").strip().replace("\n", "<br>") or "(empty)"


def gate_text(g: Any, value: float | None) -> str:
    from .. import units

    if value is None:
        return DASH
    if g.unit == "relative":
        return units.signed_percent(value)
    if g.unit == "%":
        return units.percent(value)
    return f"{value:.4g}"


def gate_rows(metrics: Metrics) -> list[dict[str, Any]]:
    rows = []
    for g in metrics.gates:
        limit = ("≤ " if g.name.startswith("max_") else "≥ " if g.name.startswith("min_") else "") + gate_text(g, g.threshold)
        note = "cannot fail at this limit" if g.vacuous else g.note
        rows.append({"name": g.name, "threshold": limit, "value": gate_text(g, g.value), "passed": g.passed, "vacuous": g.vacuous,
                     "note": cell(note) if note else ""})
    return rows


def latency_table(metrics: Metrics) -> list[dict[str, str]]:
    """Per mode: median latency per call of each model, with the spread (min-max of the timed calls)."""
    from .. import units

    by_mode: dict[str, dict[str, Any]] = {}
    for r in metrics.modes:
        if r.latency_s is not None:
            by_mode.setdefault(r.mode, {})[r.model] = r

    def shown(r: Any) -> str:
        if r is None:
            return DASH
        spread = f" ({units.human_duration(min(r.latencies_s))}–{units.human_duration(max(r.latencies_s))})" if len(r.latencies_s) > 1 else ""
        return units.human_duration(r.latency_s) + spread

    return [{"mode": mode, "base": shown(sides.get("base")), "quantized": shown(sides.get("quantized")),
             "runs": str(max(len(r.latencies_s) for r in sides.values()))} for mode, sides in by_mode.items()]


def runtime(metrics: Metrics) -> dict[str, Any]:
    """How the quantized layers ran (kernel / backend) and what the speed numbers support."""
    q, b = metrics.quantized, metrics.base
    backend = q.quant_backend
    rows = {r.key: r for r in tldr_rows(metrics, None)}
    latency = rows.get("latency_s")
    if latency is None or latency.left is None:
        speed = ""
    elif latency.delta_ci is None:
        speed = f"too few timed calls ({q.latency_runs} per mode) for a speed claim; set [validate] latency_runs = 5 or more"
    elif latency.verdict == "tied within noise":
        speed = "no measurable speed difference: the latency intervals overlap"
    else:
        faster = latency.right is not None and latency.right < latency.left
        speed = f"the quantized model is {'faster' if faster else 'slower'} ({latency.delta_text} per call, interval {latency.delta_ci_text})"
    device = str(metrics.environment.get("device", ""))
    how = str(getattr(q, "latency_timing", "") or "")  # absent in metrics written before hubpub timed interleaved
    timing = TIMING.get(how, "") if q.latency_s is not None or how == "failed" else ""
    slower_or_larger = b is not None and (
        (latency is not None and latency.verdict == "worse")
        or (q.resident_bytes is not None and b.resident_bytes is not None and q.resident_bytes > b.resident_bytes))
    return {"backend": backend, "speed": speed, "device": device, "timing": timing,
            "cpu_note": slower_or_larger and device == "cpu"}


TIMING = {  # how validate timed the two models (ModelMetrics.latency_timing)
    "interleaved": "base and quantized were timed in one process, their calls of each mode alternating (ABBA), so both ran in the same conditions",
    "separate": "each model was timed in its own process, one after the other ([validate] latency = \"separate\"), so part of the difference may be drift of the machine",
    "failed": "latency was not measured (the interleaved timing phase failed; see the validate log)",
}


def accuracy_verdict(rows: list[Row], metrics: Metrics) -> str:
    failed = [g for g in metrics.gates if not g.passed]
    if failed:
        gates = ", ".join(f"{g.name} = {gate_text(g, g.value)} (limit {gate_text(g, g.threshold)})" for g in failed)
        gates_said = f"it FAILED {len(failed)} of {len(metrics.gates)} quality gates: {gates}"
    elif len(metrics.gates) == 1:
        gates_said = f"it passed its quality gate ({metrics.gates[0].name})"
    elif metrics.gates:
        gates_said = f"it passed all {len(metrics.gates)} quality gates"
    else:
        gates_said = "no quality gates were set"
    compared = [r for r in rows if r.key.startswith("eval:") and r.left is not None and r.right is not None]
    if compared:
        head = compared[0]
        noise = f", {head.verdict}" if head.verdict else ""
        return f"{head.label} {head.left_text} → {head.right_text} ({head.delta_text}{noise}); {gates_said}"
    return gates_said


def summary_sentence(title: str, method: str, manifest: Manifest, rows: list[Row], base_model: str, verdict: str) -> str:
    by_key = {r.key: r for r in rows}
    parts = []
    memory_key = "resident_bytes" if "resident_bytes" in by_key else "peak_memory_bytes"
    for key, what in (("weight_bytes", "on disk"), (memory_key, "in memory at runtime")):
        row = by_key.get(key)
        if row is None or row.relative is None:
            continue
        change = f"{abs(row.relative) * 100:.0f} % {'smaller' if row.relative <= 0 else 'larger'}"
        parts.append(f"{change} {what} ({row.left_text} → {row.right_text})")
    measured = f": {' and '.join(parts)}" if parts else ""
    return (
        f"**{title}** is a {manifest.bits}-bit {method} quantization of [{base_model}](https://huggingface.co/{base_model})"
        f"{measured}. Accuracy: {verdict}."
    )


def inventory(manifest: Manifest) -> dict[str, Any]:
    quantized = [g for g in manifest.groups if g.action == "quantized"]
    kept = [g for g in manifest.groups if g.action == "kept"]
    per_group = {g.linears for g in quantized}
    if quantized and len(per_group) == 1 and next(iter(per_group)) > 0:
        layers = next(iter(per_group))
        headline = (
            f"{layers} decoder layers × {len(quantized)} linears = {manifest.linears_quantized} linears"
            f" → {sum(g.packed_tensors for g in quantized)} tensors"
        )
    else:
        headline = f"{manifest.linears_quantized} linears → {sum(g.packed_tensors for g in quantized)} tensors"
    return {
        "headline": headline,
        "quantized": [
            {
                "pattern": g.pattern,
                "linears": g.linears,
                "tensors": g.tensors,
                "packed_tensors": g.packed_tensors,
                "before": human_bytes(g.bytes_before),
                "after": human_bytes(g.bytes_after),
            }
            for g in quantized
        ],
        "kept": [
            {"pattern": g.pattern, "tensors": g.tensors, "dtype": g.dtype or "bf16", "size": human_bytes(g.bytes_after)}
            for g in kept
        ],
        "kept_tensors": sum(g.tensors for g in kept),
        "tensors_before": manifest.tensors_before,
        "tensors_after": manifest.tensors_after,
        "bytes_before": human_bytes(manifest.bytes_before),
        "bytes_after": human_bytes(manifest.bytes_after),
        "split_prefix": manifest.split_prefix,
        "block_name_to_quantize": manifest.block_name_to_quantize,
    }


def usage(recipe: Recipe, manifest: Manifest, metrics: Metrics | None = None) -> dict[str, Any]:
    """Which snippet fits: causal LM, image-text, a trust_remote_code custom model, or a GGUF file
    (llama.cpp / Ollama / transformers); and which runtimes validate really ran (:func:`runtimes`)."""
    mode = next((m for m in recipe.validate.modes if isinstance(m.prompt, str)), None)
    prompt = mode.prompt if mode else DEFAULT_PROMPT
    transformers = manifest.versions.get("transformers")
    install = f"transformers>={transformers}" if transformers else "transformers"
    torch = (manifest.versions.get("torch") or "").split("+")[0]
    # torch first and pinned, as the README says: an unpinned torch pulls gigabytes of CUDA wheels
    torch_line = (f'pip install "torch=={torch}"  # CPU only: add --index-url https://download.pytorch.org/whl/cpu\n'
                  if torch else "")
    kernels = cpu_kernels(manifest.format)
    kernel_note = f"  # {kernels}: fast CPU kernels for the quantized layers" if kernels else ""
    return {
        "kind": manifest.task,
        # JSON string literals are valid Python and use the double quotes the snippet uses
        "prompt_literal": json.dumps(prompt, ensure_ascii=False),
        "image_literal": json.dumps(Path(mode.images[0]).name if mode and mode.images else "image.jpg"),
        "trust_remote_code": manifest.trust_remote_code,
        "install": torch_line + f'pip install "{install}" {format_install(manifest.format)} {kernels}'.rstrip() + kernel_note,
        "max_new_tokens": recipe.validate.max_new_tokens,
        "gguf": gguf_usage(recipe, manifest),
        "runtimes": runtimes_tested(manifest, metrics),
    }


def gguf_usage(recipe: Recipe, manifest: Manifest) -> dict[str, Any] | None:
    """For a GGUF release (format gguf:<type>): its file and quant tag (``Q4_K_M``), else None."""
    if not manifest.format.startswith("gguf:"):
        return None
    name = next((f for f in manifest.files if f.endswith(".gguf")), None)
    if name is None:
        return None
    return {"file": name, "quant": manifest.format.split(":", 1)[1].upper()}


def runtimes_tested(manifest: Manifest, metrics: Metrics | None) -> list[dict[str, str]]:
    """Every runtime the usage section names, each "tested with <runtime> <version>" only when
    validate ran the modes in it, else "not tested here" with why (absent package or hardware).

    transformers is what validate loads the checkpoint with (a GGUF file dequantized by it);
    llama.cpp counts as tested when validate recorded ``runtimes["llama.cpp"]`` on the quantized
    model (it runs the modes through llama-cpp-python when that is installed)."""
    if metrics is None:
        return []
    env = metrics.environment or {}
    device = str(env.get("device", "") or "")
    where = f" on {device.upper() if device in ('cpu', 'cuda') else device}" if device else ""
    tf = env.get("transformers") or manifest.versions.get("transformers") or ""
    gguf = manifest.format.startswith("gguf:")
    out = [{"name": "transformers",
            "status": f"tested with transformers {tf}{where}" + (" (the .gguf dequantized on load)" if gguf else "")}]
    ran = getattr(metrics.quantized, "runtimes", None) or {}
    if gguf:
        llama = ran.get("llama.cpp") if isinstance(ran, dict) else None
        if llama and llama.get("passed"):
            out.append({"name": "llama.cpp", "status": f"tested with llama.cpp (llama-cpp-python {llama.get('version', '')}){where}"})
        elif llama:
            out.append({"name": "llama.cpp", "status": f"failed in llama.cpp (llama-cpp-python {llama.get('version', '')}): {llama.get('problem', 'see hubpub_metrics.json')}"})
        else:
            out.append({"name": "llama.cpp", "status": "not tested here (llama-cpp-python was not installed where validate ran)"})
        out.append({"name": "Ollama", "status": "not tested here (Ollama was not run; it serves the file through llama.cpp)"})
        return out
    if device != "cuda":
        out.append({"name": "CUDA kernels", "status": "not tested here (validate ran without a GPU)"})
    out.append({"name": "vLLM", "status": "not tested here (hubpub does not run vLLM)" if device == "cuda"
                else "not tested here (vLLM needs a CUDA GPU; validate ran without one)"})
    return out


def evals(metrics: Metrics) -> list[dict[str, Any]]:
    from .numbers import eval_rows

    out = []
    for ev in metrics.evals:
        rows = [r for r in eval_rows(metrics) if r.key.startswith(f"eval:{ev.name}:")]
        if ev.details.get("table"):  # lm_eval: the task scores have their own table (each number once)
            rows = [r for r in rows if r.info is not None and r.info.headline]
        out.append({"name": ev.name, "kind": ev.kind, "rows": rows, "per_class": per_class(ev.per_class), "images": list(ev.images),
                    "notes": [cell(n) for n in ev.notes], "details": ev.details})
    return out


def per_class(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A table from free-form per-class dicts; base_X/quantized_X pairs get a delta column."""
    if not entries:
        return None
    flat = [_flatten_one(e) for e in entries]
    columns = list(dict.fromkeys(k for e in flat for k in e))
    pairs = [c[len("quantized_"):] for c in columns if c.startswith("quantized_") and f"base_{c[len('quantized_'):]}" in columns]
    header = [c.replace("_", " ") for c in columns] + [f"Δ {p.replace('_', ' ')}" for p in pairs]
    rows = []
    for entry in flat:
        values = [_cell_value(entry.get(c)) for c in columns]
        for p in pairs:
            b, q = entry.get(f"base_{p}"), entry.get(f"quantized_{p}")
            values.append(f"{q - b:+.3f}" if isinstance(b, (int, float)) and isinstance(q, (int, float)) else DASH)
        rows.append(values)
    return {"header": header, "rows": rows}


def _flatten_one(entry: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def _cell_value(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return cell(str(value))


def mode_table(metrics: Metrics) -> list[dict[str, str]]:
    by_mode: dict[str, dict[str, Any]] = {}
    for result in metrics.modes:
        by_mode.setdefault(result.mode, {})[result.model] = result
    table = []
    for mode, results in by_mode.items():
        base, quant = results.get("base"), results.get("quantized")
        problem = next((r.problem for r in (quant, base) if r is not None and r.problem), None)
        if problem and base is not None and not base.ok:
            problem = f"base limitation (fails on the base too): {problem}"
        table.append(
            {
                "mode": mode,
                "expected": cell(next(r.expected for r in results.values())),
                "base": DASH if base is None else ("pass" if base.ok else "FAIL"),
                "quantized": DASH if quant is None else ("pass" if quant.ok else "FAIL"),
                "problem": cell(problem) if problem else "",
            }
        )
    return table


def caveats(recipe: Recipe, manifest: Manifest, metrics: Metrics) -> list[str]:
    notes = list(recipe.card.caveats)
    if manifest.split_prefix:
        notes.append(
            f"Only the text decoder (`{manifest.split_prefix}*`) is quantized; everything else stays in BF16"
            " (see *What is quantized*)."
        )
    if manifest.trust_remote_code:
        notes.append("This model runs custom code from the repository (`trust_remote_code=True`): read the `.py` files first.")
    if not metrics.passed:
        notes.append("This checkpoint did NOT pass all of its quality gates (see *Evaluation*).")
    memory_kind = metrics.quantized.memory_kind
    device = str(metrics.environment.get("device", ""))
    if not memory_kind.startswith("cuda") and metrics.quantized.peak_memory_bytes is not None:
        notes.append(f"Memory and latency were measured on {device or 'CPU'}; GPU numbers differ.")
    if manifest.format.startswith("gguf:"):  # validate ran the file through transformers, not llama.cpp
        notes.append(
            "transformers dequantized the GGUF weights on load (to BF16, like the base): the quality figures are the"
            " file's, but its memory and latency figures describe that dense model, not llama.cpp running the file."
        )
    elif runtime(metrics)["cpu_note"]:
        backend = metrics.quantized.quant_backend or "the default kernel"
        notes.append(
            f"On this CPU the quantized layers ran through `{backend}`, and the quantized model was slower or larger at runtime"
            " than the base: without a fast kernel the weights are unpacked on the fly. A GPU (or a CPU kernel package such as"
            " `auto-round-lib`) is what makes W4 fast."
        )
    return notes


def files_tree(output_dir: Path, extra: list[str]) -> str:
    """The release folder as a tree (what push uploads), with the card and plots included."""
    paths = set(extra) | {CARD}
    if output_dir.is_dir():
        for root, dirs, files in os.walk(output_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_root = Path(root).relative_to(output_dir)
            paths.update((rel_root / f).as_posix() for f in files if not f.startswith("."))
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path.split("/")[:-1]:
            node = node.setdefault(part + "/", {})
        node[path.split("/")[-1]] = output_dir / path
    lines = ["."]
    _walk(tree, "", lines)
    return "\n".join(lines)


def _walk(node: dict[str, Any], indent: str, lines: list[str]) -> None:
    items = sorted(node.items())
    for i, (name, value) in enumerate(items):
        last = i == len(items) - 1
        label = name
        if isinstance(value, Path) and name.endswith(WEIGHT_SUFFIXES) and value.is_file():
            label = f"{name}  ({human_bytes(value.stat().st_size)})"
        lines.append(f"{indent}{'└── ' if last else '├── '}{label}")
        if isinstance(value, dict):
            _walk(value, indent + ("    " if last else "│   "), lines)
