"""The validate stage: load check, generation modes, base-vs-quantized metrics, evals and gates.

``validate(recipe)`` runs the base model and the quantized checkpoint each in a fresh worker
process (``python -m hubpub.validate.worker``; the typed job and result are in protocol.py),
judges outputs (modes.py), lets each eval kind (evals/: a registry, one module per kind) score
base vs quantized, checks the gates (relative to the base) and writes hubpub_metrics.json.
Progress is reported through ``events``; nothing is printed.
"""

from .._stage import make_callable
from .stage import ValidateResult, validate

__all__ = ["validate", "ValidateResult"]

make_callable(__name__, validate)  # `hubpub.validate(recipe)` works whichever name Python bound
