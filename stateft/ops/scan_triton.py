"""Fused Triton selective scan: the fast path behind `stateft.ops.selective_scan` (a backend whose ``scan`` is
"triton").

Same signature and semantics as `scan_ref.selective_scan_ref`; the state offset h', the output offset y', the initial
state h_0 (and their gradients), delta bias + softplus, the D skip and the z gate all happen inside the kernels
(`triton_scan_kernels`). Inputs may be strided (the mixer passes z as a view of in_proj's (b l 2d) output, and dy
arrives (b l d)-major; the kernels read them in place unless ``settings.rows``) and bf16 or fp32; the arithmetic is
fp32. The launch shape and the kernel choice come from the `settings.ScanSettings` passed in (what each value means
and why it is the default: there). ``initial_state`` may be an expanded (stride-0 batch) view of one (d n) parameter:
its gradient comes back per batch row and autograd sums it.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from stateft.ops.gluon_scan_kernels import scan_bwd_gluon_kernel, scan_fwd_gluon_kernel
from stateft.ops.layout import dim_order, empty_in_order
from stateft.ops.settings import DEFAULT_SETTINGS, ScanSettings
from stateft.ops.split_grad import SplitGrad
from stateft.ops.triton_math import FAST
from stateft.ops.triton_scan_kernels import scan_bwd_kernel, scan_bwd_local_kernel, scan_fwd_kernel, seg_carry_kernel

_CARRY_BLOCK_D = 32
LAUNCHED: dict[str, object] = {}  # the last compiled kernel of each pass (registers, spills: benchmarks/scan_kernel.py)


def _gluon_fits(block_d: int, block_n: int, block_t: int, num_warps: int) -> bool:
    """Whether the Gluon kernels' layouts cover this launch shape: 4 x 8 lanes over (states, channels) per warp and
    warps side by side along the channels (BLOCK_D 8 per warp), BLOCK_T 8 steps in-thread (the recurrences are
    written out over 8 rows)."""
    return block_d == 8 * num_warps and block_n >= 4 and block_t == 8


def _pick(triton_kernel, gluon_kernel, kernels: str, block_d: int, block_n: int, block_t: int, num_warps: int):
    """The Triton or the Gluon version of a main kernel for this launch shape (``kernels``: ScanSettings.kernels)."""
    if kernels == "gluon" and FAST.value and _gluon_fits(block_d, block_n, block_t, num_warps):
        return gluon_kernel
    return triton_kernel


def _strides3(t: Tensor | None) -> tuple[int, int, int]:
    return (0, 0, 0) if t is None else tuple(t.stride())  # type: ignore[return-value]


def _rows(x: Tensor | None, rows: bool) -> Tensor | None:
    """x with unit stride along the sequence if ``rows`` (else as it is: the kernels take any strides)."""
    return x if x is None or x.stride(-1) == 1 or not rows else x.contiguous()


def _block_n(n: int) -> int:
    return max(triton.next_power_of_2(n), 2)


def _n_segments(length: int, chunk: int, programs: int, seg: int) -> tuple[int, int]:
    """(segment length, number of segments) for ``seg`` (ScanSettings.SEG, or the backward's: bwd_SEG, else SEG)
    and ``programs`` = b x ceil(E / BLOCK_D). The segment length is a runtime argument of the kernels (not a
    compile-time one): new lengths do not recompile them.

    Auto (-1): one segment from 768 programs on (segments cost time there), else enough segments of at least 512
    steps for ~3072 programs (the measurements behind both numbers: benchmarks/NOTES.md, "Segments").
    """
    if seg < 0:
        n = 1 if programs >= 768 else min(-(-3072 // programs), length // 512)
        seg = 0 if n <= 1 else triton.cdiv(triton.cdiv(length, n), chunk) * chunk
    if seg % chunk:
        raise ValueError(f"ScanSettings: segments of {seg} steps must be a multiple of CHUNK {chunk}")
    if seg <= 0 or seg >= length:
        return max(triton.cdiv(length, chunk), 1) * chunk, 1
    return seg, triton.cdiv(length, seg)


def _bc_slots(n_parts: int, slots: int) -> int:
    """The dB/dC slots (``slots``: ScanSettings.dBC_slots) of a backward of n_parts channel blocks: 0 (a partial per
    block, also whenever torch's deterministic algorithms are on) or 1..n_parts."""
    return 0 if torch.are_deterministic_algorithms_enabled() else min(slots, n_parts)


def _bdn_strides(t: Tensor | None) -> tuple[int, int, int, int]:
    """(b, segment, d, n) strides of a (b d n) tensor used as the one slot of a one-segment buffer."""
    return (0, 0, 0, 0) if t is None else (t.stride(0), 0, t.stride(1), t.stride(2))


def _slot_strides(buf: Tensor) -> tuple[int, int, int, int]:
    """(b, segment, d, n) strides of a (b, S + 1, n, d) segment buffer."""
    return buf.stride(0), buf.stride(1), buf.stride(3), buf.stride(2)


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, h0, h_offset, y_offset, return_last, dz_into, cfg):
        b, d, length = u.shape
        n = A.shape[1]
        A_t = A.t().contiguous()  # (n d): the kernels keep channels across lanes
        D = None if D is None else D.contiguous()
        delta_bias = None if delta_bias is None else delta_bias.contiguous()
        hoff_t = None if h_offset is None else h_offset.t().contiguous()
        y_offset = None if y_offset is None else y_offset.contiguous()
        block_d, block_t, chunk = int(cfg.BLOCK_D), int(cfg.BLOCK_T), int(cfg.CHUNK)
        n_chunks = triton.cdiv(length, chunk)
        seg, n_seg = _n_segments(length, chunk, b * triton.cdiv(d, block_d), int(cfg.SEG))
        need_grad = any(ctx.needs_input_grad)
        f32 = {"device": u.device, "dtype": torch.float32}
        # y written as (b l d): the out projection reads it that way, so its transpose is free
        y = torch.empty(b, length, d, device=u.device, dtype=u.dtype).transpose(1, 2)
        last = torch.empty(b, d, n, **f32) if return_last else None
        states = torch.empty(b, n_chunks, n, d, **f32) if need_grad else None
        uk, dk, zk, Bk, Ck = (_rows(t, cfg.rows) for t in (u, delta, z, B, C))
        block_n = _block_n(n)

        kernel = _pick(
            scan_fwd_kernel, scan_fwd_gluon_kernel, cfg.kernels, block_d, block_n, block_t, int(cfg.num_warps)
        )

        def launch(n_programs, hin, hin_strides, has_hin, local, dsum=None):
            LAUNCHED["fwd_local" if local else "fwd"] = kernel[(triton.cdiv(d, block_d), n_programs, b)](
                uk, dk, A_t, Bk, Ck, D, uk if zk is None else zk, delta_bias, hin, hoff_t, y_offset, y, last, states,
                dsum, d, n, length,
                *uk.stride(), *dk.stride(), *Bk.stride(), *Ck.stride(), *_strides3(zk), *hin_strides, *y.stride(),
                HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(softplus),
                HAS_HIN=has_hin, HAS_HOFF=hoff_t is not None, HAS_YOFF=y_offset is not None,
                STORE_LAST=return_last, STORE_STATES=need_grad, LOCAL=local,
                BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, CHUNK=chunk, SEG=seg,
                num_warps=int(cfg.num_warps),
            )  # fmt: skip

        if n_seg == 1:
            launch(1, h0, _bdn_strides(h0), h0 is not None, False)
        else:  # segment end states from zero, the carry over the boundaries, then y
            hbuf = torch.empty(b, n_seg + 1, n, d, **f32)
            dsum = torch.empty(b, n_seg, d, **f32)
            launch(n_seg - 1, hbuf, _slot_strides(hbuf), True, True, dsum)
            seg_carry_kernel[(triton.cdiv(d, _CARRY_BLOCK_D), b)](
                hbuf, dsum, A_t, hbuf if h0 is None else h0, d, n, n_seg, *_strides3(h0),
                HAS_INIT=h0 is not None, REVERSE=False, BLOCK_D=_CARRY_BLOCK_D, BLOCK_N=block_n,
            )  # fmt: skip
            launch(n_seg, hbuf, _slot_strides(hbuf), True, False)
        if need_grad:
            # the row-major copies, not the inputs: the backward reads them again (no second copy), and a (b l d)-major
            # z view (half of in_proj's output) would keep all of that output alive
            ctx.save_for_backward(uk, dk, A_t, Bk, Ck, D, zk, delta_bias, h0, hoff_t, y_offset, states)
            ctx.orders = (dim_order(u), dim_order(delta), dim_order(z))  # the gradients are laid out like the inputs
            ctx.dtypes = (A.dtype, None if h_offset is None else h_offset.dtype)
            ctx.softplus = bool(softplus)
            bwd_block_d = int(cfg.bwd_BLOCK_D)
            seg_setting = cfg.SEG if cfg.bwd_SEG is None else cfg.bwd_SEG
            bwd_seg = _n_segments(length, chunk, b * triton.cdiv(d, bwd_block_d), int(seg_setting))
            ctx.block = (bwd_block_d, block_t, chunk, *bwd_seg)
            ctx.h0_dtype = None if h0 is None else h0.dtype
            ctx.dz_into = dz_into
            ctx.cfg = cfg
        return (y, last) if return_last else y

    @staticmethod
    def backward(ctx, dy, dlast=None):
        u, delta, A_t, B, C, D, z, delta_bias, h0, hoff_t, y_offset, states = ctx.saved_tensors
        b, d, length = u.shape
        n = A_t.shape[0]
        A_dtype, hoff_dtype = ctx.dtypes
        block_d, block_t, chunk, seg, n_seg = ctx.block
        n_parts = triton.cdiv(d, block_d)
        block_n = _block_n(n)
        f32 = {"device": u.device, "dtype": torch.float32}
        # each gradient laid out like its input (as empty_like would): the op that made the input reads its gradient
        # without a copy
        u_order, delta_order, z_order = ctx.orders
        du = empty_in_order(u.shape, u_order, u)
        ddelta = empty_in_order(delta.shape, delta_order, delta)
        if z is None:
            dz = None
        else:  # straight into its half of in_proj's output gradient when z is a `split_grad` half
            dz = empty_in_order(z.shape, z_order, z) if ctx.dz_into is None else ctx.dz_into.half(1)
        # one partial sum per channel block or per slot, dB and dC in one buffer (one reduction; one cast if B and C
        # share a dtype)
        cfg = ctx.cfg
        slots = _bc_slots(n_parts, cfg.dBC_slots)
        dBC = torch.zeros(b, slots, 2, n, length, **f32) if slots else torch.empty(b, n_parts, 2, n, length, **f32)
        # per program, the states entering each block of one chunk: (chunk / BLOCK_T) x (n, BLOCK_D) fp32 (L2)
        scratch = torch.empty(b * n_seg * n_parts * (chunk // block_t) * block_n * block_d, **f32)
        # per-channel parameter gradients, partials per (sequence, segment); only those asked for (A, D and the delta
        # bias are frozen in every method but full fine-tuning and BitFit)
        need = ctx.needs_input_grad
        grad_a, grad_d, grad_bias = need[2], D is not None and need[5], delta_bias is not None and need[7]
        dA = torch.empty(b, n_seg, d, n, **f32) if grad_a else None
        dD = torch.empty(b, n_seg, d, **f32) if grad_d else None
        dbias = torch.empty(b, n_seg, d, **f32) if grad_bias else None
        dh0 = torch.empty(b, d, n, **f32) if h0 is not None else None
        dhoff = torch.empty(b, n_seg, d, n, **f32) if hoff_t is not None else None
        dyoff = torch.empty(b, n_seg, d, **f32) if y_offset is not None else None
        g_strides = ddelta.stride()
        u, delta, z, dy, B, C = (_rows(t, cfg.rows) for t in (u, delta, z, dy, B, C))
        zk = u if z is None else z  # a valid pointer where the kernels take no z
        if n_seg == 1:
            dhin, dhin_strides = dlast, _bdn_strides(dlast)
        else:  # the adjoint at each segment's start from zero, then the carry from the right
            dhin = torch.empty(b, n_seg + 1, n, d, **f32)
            dsum = torch.empty(b, n_seg, d, **f32)
            scan_bwd_local_kernel[(n_parts, n_seg - 1, b)](
                delta, A_t, C, zk, delta_bias, dy, dhin, dsum, d, n, length,
                *delta.stride(), *C.stride(), *_strides3(z), *dy.stride(),
                HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
                BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, SEG=seg, num_warps=int(cfg.bwd_num_warps),
            )  # fmt: skip
            seg_carry_kernel[(triton.cdiv(d, _CARRY_BLOCK_D), b)](
                dhin, dsum, A_t, dhin if dlast is None else dlast, d, n, n_seg, *_strides3(dlast),
                HAS_INIT=dlast is not None, REVERSE=True, BLOCK_D=_CARRY_BLOCK_D, BLOCK_N=block_n,
            )  # fmt: skip
            dhin_strides = _slot_strides(dhin)
        kernel = _pick(
            scan_bwd_kernel, scan_bwd_gluon_kernel, cfg.kernels, block_d, block_n, block_t, int(cfg.bwd_num_warps)
        )
        LAUNCHED["bwd"] = kernel[(n_parts, n_seg, b)](
            u, delta, A_t, B, C, D, zk, delta_bias, hoff_t, y_offset, states, scratch, dy, dhin,
            du, ddelta, dz, dBC[:, :, 0], dBC[:, :, 1], dA, dD, dbias, dh0, dhoff, dyoff,
            d, n, length,
            *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *_strides3(z),
            *dy.stride(), *du.stride(), *g_strides, *_strides3(dz),
            dBC.stride(0), dBC.stride(1), dBC.stride(3), *dhin_strides,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
            GRAD_A=grad_a, GRAD_D=grad_d, GRAD_BIAS=grad_bias,
            HAS_H0=h0 is not None, HAS_HOFF=hoff_t is not None, HAS_YOFF=y_offset is not None,
            HAS_DHIN=dhin is not None,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, CHUNK=chunk, SEG=seg, BC_SLOTS=slots,
            num_warps=int(cfg.bwd_num_warps),
        )  # fmt: skip
        dBC = dBC[:, 0] if dBC.shape[1] == 1 else dBC.sum(1)
        if B.dtype == C.dtype:  # one cast for both
            dBC = dBC.to(B.dtype)
            dB, dC = dBC[:, 0], dBC[:, 1]
        else:
            dB, dC = dBC[:, 0].to(B.dtype), dBC[:, 1].to(C.dtype)

        def _param(g: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
            return None if g is None else g.sum((0, 1)).to(dtype)

        return (
            du, ddelta, _param(dA, A_dtype), dB, dC, _param(dD, D.dtype if D is not None else None), dz,
            _param(dbias, None if delta_bias is None else delta_bias.dtype), None,
            None if dh0 is None else dh0.to(ctx.h0_dtype), _param(dhoff, hoff_dtype),
            _param(dyoff, None if y_offset is None else y_offset.dtype), None, None, None,
        )  # fmt: skip


def selective_scan_triton(
    *,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    initial_state: Tensor | None = None,
    h_offset: Tensor | None = None,
    y_offset: Tensor | None = None,
    return_last_state: bool = False,
    dz_into: SplitGrad | None = None,
    settings: ScanSettings = DEFAULT_SETTINGS.scan,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan on the Triton kernels (`interfaces.SelectiveScan`), launched as ``settings`` says.

    Returns y (b d l) in u's dtype (stored (b l d)-major: ``y.transpose(1, 2)`` is contiguous) and, if asked, the
    last state (b d n) fp32.
    """
    if B.dim() != 3 or C.dim() != 3:
        raise NotImplementedError("selective_scan_triton: B and C must be (b n l) (input-dependent, one group)")
    return _SelectiveScan.apply(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, h_offset, y_offset, return_last_state,
        dz_into, settings,
    )  # fmt: skip
