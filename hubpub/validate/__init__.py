"""The validate stage: load check, generation modes, base-vs-quantized metrics, evals and gates.

``validate(recipe)`` runs the base model and the quantized checkpoint each in a fresh worker
process (worker.py), judges outputs (modes.py), scores evals (evals.py, grounding.py), checks
the recipe's gates and writes hubpub_metrics.json.
"""

from .._stage import make_callable
from .stage import ValidateResult, validate

__all__ = ["validate", "ValidateResult"]

make_callable(__name__, validate)  # `hubpub.validate(recipe)` works whichever name Python bound
