"""Causal depthwise conv1d + SiLU in Triton (one kernel forward, two backward; Gluon on GPUs): the mixers' conv, fused.

    u[b, c, t] = silu(bias[c] + sum_k w[c, k] x_pad[b, c, t + k]),   x_pad = [window (K-1 steps), x (L steps)]

The unfused path pads by concatenating the window and x (a copy that also transposes: the mixers' x is a view of
in_proj's (b l C) output, channels contiguous), runs cuDNN's conv and then SiLU, each a pass over memory, and keeps
the padded copy for the backward. Here one kernel reads x in place (any strides) and the window, and writes u in the
layout the caller asks for; the backward recomputes the pre-activation from x, writes its gradient dv (fp32, with dw and
d bias as per-tile partial sums when the conv is trained), then dx from dv laid out like x or straight into its half
of in_proj's output gradient (`split_grad`), so that gradient is assembled without a transposing copy (dv written
once and read at K shifts: one kernel recomputing dv at K shifted steps was slower, benchmarks/NOTES.md). On GPUs
(``kernels`` "gluon") both passes run the Gluon kernels of `gluon_conv_kernels` where they apply (K = 4; the backward
in one pass, dv never written, for the frozen conv with no window gradient): each thread holds 8 consecutive steps, so
the K shifts are register renamings (kernel times: benchmarks/results/conv_kernel.md). Tiles, warps and the kernel
choice come from the `settings.ConvSettings` passed in. With ``two`` the mixer's two uses of u (projections, scan)
get their own outputs and the backward adds their gradients as it reads them.
Arithmetic in fp32. ``window`` (b, C, K-1) may be None (zeros: a fresh sequence) or an expanded learned window;
its gradient (K-1 steps) is computed outside the kernel from the first steps' pre-activation gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from stateft.ops.conv_pad import x_pad
from stateft.ops.gluon_conv_kernels import conv_silu_bwd_gluon_kernel, conv_silu_fwd_gluon_kernel
from stateft.ops.layout import dim_order, empty_in_order
from stateft.ops.settings import DEFAULT_SETTINGS, ConvSettings
from stateft.ops.split_grad import SplitGrad
from stateft.ops.triton_math import FAST, sigmoid


@triton.jit
def _preact(x_base, w_base, wt_ptr, bias, t, offs_c, mask_c, L, sx_c, sx_l, sw_c, sw_k,
            K: tl.constexpr, HAS_WIN: tl.constexpr):  # fmt: skip
    """bias + sum_k w[:, k] x_pad[t + k] for the positions t (l,): (l, c) fp32."""
    v = tl.zeros((t.shape[0], offs_c.shape[0]), dtype=tl.float32) + bias[None, :]
    for k in tl.static_range(K):
        wk = tl.load(wt_ptr + offs_c * K + k, mask=mask_c, other=0.0)
        v += wk[None, :] * x_pad(x_base, w_base, t + k, offs_c, mask_c, L, sx_c, sx_l, sw_c, sw_k, K - 1, HAS_WIN)
    return v


@triton.jit
def _tile(C, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's (step tile, channel tile, sequence): pid_l, pid_b, the steps t, the channels and their mask."""
    pid_l = tl.program_id(0)
    pid_b = tl.program_id(2).to(tl.int64)
    t = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    return pid_l, pid_b, t, offs_c, offs_c < C


@triton.jit
def _bias(bias_ptr, offs_c, mask_c, HAS_BIAS: tl.constexpr):
    if HAS_BIAS:
        return tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    else:
        return tl.zeros_like(offs_c.to(tl.float32))


@triton.jit
def conv_silu_fwd_kernel(
    x_ptr, win_ptr, w_ptr, bias_ptr, u_ptr, C, L,
    sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, su_b, su_c, su_l,
    K: tl.constexpr, HAS_WIN: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    _, pid_b, t, offs_c, mask_c = _tile(C, BLOCK_L, BLOCK_C)
    bias = _bias(bias_ptr, offs_c, mask_c, HAS_BIAS)
    v = _preact(x_ptr + pid_b * sx_b, win_ptr + pid_b * sw_b, w_ptr, bias, t, offs_c, mask_c, L,
                sx_c, sx_l, sw_c, sw_k, K, HAS_WIN)  # fmt: skip
    u = v * sigmoid(v)
    mask = (t < L)[:, None] & mask_c[None, :]
    tl.store(u_ptr + pid_b * su_b + t[:, None] * su_l + offs_c[None, :] * su_c, u.to(u_ptr.dtype.element_ty), mask=mask)


@triton.jit
def conv_silu_dv_kernel(
    x_ptr, win_ptr, w_ptr, bias_ptr, du_ptr, du2_ptr, dv_ptr, dw_ptr, db_ptr, C, L,
    sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, sdu_b, sdu_c, sdu_l, sdu2_b, sdu2_c, sdu2_l,
    K: tl.constexpr, HAS_WIN: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DU2: tl.constexpr,
    W_GRAD: tl.constexpr, B_GRAD: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward, first pass, one (step tile, channel tile, sequence): dv = du * silu'(v) with the pre-activation v
    recomputed, into ``dv`` (b, L, C) fp32; du is the sum of ``du`` and, if HAS_DU2, ``du2`` (the gradients of the two
    aliases of u). If the conv is trained (W_GRAD, B_GRAD), this tile's partial sums of dw[:, k] = sum_t dv[t]
    x_pad[t + k] and of d bias into (b, tiles, C, K) and (b, tiles, C)."""
    pid_l, pid_b, t, offs_c, mask_c = _tile(C, BLOCK_L, BLOCK_C)
    bias = _bias(bias_ptr, offs_c, mask_c, HAS_BIAS)
    x_base = x_ptr + pid_b * sx_b
    w_base = win_ptr + pid_b * sw_b
    v = _preact(x_base, w_base, w_ptr, bias, t, offs_c, mask_c, L, sx_c, sx_l, sw_c, sw_k, K, HAS_WIN)
    m = (t < L)[:, None] & mask_c[None, :]
    du = tl.load(du_ptr + pid_b * sdu_b + t[:, None] * sdu_l + offs_c[None, :] * sdu_c, mask=m, other=0.0)
    du = du.to(tl.float32)
    if HAS_DU2:
        du2 = tl.load(du2_ptr + pid_b * sdu2_b + t[:, None] * sdu2_l + offs_c[None, :] * sdu2_c, mask=m, other=0.0)
        du += du2.to(tl.float32)
    sig = sigmoid(v)
    dv = du * sig * (1.0 + v * (1.0 - sig))
    tl.store(dv_ptr + (pid_b * L + t[:, None]) * C + offs_c[None, :], dv, mask=m)
    part = (pid_b * tl.num_programs(0) + pid_l) * C
    if W_GRAD:
        for k in tl.static_range(K):
            xk = x_pad(x_base, w_base, t + k, offs_c, mask_c, L, sx_c, sx_l, sw_c, sw_k, K - 1, HAS_WIN)
            tl.store(dw_ptr + (part + offs_c) * K + k, tl.sum(dv * xk, axis=0), mask=mask_c)
    if B_GRAD:
        tl.store(db_ptr + part + offs_c, tl.sum(dv, axis=0), mask=mask_c)


@triton.jit
def conv_dx_kernel(
    dv_ptr, w_ptr, dx_ptr, C, L, sdx_b, sdx_c, sdx_l,
    K: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Backward, second pass: x[t] = x_pad[t + K-1] feeds the outputs at t + K-1-k with weight k, so
    dx[t] = sum_s w[:, K-1-s] dv[t + s] (dv 0 past L); written in x's layout."""
    _, pid_b, t, offs_c, mask_c = _tile(C, BLOCK_L, BLOCK_C)
    dx = tl.zeros((BLOCK_L, BLOCK_C), dtype=tl.float32)
    for s in tl.static_range(K):
        ts = t + s
        m = (ts < L)[:, None] & mask_c[None, :]
        dv = tl.load(dv_ptr + (pid_b * L + ts[:, None]) * C + offs_c[None, :], mask=m, other=0.0)
        wk = tl.load(w_ptr + offs_c * K + (K - 1 - s), mask=mask_c, other=0.0)
        dx += wk[None, :] * dv
    mask = (t < L)[:, None] & mask_c[None, :]
    tl.store(dx_ptr + pid_b * sdx_b + t[:, None] * sdx_l + offs_c[None, :] * sdx_c, dx.to(dx_ptr.dtype.element_ty),
             mask=mask)  # fmt: skip


def _gluon(cfg: ConvSettings, grads_beyond_x: bool, K: int) -> bool:
    """Whether a pass runs the Gluon kernel (`gluon_conv_kernels`): asked for (``cfg.kernels``), on a GPU (Gluon has
    no interpreter), K = 4 (the mixers' d_conv), BLOCK_L 64 and, for the backward, only dx wanted (``grads_beyond_x``:
    dw, d bias or the window's gradient; the forward passes False)."""
    return cfg.kernels == "gluon" and FAST.value and not grads_beyond_x and K == 4 and cfg.BLOCK_L == 64


class _ConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, window, weight, bias, u_channels_last, dx_into, two, cfg):
        b, c, length = x.shape
        K = weight.shape[-1]
        w = weight.reshape(c, K).float().contiguous()
        bias32 = None if bias is None else bias.float().contiguous()
        u = empty_in_order(x.shape, [0, 2, 1] if u_channels_last else [0, 1, 2], x)
        win = x if window is None else window
        grid = (triton.cdiv(length, cfg.BLOCK_L), triton.cdiv(c, cfg.BLOCK_C), b)
        args = (x, win, w, w if bias32 is None else bias32, u, c, length,
                *x.stride(), *(win.stride() if window is not None else (0, 0, 0)), *u.stride())  # fmt: skip
        flags = {"K": K, "HAS_WIN": window is not None, "HAS_BIAS": bias is not None, "BLOCK_L": cfg.BLOCK_L,
                 "BLOCK_C": cfg.BLOCK_C}  # fmt: skip
        if _gluon(cfg, False, K):
            conv_silu_fwd_gluon_kernel[grid](*args, **flags, U_STEPS=u.stride(2) == 1, WARPS=4, num_warps=4)
        else:
            conv_silu_fwd_kernel[grid](*args, **flags)
        ctx.save_for_backward(x, window, w, bias32)
        ctx.meta = (weight.shape, weight.dtype, None if bias is None else bias.dtype)
        ctx.dx_into = dx_into
        ctx.cfg = cfg
        if not two:
            return u
        ctx.set_materialize_grads(False)  # an alias nothing used has no gradient (None, not zeros)
        return u, u.view_as(u)

    @staticmethod
    def backward(ctx, du, du2=None):
        x, window, w, bias32 = ctx.saved_tensors
        if du is None:
            du, du2 = du2, None
        w_shape, w_dtype, b_dtype = ctx.meta
        b, c, length = x.shape
        K = w.shape[1]
        cfg = ctx.cfg
        block_l, block_c, num_warps = cfg.BLOCK_L, cfg.BLOCK_C, cfg.num_warps
        n_tiles = triton.cdiv(length, block_l)
        f32 = {"device": x.device, "dtype": torch.float32}
        # laid out like x, or straight into its half of in_proj's output gradient (`split_grad`)
        dx = empty_in_order(x.shape, dim_order(x), x) if ctx.dx_into is None else ctx.dx_into.half(0)
        w_grad, b_grad = ctx.needs_input_grad[2], bias32 is not None and ctx.needs_input_grad[3]
        win = x if window is None else window
        grid = (n_tiles, triton.cdiv(c, block_c), b)
        dwin_grad = window is not None and ctx.needs_input_grad[1]
        if _gluon(cfg, w_grad or b_grad or dwin_grad, K):
            du2_ = du if du2 is None else du2
            conv_silu_bwd_gluon_kernel[grid](
                x, win, w, w if bias32 is None else bias32, du, du2_, dx, c, length,
                *x.stride(), *(win.stride() if window is not None else (0, 0, 0)), *du.stride(), *du2_.stride(),
                *dx.stride(), K=K, HAS_WIN=window is not None, HAS_BIAS=bias32 is not None, HAS_DU2=du2 is not None,
                BLOCK_L=block_l, BLOCK_C=block_c, WARPS=num_warps, num_warps=num_warps,
            )  # fmt: skip
            return dx, None, None, None, None, None, None, None
        dw = torch.empty(b, n_tiles, c, K, **f32) if w_grad else None  # partial sums (frozen conv: none)
        db = torch.empty(b, n_tiles, c, **f32) if b_grad else None
        dv = torch.empty(b, length, c, **f32)  # the pre-activation's gradient, channels contiguous like x's tiles
        conv_silu_dv_kernel[grid](
            x, win, w, w if bias32 is None else bias32, du, du if du2 is None else du2, dv, dv if dw is None else dw,
            dv if db is None else db, c, length, *x.stride(), *(win.stride() if window is not None else (0, 0, 0)),
            *du.stride(), *(du if du2 is None else du2).stride(),
            K=K, HAS_WIN=window is not None, HAS_BIAS=bias32 is not None, HAS_DU2=du2 is not None,
            W_GRAD=w_grad, B_GRAD=b_grad,
            BLOCK_L=block_l, BLOCK_C=block_c, num_warps=num_warps,
        )  # fmt: skip
        conv_dx_kernel[grid](dv, w, dx, c, length, *dx.stride(), K=K, BLOCK_L=block_l, BLOCK_C=block_c)
        dwindow = None
        if dwin_grad:
            # window step j feeds the outputs at steps j - k >= 0 with weight k: d window[j] = sum_k w_k dv[j - k]
            dwin = torch.zeros(b, c, K - 1, **f32)
            for j in range(K - 1):
                for k in range(j + 1):
                    if j - k < length:
                        dwin[:, :, j] += w[:, k] * dv[:, j - k]
            dwindow = dwin.to(window.dtype)
        return (
            dx,
            dwindow,
            dw.sum((0, 1)).reshape(w_shape).to(w_dtype) if w_grad else None,
            db.sum((0, 1)).to(b_dtype) if b_grad else None,
            None,
            None,
            None,
            None,
        )


def conv_silu_triton(
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
    """silu(causal depthwise conv1d) of x (b c l) led by ``window`` (b c K-1, or None for zeros) in Triton
    (`interfaces.ConvSiLU`): (b c l) in x's dtype, laid out (b l c)-major if ``channels_last_out``, else (b c l).
    weight (c, 1, K) or (c, K), bias (c,). ``dx_into``: x is half 0 of a `split_grad.split_halves`; its gradient is
    written there. ``two``: return u twice (the second a view of the first) for two consumers; the backward sums their
    gradients as it reads them, instead of autograd adding them in a pass of its own over (b c l)."""
    return _ConvSiLU.apply(x, window, weight, bias, channels_last_out, dx_into, two, settings)
