"""RMSNorm and the residual add before it in PyTorch: the reference of `norm_triton` (and what `RMSNorm` computes)."""

from __future__ import annotations

import torch
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, NormSettings


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """weight * x / sqrt(mean(x^2) + eps), computed in fp32 and cast to weight's dtype before the weight multiplies
    (mamba_ssm's and transformers' rounding)."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(weight.dtype)


def add_rms_norm_ref(
    *,
    h: Tensor,
    y: Tensor | None,
    weight: Tensor,
    eps: float,
    settings: NormSettings = DEFAULT_SETTINGS.norm,
) -> tuple[Tensor, Tensor]:
    """(h + y, RMSNorm(h + y)), or (h, RMSNorm(h)) when ``y`` is None (`interfaces.AddRMSNorm`; ``settings``
    unused): eager ops, autograd differentiates them."""
    if y is not None:
        h = h + y
    return h, rms_norm_ref(h, weight, eps)
