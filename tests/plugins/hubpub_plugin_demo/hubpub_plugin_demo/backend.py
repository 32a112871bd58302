"""A quantize backend from outside hubpub: plain RTN under the name ``demo-rtn``, with one setting.

A backend satisfies hubpub.quantize.backends.QuantizeBackend: a name (the recipe's
``[quantize] method``), a display name and reference URL for the card, a pydantic model of the
``[quantize]`` keys it owns, the formats and devices it supports, ``quantize(job)`` and
``versions()``. Importing this module must stay light (no torch at import time).
"""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel, ConfigDict, Field

from . import __version__


class DemoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    note: str = Field("", description="a free-form note, written to the manifest")


class DemoRTN:
    name = "demo-rtn"
    display_name = "Demo RTN (plugin)"
    reference_url = "https://example.invalid/hubpub-plugin-demo"
    settings_model = DemoSettings
    formats = ("auto_round", "auto_gptq")
    devices = ("cpu", "cuda")
    needs_calibration = False

    def quantize(self, job):  # type: ignore[no-untyped-def]
        from hubpub.quantize.backends import backends

        result = backends.get("rtn").quantize(dataclasses.replace(job, settings=None))
        result.algorithms = [self.name, *result.algorithms]
        return result

    def versions(self) -> dict[str, str]:
        return {"hubpub_plugin_demo": __version__}
