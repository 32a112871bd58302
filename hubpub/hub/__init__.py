"""Publishing to the Hub: ``push`` (one tagged, verified commit), ``plan`` (dry run) and
``fetch_previous_release`` (a tagged release read back for the card's history).

Importing this package is cheap: huggingface_hub is imported inside the functions.
"""

from .plan import PushPlan, build_plan, scan_release
from .push import PushResult, check_release, push
from .remote import fetch_previous_release

__all__ = ["PushPlan", "PushResult", "build_plan", "check_release", "fetch_previous_release", "push", "scan_release"]
