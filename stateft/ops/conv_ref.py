"""Causal depthwise conv1d + SiLU with torch: the reference (and CPU) path of `conv_triton`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, ConvSettings
from stateft.ops.split_grad import SplitGrad


def conv_silu_ref(
    *,
    x: Tensor,
    window: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    channels_last_out: bool = False,
    dx_into: SplitGrad | None = None,
    two: bool = False,
    settings: ConvSettings = DEFAULT_SETTINGS.conv,
) -> Tensor | tuple[Tensor, Tensor]:
    """The unfused path (`interfaces.ConvSiLU`): pad with the window, conv1d, SiLU; copied (b l c)-major if
    ``channels_last_out``; with ``two`` the same tensor twice (autograd adds the two gradients). ``dx_into`` and
    ``settings`` unused: x's gradient comes back from autograd (and `split_grad` copies it into place)."""
    c, K = x.shape[1], weight.shape[-1]
    if window is None:
        window = x.new_zeros(x.shape[0], c, K - 1)
    x_pad = torch.cat([window.to(x.dtype), x], dim=2)
    w = weight.reshape(c, 1, K).to(x.dtype)
    u = F.silu(F.conv1d(x_pad, w, None if bias is None else bias.to(x.dtype), groups=c))
    u = u.transpose(1, 2).contiguous().transpose(1, 2) if channels_last_out else u
    return (u, u) if two else u
