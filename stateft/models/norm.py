"""RMSNorm (computed in fp32, cast back), as in mamba_ssm and transformers' Mamba (`stateft.ops.norm_ref`; between
blocks the LM runs it fused with the residual add through `stateft.ops.add_rms_norm`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stateft.ops.norm_ref import rms_norm_ref


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm_ref(x, self.weight, self.eps)
