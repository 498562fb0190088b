"""The residual add and the pre-norm RMSNorm of a Mamba block in one Triton kernel each way.

Between two mixers the LM computes ``h = h + y`` (fp32 residual, y the mixer's output) and ``x = RMSNorm(h)`` (in the
weight's dtype). In eager PyTorch that is ~6 elementwise and reduction kernels forward and ~10 backward over (b l d)
fp32 tensors (pow, mean, rsqrt, casts, their gradients, the residual gradient's sum and cast). Here the forward reads
h and y once and writes the new residual and x; the backward reads the new residual, dx and the residual gradient
arriving from later, and writes the residual gradient going back (fp32) and y's gradient (y's dtype). The per-row
1/rms is kept from the forward.

Same rounding as `stateft.models.norm.RMSNorm`: the normalised row is cast to the weight's dtype before the weight
multiplies it. The backward is computed in fp32 throughout (eager rounds g * w to the weight's dtype first). Rows per
backward program: `settings.NormSettings`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, NormSettings


@triton.jit
def add_norm_fwd_kernel(h_ptr, y_ptr, w_ptr, hout_ptr, x_ptr, rstd_ptr, D, eps,
                        HAS_Y: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    h = tl.load(h_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_Y:
        h += tl.load(y_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(hout_ptr + row * D + offs, h, mask=mask)
    rstd = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / D + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    xhat = (h * rstd).to(w.dtype).to(tl.float32)
    tl.store(x_ptr + row * D + offs, (w.to(tl.float32) * xhat).to(x_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def add_norm_bwd_kernel(h_ptr, rstd_ptr, w_ptr, dx_ptr, dhn_ptr, dh_ptr, dy_ptr, dw_ptr, R, D,
                        HAS_DHN: tl.constexpr, HAS_Y: tl.constexpr, W_GRAD: tl.constexpr,
                        ROWS: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    w_raw = tl.load(w_ptr + offs, mask=mask, other=0.0)
    w = w_raw.to(tl.float32)
    dw = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for i in range(0, ROWS):
        row = pid.to(tl.int64) * ROWS + i
        if row < R:
            h = tl.load(h_ptr + row * D + offs, mask=mask, other=0.0)
            rstd = tl.load(rstd_ptr + row)
            xhat = h * rstd
            dx = tl.load(dx_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)
            g = dx * w
            # x = w * h / rms(h): dL/dh = (g - xhat mean(g xhat)) / rms(h)
            dh = rstd * (g - xhat * (tl.sum(g * xhat, axis=0) / D))
            if HAS_DHN:
                dh += tl.load(dhn_ptr + row * D + offs, mask=mask, other=0.0)
            tl.store(dh_ptr + row * D + offs, dh, mask=mask)
            if HAS_Y:
                tl.store(dy_ptr + row * D + offs, dh.to(dy_ptr.dtype.element_ty), mask=mask)
            if W_GRAD:
                dw += dx * xhat.to(w_raw.dtype).to(tl.float32)
    if W_GRAD:
        tl.store(dw_ptr + pid * D + offs, dw, mask=mask)


def _rows(t: Tensor) -> Tensor:
    return t.reshape(-1, t.shape[-1]).contiguous()


class _AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, y, weight, eps, cfg):
        shape, D = h.shape, h.shape[-1]
        h2 = _rows(h)
        R = h2.shape[0]
        hout = torch.empty(h2.shape, device=h.device, dtype=torch.float32) if y is not None else h2
        x = torch.empty(h2.shape, device=h.device, dtype=weight.dtype)
        rstd = torch.empty(R, device=h.device, dtype=torch.float32)
        if R:
            add_norm_fwd_kernel[(R,)](h2, _rows(y) if y is not None else h2, weight, hout, x, rstd, D, eps,
                                      HAS_Y=y is not None, BLOCK_D=triton.next_power_of_2(D),
                                      num_warps=_warps(D))  # fmt: skip
        ctx.save_for_backward(hout, rstd, weight)
        ctx.meta = (shape, None if y is None else y.dtype)
        ctx.rows = cfg.ROWS
        ctx.set_materialize_grads(False)
        if y is None:  # x only: h's other uses get their gradient from autograd
            return x.view(shape)
        return hout.view(shape), x.view(shape)

    @staticmethod
    def backward(ctx, *grads):
        hout, rstd, weight = ctx.saved_tensors
        shape, y_dtype = ctx.meta
        dh_next, dx = (None, grads[0]) if y_dtype is None else grads
        R, D = hout.shape
        if dx is None:  # only the residual was used
            return dh_next, dh_next.to(y_dtype), None, None, None
        w_grad = ctx.needs_input_grad[2]
        rows = ctx.rows if w_grad else 1
        n_prog = triton.cdiv(R, rows)
        dh = torch.empty((R, D), device=hout.device, dtype=torch.float32)
        dy = torch.empty((R, D), device=hout.device, dtype=y_dtype) if y_dtype is not None else None
        dw = torch.empty((n_prog, D), device=hout.device, dtype=torch.float32) if w_grad else None
        if R:
            dhn = _rows(dh_next) if dh_next is not None else None
            add_norm_bwd_kernel[(n_prog,)](hout, rstd, weight, _rows(dx), dhn if dhn is not None else hout, dh,
                                           dy if dy is not None else dh, dw if dw is not None else dh, R, D,
                                           HAS_DHN=dhn is not None, HAS_Y=dy is not None, W_GRAD=w_grad, ROWS=rows,
                                           BLOCK_D=triton.next_power_of_2(D), num_warps=_warps(D))  # fmt: skip
        dweight = dw.sum(0).to(weight.dtype) if w_grad else None
        return dh.view(shape), None if dy is None else dy.view(shape), dweight, None, None


def _warps(D: int) -> int:
    return 4 if D <= 1024 else 8


def add_rms_norm_triton(
    *,
    h: Tensor,
    y: Tensor | None,
    weight: Tensor,
    eps: float,
    settings: NormSettings = DEFAULT_SETTINGS.norm,
) -> tuple[Tensor, Tensor]:
    """(h + y in fp32, RMSNorm(h + y) in ``weight``'s dtype); with ``y`` None: (h, RMSNorm(h)). h fp32 (... d).
    `interfaces.AddRMSNorm` in one kernel each way."""
    if h.dtype != torch.float32:
        raise ValueError("add_rms_norm_triton: the residual h must be fp32")
    if y is None:
        return h, _AddRMSNorm.apply(h, None, weight, eps, settings)
    return _AddRMSNorm.apply(h, y, weight, eps, settings)
