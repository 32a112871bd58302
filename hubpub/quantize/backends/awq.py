"""``awq`` and ``awq+autoround``: activation-aware scaling (auto-round's AWQ), then RTN or AutoRound.

AWQ searches per-channel scales from calibration activations and folds them into the preceding
norm / linear, so salient input channels lose less precision; the block quantizer then rounds
(``awq``: plain RTN, as auto-round's CLI ``--algs awq``; ``awq+autoround``: sign-gradient
tuning, ``--algs awq,auto_round``).
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from . import backends
from ._autoround import AutoRoundBackend
from .autoround import SignRoundSettings
from pydantic import BaseModel, ConfigDict


class AWQSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    duo_scaling: Union[bool, Literal["both"]] = Field(True, description="scale by activations and weights (true), activations only (false), or search both")
    n_grid: int = Field(20, ge=1, description="grid points of the scale-ratio search")
    apply_clip: bool = Field(False, description="also search a per-group weight clipping range")
    awq_seqlen: int | None = Field(None, ge=8, description="tokens per sample AWQ's search uses (default 512)")


class AWQAutoRoundSettings(AWQSettings, SignRoundSettings):
    pass


backends.register(AutoRoundBackend(
    name="awq",
    display_name="AWQ",
    algorithms=("awq", "rtn"),
    reference_url="https://arxiv.org/abs/2306.00978",
    settings_model=AWQSettings,
    summary="activation-aware scaling, then round-to-nearest",
))
backends.register(AutoRoundBackend(
    name="awq+autoround",
    display_name="AWQ + AutoRound",
    algorithms=("awq", "sign_round"),
    reference_url="https://github.com/intel/auto-round",
    settings_model=AWQAutoRoundSettings,
    summary="activation-aware scaling, then sign-gradient tuned rounding",
))
