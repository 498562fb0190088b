"""The causal convolution y[b, h, t] = sum_{j <= t} k[h, t - j] u[b, h, j] of an S4 layer's convolution mode.

``causal_conv_fft`` is the training path: zero-padding both signals to 2L makes the FFT's circular convolution a
linear one, so the first L outputs are the causal convolution, in O(L log L). ``causal_conv_direct`` is its twin,
the sum written out (O(L^2)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def causal_conv_fft(u: Tensor, k: Tensor) -> Tensor:
    """u (B, H, L), k (H, L) -> (B, H, L), by FFT of length 2L."""
    L = u.shape[-1]
    u_f = torch.fft.rfft(u, n=2 * L)
    k_f = torch.fft.rfft(k, n=2 * L)
    return torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]


def causal_conv_direct(u: Tensor, k: Tensor) -> Tensor:
    """The twin: conv1d over u left-padded with L-1 zeros, one group per channel, with the kernel flipped (conv1d
    correlates)."""
    B, H, L = u.shape
    padded = F.pad(u, (L - 1, 0))
    return F.conv1d(padded, k.flip(-1).unsqueeze(1), groups=H)
