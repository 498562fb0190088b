"""Random-init pieces shared by the Mamba-1 and Mamba-2 mixers (mamba_ssm's scheme)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def dt_bias_init(n: int, dt_min: float, dt_max: float, dt_floor: float) -> Tensor:
    """A bias b such that softplus(b) = dt, dt log-uniform in [dt_min, dt_max] (clamped below at dt_floor)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse softplus
