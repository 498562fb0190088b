"""The fused conv's input as its kernels see it: x led by the K-1 window steps (`conv_triton`, `gluon_conv_kernels`)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def x_pad(x_base, w_base, pos, offs_c, mask_c, L, sx_c, sx_l, sw_c, sw_k, KM1: tl.constexpr, HAS_WIN: tl.constexpr):
    """x_pad at sequence positions ``pos`` (l,) - (K-1), i.e. x[pos - (K-1)] or the window's step pos: (l, c) fp32,
    0 outside [0, K-1+L)."""
    xp = pos - KM1
    in_x = (xp >= 0) & (xp < L)
    v = tl.load(x_base + xp[:, None] * sx_l + offs_c[None, :] * sx_c, mask=in_x[:, None] & mask_c[None, :], other=0.0)
    v = v.to(tl.float32)
    if HAS_WIN:
        in_w = (pos >= 0) & (pos < KM1)
        wv = tl.load(w_base + pos[:, None] * sw_k + offs_c[None, :] * sw_c, mask=in_w[:, None] & mask_c[None, :],
                     other=0.0)  # fmt: skip
        v += wv.to(tl.float32)
    return v
