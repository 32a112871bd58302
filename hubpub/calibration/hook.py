"""``[quantize] calibration_hook``: forward calls that calibrate the paths text does not reach.

Some models route tokens by type: a mixture-of-transformers model (Lance, BAGEL) runs its
generation tokens through ``*_moe_gen`` twins of every decoder linear, and text alone never
reaches them (they would be quantized as plain RTN). The hook is the publisher's own Python
function, named in the recipe, that yields the forward calls to record, e.g. one denoising step
of the text-to-image path with its latents and timestep::

    [quantize]
    calibration_hook = "mot_calibration.py:generation_calls"   # or "package.module:function"
    calibration_hook_samples = 16                               # calls taken (default: nsamples)

hubpub calls it as ``function(model, tokenizer, *, samples=N, seqlen=L, seed=S)`` with the
loaded BF16 model; each yielded item is a dict of keyword arguments for ``model(**call)`` with
``input_ids`` of shape (1, L) (AutoRound caches block inputs per sample of L tokens). The calls
join the text samples in AutoRound's calibration set. It is user code, so it runs only when the
recipe sets ``model.trust_remote_code = true``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import QuantizeError

if TYPE_CHECKING:
    from ..recipe import Recipe

FIELD = "quantize.calibration_hook"
_SPEC = re.compile(r"^(?P<where>[^:]+):(?P<function>[A-Za-z_]\w*)$")


def parse_spec(spec: str) -> tuple[str, str]:
    """'file.py:function' / 'module:function' -> (where, function); ValueError saying the shape."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise ValueError(f"{spec!r} is not 'file.py:function' or 'module:function' (e.g. 'calibration.py:generation_calls')")
    return m.group("where"), m.group("function")


def _module_file(recipe: "Recipe", where: str) -> Path | None:
    """The .py file a spec names relative to the recipe (a path, or a module beside the recipe)."""
    if where.endswith(".py") or "/" in where:
        return recipe.resolve(where)
    beside = recipe.base_dir / (where.replace(".", "/") + ".py")
    return beside if beside.is_file() else None


def hook_problems(recipe: "Recipe") -> list[tuple[str, str]]:
    """What is wrong with the recipe's hook, knowable without loading the model: [(field, message)]."""
    q = recipe.quantize
    if q.calibration_hook is None:
        if q.calibration_hook_samples is not None:
            return [("quantize.calibration_hook_samples", "set without quantize.calibration_hook; remove it or name the hook")]
        return []
    if not recipe.model.trust_remote_code:
        return [(FIELD, f"{q.calibration_hook!r} is code that would run in this process; set model.trust_remote_code = true"
                 " after reviewing it, or remove calibration_hook")]
    if q.method == "rtn":
        return [(FIELD, "method 'rtn' uses no calibration data, so the hook would never run; use method 'awq' or 'autoround',"
                 " or remove calibration_hook")]
    try:
        load_hook(recipe)
    except QuantizeError as exc:
        return [(FIELD, str(exc).removeprefix(FIELD + ": "))]
    return []


def load_hook(recipe: "Recipe") -> Callable[..., Any]:
    """Import the hook's module (user code: only called with trust_remote_code) and return the function."""
    spec = recipe.quantize.calibration_hook
    assert spec is not None
    where, function = parse_spec(spec)
    path = _module_file(recipe, where)
    try:
        if path is not None:
            if not path.is_file():
                raise QuantizeError(f"{FIELD}: {path} not found; fix the path (relative to the recipe file)")
            module_spec = importlib.util.spec_from_file_location(f"hubpub_calibration_hook_{path.stem}", path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except QuantizeError:
        raise
    except ModuleNotFoundError as exc:
        raise QuantizeError(f"{FIELD}: module {where!r} cannot be imported ({exc}); put {where}.py beside the recipe,"
                            " give a path 'file.py:function', or install the package") from None
    except Exception as exc:  # the user's module failed while importing
        raise QuantizeError(f"{FIELD}: importing {where!r} raised {type(exc).__name__}: {_first_line(exc)}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        names = sorted(n for n in vars(module) if callable(getattr(module, n)) and not n.startswith("_"))
        raise QuantizeError(f"{FIELD}: {where!r} has no function {function!r}; its functions: {', '.join(names) or 'none'}")
    return fn  # type: ignore[no-any-return]


def hook_calls(recipe: "Recipe", model: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """Run the hook; every call checked (a dict with input_ids of shape (1, seqlen))."""
    import torch

    q = recipe.quantize
    wanted = q.calibration_hook_samples or q.nsamples
    fn = load_hook(recipe)
    calls: list[dict[str, Any]] = []
    try:
        with torch.no_grad():
            for call in fn(model, tokenizer, samples=wanted, seqlen=q.seqlen, seed=q.seed):
                calls.append(_checked(call, len(calls) + 1, q.seqlen))
                if len(calls) == wanted:
                    break
    except QuantizeError:
        raise
    except Exception as exc:
        raise QuantizeError(f"{FIELD}: {q.calibration_hook} raised {type(exc).__name__}: {_first_line(exc)}") from None
    if not calls:
        raise QuantizeError(f"{FIELD}: {q.calibration_hook} yielded no calls; yield dicts of forward keyword arguments")
    return calls


def _checked(call: Any, n: int, seqlen: int) -> dict[str, Any]:
    import torch

    if not isinstance(call, dict):
        raise QuantizeError(f"{FIELD}: call {n} is a {type(call).__name__}; yield dicts of keyword arguments for model(**call)")
    ids = call.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int32):
        raise QuantizeError(f"{FIELD}: call {n} has no integer tensor 'input_ids'; AutoRound keys each sample by its input_ids")
    if tuple(ids.shape) != (1, seqlen):
        raise QuantizeError(f"{FIELD}: call {n} has input_ids of shape {tuple(ids.shape)}; each call must be one sample of"
                            f" quantize.seqlen = {seqlen} tokens, shape (1, {seqlen})")
    return dict(call)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
