"""Causal depthwise conv1d + SiLU with torch: the reference (and CPU) path of `conv_triton`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def conv_silu_ref(x: Tensor, window: Tensor | None, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The same with torch: pad with the window, conv1d, SiLU (the unfused path)."""
    c, K = x.shape[1], weight.shape[-1]
    if window is None:
        window = x.new_zeros(x.shape[0], c, K - 1)
    x_pad = torch.cat([window.to(x.dtype), x], dim=2)
    w = weight.reshape(c, 1, K).to(x.dtype)
    return F.silu(F.conv1d(x_pad, w, None if bias is None else bias.to(x.dtype), groups=c))
