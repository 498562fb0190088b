"""Triton SSD scan (Mamba-2): the fast path behind `stateft.ops.ssd_scan` (a backend whose ``ssd`` is "triton").

Same signature and result as `ssd_ref.ssd_scan_ref`. dt's bias, softplus and clamp are applied here in PyTorch
(elementwise, autograd differentiates them); the scan, the D skip, the initial state and all gradients (x, dt, A, B,
C, D, initial state) run in the kernels of `ssd_triton_kernels`, launched as the `settings.SSDSettings` passed in
say. ``chunk_size`` is not used: the kernels chunk by ``settings.BLOCK_Q`` (fewer steps past 128 state lanes:
`_launch_shape`), which changes rounding only.
``initial_state`` may be an expanded (stride-0 batch) view of one (h p n) parameter: its gradient comes back per batch
row and autograd sums it.
"""

from __future__ import annotations

import math

import torch
import triton
from torch import Tensor
from triton.runtime.errors import OutOfResources

from stateft.ops.settings import DEFAULT_SETTINGS, SSDSettings
from stateft.ops.ssd_ref import discretize_dt
from stateft.ops.ssd_triton_kernels import ssd_bwd_kernel, ssd_fwd_kernel

_FULL_Q_LANES = 128  # state lanes (N padded to a power of two) up to which chunks of BLOCK_Q steps fit
# (dtype, headdim, dstate, settings) -> the BLOCK_P whose backward kernel fits (the backward halves BLOCK_P until its
# tiles fit the GPU's shared memory: SSDSettings)
_BWD_BLOCK_P: dict[tuple, int] = {}


def _block(n: int) -> int:
    return max(triton.next_power_of_2(n), 16)  # tl.dot needs every tile dimension >= 16


def _launch_shape(cfg: SSDSettings, headdim: int, dstate: int) -> tuple[int, int, int, int]:
    """(BLOCK_Q, BLOCK_P, BLOCK_N, channel blocks). The (Q N) tiles grow with the state lanes: past
    ``_FULL_Q_LANES`` (e.g. 128 + 32 states with additional_scan, padded to 256 lanes) a chunk of ``cfg.BLOCK_Q``
    steps outgrows a Hopper GPU's 227 KB of shared memory in the forward and the backward, so the chunk shrinks as the
    lanes grow. Forward and backward take the same shape: the backward re-reads the chunk start states the forward
    stored."""
    block_n = _block(dstate)
    block_q = max(16, int(cfg.BLOCK_Q) * _FULL_Q_LANES // max(block_n, _FULL_Q_LANES))
    block_p = min(_block(headdim), int(cfg.BLOCK_P))
    return block_q, block_p, block_n, triton.cdiv(headdim, block_p)


class _SSDScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, return_final, cfg):
        batch, length, nheads, headdim = x.shape
        ngroups, dstate = B.shape[2], B.shape[3]
        block_q, block_p, block_n, n_pblocks = _launch_shape(cfg, headdim, dstate)
        n_chunks = triton.cdiv(length, block_q)
        need_grad = any(ctx.needs_input_grad)
        f32 = {"device": x.device, "dtype": torch.float32}
        y = torch.empty(batch, length, nheads, headdim, device=x.device, dtype=x.dtype)
        final = torch.empty(batch, nheads, headdim, dstate, **f32) if return_final else None
        states = torch.empty(batch, n_chunks, nheads, headdim, dstate, **f32) if need_grad else None
        h0_strides = (0, 0, 0, 0) if h0 is None else h0.stride()
        ssd_fwd_kernel[(n_pblocks, batch * nheads)](
            x, dt, A, B, C, D, h0, y, final, states,
            batch, length, nheads, headdim, dstate, nheads // ngroups,
            *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *h0_strides,
            HAS_D=D is not None, HAS_H0=h0 is not None, STORE_FINAL=bool(return_final), STORE_STATES=need_grad,
            BLOCK_Q=block_q, BLOCK_P=block_p, BLOCK_N=block_n, PRECISION=cfg.PRECISION,
            num_warps=int(cfg.num_warps),
        )  # fmt: skip
        if need_grad:
            ctx.save_for_backward(x, dt, A, B, C, D, states)
            ctx.has_h0 = h0 is not None
            ctx.cfg = cfg
        return (y, final) if return_final else y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, dt, A, B, C, D, states = ctx.saved_tensors
        batch, length, nheads, headdim = x.shape
        ngroups, dstate = B.shape[2], B.shape[3]
        cfg = ctx.cfg
        block_q, block_p, block_n, _ = _launch_shape(cfg, headdim, dstate)
        dfinal = None if dfinal is None else dfinal.float().contiguous()
        key = (x.dtype, headdim, dstate, cfg)
        block_p = _BWD_BLOCK_P.get(key, block_p)
        while True:
            try:
                grads = _ssd_backward(x, dt, A, B, C, D, dy, dfinal, states, ctx.has_h0, cfg, block_q, block_p, block_n)
                break
            except OutOfResources:
                if block_p <= 16:
                    raise
                block_p //= 2  # fewer (Q P) and (P N) tiles; one more partial sum over channel blocks
        _BWD_BLOCK_P[key] = block_p
        ddt, da, dB, dC, dx, dh0 = grads
        da = da.sum(0)  # (b l h): gradient of a = dt A
        ddt = ddt.sum(0) + da * A
        dA = (da * dt).sum((0, 1))
        group = (batch, length, ngroups, nheads // ngroups, dstate)
        dB = dB.sum(0).view(group).sum(3).to(B.dtype)
        dC = dC.sum(0).view(group).sum(3).to(C.dtype)
        dD = None if D is None else (dy.float() * x.float()).sum((0, 1, 3)).to(D.dtype)
        return dx, ddt, dA, dB, dC, dD, dh0, None, None


def _ssd_backward(x, dt, A, B, C, D, dy, dfinal, states, has_h0, cfg, block_q, block_p, block_n):
    """Launch the backward kernel with BLOCK_P = block_p; returns the partial sums and dx, dh0."""
    batch, length, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    n_pblocks = triton.cdiv(headdim, block_p)
    f32 = {"device": x.device, "dtype": torch.float32}
    dx = torch.empty(batch, length, nheads, headdim, device=x.device, dtype=x.dtype)
    ddt = torch.empty(n_pblocks, batch, length, nheads, **f32)  # partial sums over channel blocks
    da = torch.empty(n_pblocks, batch, length, nheads, **f32)
    dB = torch.empty(n_pblocks, batch, length, nheads, dstate, **f32)  # per head; summed into groups by the caller
    dC = torch.empty(n_pblocks, batch, length, nheads, dstate, **f32)
    dh0 = torch.empty(batch, nheads, headdim, dstate, **f32) if has_h0 else None
    ssd_bwd_kernel[(n_pblocks, batch * nheads)](
        x, dt, A, B, C, D, dy, dfinal, states, dx, ddt, da, dB, dC, dh0,
        batch, length, nheads, headdim, dstate, nheads // ngroups,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *dy.stride(),
        HAS_D=D is not None, HAS_DFINAL=dfinal is not None, STORE_DH0=has_h0,
        BLOCK_Q=block_q, BLOCK_P=block_p, BLOCK_N=block_n, PRECISION=cfg.PRECISION,
        num_warps=int(cfg.num_warps), num_stages=int(cfg.bwd_num_stages),
    )  # fmt: skip
    return ddt, da, dB, dC, dx, dh0


def ssd_scan_triton(
    *,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 256,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = True,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
    settings: SSDSettings = DEFAULT_SETTINGS.ssd,
) -> Tensor | tuple[Tensor, Tensor]:
    """Triton SSD scan (`interfaces.SSDScan`). x (b l h p); dt (b l h); A, D, dt_bias (h,); B, C (b l g n);
    initial_state (b h p n). Returns y (b l h p) in x's dtype and, if asked, the final state (b h p n) in fp32."""
    dt32 = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b l h)
    h0 = None if initial_state is None else initial_state.float()
    if h0 is not None and h0.shape[0] != x.shape[0]:
        h0 = h0.expand(x.shape[0], -1, -1, -1)
    return _SSDScan.apply(x, dt32, A.float(), B, C, D, h0, return_final_state, settings)
