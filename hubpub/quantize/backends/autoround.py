"""``autoround``: AutoRound's sign-gradient tuned rounding (``[quantize] iters`` steps per block)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from . import backends
from ._autoround import AutoRoundBackend


class SignRoundSettings(BaseModel):
    """[quantize] keys only the tuned backends read (besides the shared ``iters``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    lr: float | None = Field(None, gt=0, description="learning rate of the rounding (default: 1 / iters)")
    minmax_lr: float | None = Field(None, gt=0, description="learning rate of the min-max tuning (default: lr)")
    enable_minmax_tuning: bool = True


backends.register(AutoRoundBackend(
    name="autoround",
    display_name="AutoRound",
    algorithms=("sign_round",),
    reference_url="https://arxiv.org/abs/2309.05516",
    settings_model=SignRoundSettings,
    summary="sign-gradient tuned rounding",
))
