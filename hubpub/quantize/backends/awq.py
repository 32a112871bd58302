"""``awq`` and ``awq+autoround``: activation-aware scaling (auto-round's AWQ), then RTN or AutoRound.

AWQ searches per-channel scales from calibration activations and folds them into the preceding
norm / linear, so salient input channels lose less precision; the block quantizer then rounds
(``awq``: plain RTN, as auto-round's CLI ``--algs awq``; ``awq+autoround``: sign-gradient
tuning, ``--algs awq,auto_round``).
"""

from __future__ import annotations

import re
from typing import Literal, Union

from pydantic import Field, field_validator

from . import backends
from ._autoround import AutoRoundBackend
from .autoround import SignRoundSettings
from pydantic import BaseModel, ConfigDict


class AWQMapping(BaseModel):
    """One smooth -> balance pairing, as auto-round's AWQConfig(mappings=[...]) takes it (regexes
    searched in the module names of each block)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    smooth_layer: str = Field(description="regex of the layer whose output channels are divided, e.g. 'input_layernorm$'")
    balance_layers: list[str] = Field(min_length=1, description="regexes of the linears it feeds, e.g. ['q_proj$', 'k_proj$']")

    @field_validator("smooth_layer")
    @classmethod
    def _smooth_regex(cls, value: str) -> str:
        return _regex(value)

    @field_validator("balance_layers")
    @classmethod
    def _balance_regexes(cls, value: list[str]) -> list[str]:
        return [_regex(v) for v in value]


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a regular expression ({exc})") from None
    return value


class AWQSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    awq_mappings: list[AWQMapping] | None = Field(
        None, description="the model's smooth -> balance pairs (default: auto-round's by architecture, else Llama-like);"
        " every mapping is tested for equivalence on the first block before tuning")

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
