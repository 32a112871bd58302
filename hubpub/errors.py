"""hubpub's exceptions: one base, one per stage.

Every message is one line that names the file and/or field at fault and says how to fix it.
The CLI (hubpub/cli/_app.py) is the only place that turns these into ``Error: ...`` and exit 1.
"""

from __future__ import annotations


class HubpubError(Exception):
    """Base class of every error hubpub raises on purpose."""

    stage = "hubpub"


class RecipeError(HubpubError):
    """The recipe file is missing, malformed, or asks for something impossible."""

    stage = "recipe"


class SourceError(HubpubError):
    """The base model cannot be found or read."""

    stage = "source"


class QuantizeError(HubpubError):
    """Quantization or split-and-repack failed."""

    stage = "quantize"


class ValidateError(HubpubError):
    """The checkpoint failed to load, a generation mode failed, or a gate was violated."""

    stage = "validate"


class CardError(HubpubError):
    """The model card could not be rendered."""

    stage = "card"


class PushError(HubpubError):
    """The upload to the Hub was refused or failed."""

    stage = "push"


class ReleaseError(HubpubError):
    """The release pipeline could not run a stage."""

    stage = "release"


class PluginError(HubpubError):
    """A plugin (entry point) failed to import or does not satisfy its protocol."""

    stage = "plugin"
