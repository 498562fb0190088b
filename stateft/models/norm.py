"""RMSNorm (computed in fp32, cast back), as in mamba_ssm and transformers' Mamba; and the residual add before it."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight."""

    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(self.weight.dtype)


def add_rms_norm(h: Tensor, y: Tensor | None, norm: RMSNorm, fused: bool) -> tuple[Tensor, Tensor]:
    """The residual stream between mixers: (h + y, norm(h + y)), or (h, norm(h)) when ``y`` is None; h fp32.

    ``fused``: one Triton kernel each way (`stateft.ops.norm_triton`; the LM uses it where the scan runs on Triton).
    """
    if fused:
        from stateft.ops.norm_triton import add_rms_norm_triton

        return add_rms_norm_triton(h, y, norm.weight, norm.eps)
    if y is not None:
        h = h + y
    return h, norm(h)
