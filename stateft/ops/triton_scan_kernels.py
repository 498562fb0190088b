"""Triton kernels for the Mamba-1 selective scan (forward and backward), with h_0, h' and y' fused in.

One program owns BLOCK_D channels of one sequence and all (padded) BLOCK_N states and walks the sequence in blocks of
BLOCK_T steps. A block is a (t, n, d) register tile laid out with the channels (and half the states) across the lanes
and the BLOCK_T steps inside each thread, so that

- the recurrence h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t over the block is an associative scan along the
  in-thread axis (sequential inside the thread, no lane traffic), the entering state folded into the first step;
- everything else (exp, the read-out sum_n C_t[n] (h_t[n] + h'[n]), the gate) is computed for all BLOCK_T steps at
  once, so one block's loads and arithmetic are independent work for the scheduler, not a chain of single steps;
- the backward's reversed scan runs forward over the block flipped in registers (`_flip`): Triton's own reverse scan
  moves data between lanes even along an in-thread axis.

Backward. The forward stores the state entering every CHUNK steps, (b, chunks, n, d) fp32. The backward walks the
chunks in reverse: it recomputes the states entering each block of the chunk into a small per-program scratch buffer
(it stays in L2), then walks the blocks in reverse, rebuilding h_t inside the block and running the adjoint
recurrence over it:

    g_t  = dL/dy_t * silu(z_t)                          (gradient of the pre-gate output o_t)
    dh_t = exp(delta_{t+1} A) dh_{t+1} + C_t g_t        (dh after the end = gradient of the returned last state, or 0)
    q_t  = dh_t exp(delta_t A) h_{t-1} = dh_t (h_t - delta_t B_t u_t)   -> d delta (through A), dA
    dh_init = exp(delta_0 A) dh_0

Sums over channels (dB_t, dC_t) leave the program as one partial per channel block or are added atomically into a
shared one (`_put_bc`); the caller sums the partials. Per-channel parameter gradients (dA, dh', dD, dy', d bias)
accumulate in registers. All arithmetic is fp32; exp(delta A) is exp2(delta A log2 e).

The Gluon kernels (`gluon_scan_kernels`) run the same algorithms in explicit layouts and call the layout-free helpers
here (loads, stores, the gate and read-out arithmetic, the parameters): one source for what both kernel sets compute.
"""

from __future__ import annotations

import triton
import triton.language as tl

from stateft.ops.triton_math import LN2, LOG2E, sigmoid, softplus


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _raw_td(base, offs_t, offs_d, mask_d, L, s_d, s_l):
    """A (t d) tile of a (b d l) tensor as stored, 0 outside steps [0, L). The loops load each block's tiles one block
    ahead and convert them where they are used: a conversion right after the load would wait for it there."""
    mask = ((offs_t >= 0) & (offs_t < L))[:, None] & mask_d[None, :]
    return tl.load(base + offs_t[:, None] * s_l + offs_d[None, :] * s_d, mask=mask, other=0.0)


@triton.jit
def _raw_tn(base, offs_t, offs_n, mask_n, L, s_n, s_l):
    """A (t n) tile of a (b n l) tensor (B, C) as stored, 0 outside steps [0, L)."""
    mask = ((offs_t >= 0) & (offs_t < L))[:, None] & mask_n[None, :]
    return tl.load(base + offs_t[:, None] * s_l + offs_n[None, :] * s_n, mask=mask, other=0.0)


@triton.jit
def _delta_of(raw, bias, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta (t d) from its stored input: bias, softplus, 0 where masked (so exp(delta A) = 1 and delta B u = 0);
    and the input after the bias."""
    raw = raw.to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    dt = raw
    if SOFTPLUS:
        dt = softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _state_inputs(u_base, dt_base, B_base, t0, L, offs_c, offs_cn, offs_d, offs_n, mask_d, mask_n,
                  su_d, su_l, sdt_d, sdt_l, sB_n, sB_l):  # fmt: skip
    """The stored u, delta and B tiles of the block from t0 (what `_block_states` needs). ``offs_c`` and ``offs_cn``:
    the block's steps 0..BLOCK_T-1 for the (t d) and the (t n) tiles (the same tensor here; the Gluon kernels load the
    two kinds of tile in different layouts)."""
    u = _raw_td(u_base, t0 + offs_c, offs_d, mask_d, L, su_d, su_l)
    dt = _raw_td(dt_base, t0 + offs_c, offs_d, mask_d, L, sdt_d, sdt_l)
    return u, dt, _raw_tn(B_base, t0 + offs_cn, offs_n, mask_n, L, sB_n, sB_l)


# Layout-free pieces, one source for both kernel sets: a plain @triton.jit helper runs inside a Gluon kernel too, its
# tensors taking the layouts of the tensors it is given (gluon_scan_kernels imports these; nothing here creates a tensor
# with a layout of its own).
@triton.jit
def _vector(ptr, offs, mask, FLAG: tl.constexpr):
    """fp32 values at ``ptr + offs`` (0 where masked) if FLAG, else 0.0: not loaded, and used only under FLAG."""
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32) if FLAG else 0.0


@triton.jit
def _params(A_ptr, bias_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_BIAS: tl.constexpr):
    """A as an (n d) tile in exp2 units (A log2 e), and the delta bias."""
    A2 = tl.load(A_ptr + dn_off, mask=mask_nd, other=0.0).to(tl.float32) * LOG2E
    return A2, _vector(bias_ptr, offs_d, mask_d, HAS_BIAS)


@triton.jit
def _out_params(D_ptr, yoff_ptr, hoff_ptr, offs_d, dn_off, mask_d, mask_nd,
                HAS_D: tl.constexpr, HAS_YOFF: tl.constexpr, HAS_HOFF: tl.constexpr):  # fmt: skip
    """The read-out's parameters: D and y' per channel, h' as an (n d) tile."""
    Dv = _vector(D_ptr, offs_d, mask_d, HAS_D)
    return Dv, _vector(yoff_ptr, offs_d, mask_d, HAS_YOFF), _vector(hoff_ptr, dn_off, mask_nd, HAS_HOFF)


@triton.jit
def _bases(pid_b, x_ptr, y_ptr, z_ptr, sx_b, sy_b, sz_b):
    """Where sequence pid_b of three (b, ...) tensors starts, given their batch strides."""
    return x_ptr + pid_b * sx_b, y_ptr + pid_b * sy_b, z_ptr + pid_b * sz_b


@triton.jit
def _slot(ptr, pid_b, slot, s_b, s_s, s_d, s_n, offs_d, offs_n):
    """The (n d) tile of slot ``slot`` of sequence pid_b in a (b, S, d, n)-strided state buffer."""
    return ptr + pid_b * s_b + slot * s_s + offs_d[None, :] * s_d + offs_n[:, None] * s_n


@triton.jit
def _slot_or(ptr, pid_b, slot, s_b, s_s, s_d, s_n, offs_d, offs_n, mask, zero, FLAG: tl.constexpr):
    """The (n d) state in `_slot` ``slot`` of sequence pid_b, fp32 (0 where masked), if FLAG; else ``zero``."""
    return (
        tl.load(_slot(ptr, pid_b, slot, s_b, s_s, s_d, s_n, offs_d, offs_n), mask=mask, other=0.0).to(tl.float32)
        if FLAG
        else zero
    )


@triton.jit
def _chunk_range(pid_s, L, SEG, CHUNK: tl.constexpr):
    """The chunks the backward walks for segment pid_s: (chunks of the sequence, the segment's first, its end)."""
    n_chunks = tl.cdiv(L, CHUNK)
    c_first = pid_s * (SEG // CHUNK)
    return n_chunks, c_first, tl.minimum(c_first + SEG // CHUNK, n_chunks)


@triton.jit
def _delta_at(dt_base, bias, offs_t, offs_d, mask_d, L, sdt_d, sdt_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta (t d) at the steps offs_t, 0 past L (the backward's decay at the step after a segment)."""
    mask = (offs_t < L)[:, None] & mask_d[None, :]
    dt, _raw = _delta_of(_raw_td(dt_base, offs_t, offs_d, mask_d, L, sdt_d, sdt_l), bias, mask, HAS_BIAS, SOFTPLUS)
    return dt


@triton.jit
def _adjoint_inputs(C_base, dy_base, z_base, t0, L, offs_c, offs_cn, offs_d, offs_n, mask_d, mask_n,
                    sC_n, sC_l, sdy_d, sdy_l, sz_d, sz_l, z_else, HAS_Z: tl.constexpr):  # fmt: skip
    """The stored C, dy and z tiles of the block from t0 (z: ``z_else`` without a gate), what the backward reads for a
    block besides `_state_inputs`."""
    C = _raw_tn(C_base, t0 + offs_cn, offs_n, mask_n, L, sC_n, sC_l)
    dy = _raw_td(dy_base, t0 + offs_c, offs_d, mask_d, L, sdy_d, sdy_l)
    return C, dy, _raw_td(z_base, t0 + offs_c, offs_d, mask_d, L, sz_d, sz_l) if HAS_Z else z_else


@triton.jit
def _readout(s, u, Dv, yoff, HAS_D: tl.constexpr, HAS_YOFF: tl.constexpr):
    """The pre-gate output o = C (h + h') + D u + y' from s = C (h + h') (t d)."""
    if HAS_D:
        s += Dv[None, :] * u
    if HAS_YOFF:
        s += yoff[None, :]
    return s


@triton.jit
def _gated(y, z_raw, HAS_Z: tl.constexpr):
    """y * silu(z) (y without a gate), z from its stored tile."""
    if HAS_Z:
        z = z_raw.to(tl.float32)
        y = y * z * sigmoid(z)
    return y


@triton.jit
def _gate_back(dy, o, z, dz_ptr, pid_b, s_b, s_d, s_l, offs_t, offs_d, mask):
    """Through y = o silu(z): dL/dz stored into sequence pid_b of the (b d l)-strided ``dz``; returns g = dL/do."""
    sig = sigmoid(z)
    _store_td(dz_ptr, pid_b, s_b, s_d, s_l, offs_t, offs_d, dy * o * sig * (1.0 + z * (1.0 - sig)), mask)
    return dy * z * sig


@triton.jit
def _store_td(ptr, pid_b, s_b, s_d, s_l, offs_t, offs_d, val, mask):
    """A (t d) tile into sequence pid_b of a (b d l)-strided tensor, cast to its dtype."""
    tl.store(ptr + pid_b * s_b + offs_t[:, None] * s_l + offs_d[None, :] * s_d, val.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _store_param_grads(dhoff_ptr, dD_ptr, dyoff_ptr, dbias_ptr, part, row, E, offs_d, mask_nd, mask_d,
                       dhoff, dD, dyoff, dbias, HAS_HOFF: tl.constexpr, GRAD_D: tl.constexpr, HAS_YOFF: tl.constexpr,
                       GRAD_BIAS: tl.constexpr):  # fmt: skip
    """The backward's per-channel parameter gradients but dA into partial ``part`` (one per sequence and segment):
    dh' (b, S, d, n) at the (n d) offsets ``row``; dD, dy' and d bias (b, S, d); each only when asked for."""
    if HAS_HOFF:
        tl.store(dhoff_ptr + row, dhoff, mask=mask_nd)
    if GRAD_D:
        tl.store(dD_ptr + part * E + offs_d, dD, mask=mask_d)
    if HAS_YOFF:
        tl.store(dyoff_ptr + part * E + offs_d, dyoff, mask=mask_d)
    if GRAD_BIAS:
        tl.store(dbias_ptr + part * E + offs_d, dbias, mask=mask_d)


@triton.jit
def _block_states(u_raw, dt_raw, B_raw, A2, bias, h_in, t0, L, offs_c, mask_d, mask_n,
                  HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):  # fmt: skip
    """h_t for the BLOCK_T steps from t0, (t n d), from the block's stored u, delta, B tiles (`_state_inputs`); and
    what the backward reuses: exp(delta A), delta, u, B, delta B u, raw delta, the (t d) and (t n) masks."""
    offs_t = t0 + offs_c
    mask_t = offs_t < L
    mask_td = mask_t[:, None] & mask_d[None, :]
    mask_tn = mask_t[:, None] & mask_n[None, :]
    u = u_raw.to(tl.float32)
    dt, raw = _delta_of(dt_raw, bias, mask_td, HAS_BIAS, SOFTPLUS)
    Bt = B_raw.to(tl.float32)
    dA = tl.exp2(dt[:, None, :] * A2[None, :, :])  # (t n d) exp(delta A)
    dBu = Bt[:, :, None] * (dt * u)[:, None, :]  # (t n d) delta B u
    # the entering state folded into the first step's input: the scan's cumulative decay is unused (and not computed)
    first = (offs_c == 0)[:, None, None]
    _aa, hs = tl.associative_scan((dA, tl.where(first, dBu + dA * h_in[None, :, :], dBu)), 0, _combine)
    return hs, dA, dt, u, Bt, dBu, raw, mask_td, mask_tn


@triton.jit
def _row(x, LAST: tl.constexpr):
    """The first or last row of x (t, X, Y) along its in-thread step axis, as a masked sum over the axis: exact, and
    independent of the order the reduction visits the rows in (a reduction whose combine keeps one side is not: on an
    H100 it returned another row at BLOCK_T 8). Padded steps past L have exp(delta A) = 1 and no input, so the last
    row of a block's states is the state after the block."""
    T: tl.constexpr = x.shape[0]
    pick = tl.arange(0, T) == (T - 1 if LAST else 0)
    return tl.sum(tl.where(pick[:, None, None], x, 0.0), axis=0)


@triton.jit
def _state_after(u_raw, dt_raw, B_raw, A2, bias, h_in, dsum, t0, L, offs_c, mask_d, mask_n, LAYOUT: tl.constexpr,
                 HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):  # fmt: skip
    """What the walks over blocks (`_walk_segment`, `_walk_chunk`) need of the block from t0: the state after it (n d)
    and ``dsum`` plus its delta summed over the steps. LAYOUT: unused (the Gluon version's block layout)."""
    hs, dA, dt, u, Bt, dBu, raw, mask_td, mask_tn = _block_states(
        u_raw, dt_raw, B_raw, A2, bias, h_in, t0, L, offs_c, mask_d, mask_n, HAS_BIAS, SOFTPLUS
    )
    dsum += tl.sum(dt, axis=0)
    return _row(hs, True), dsum


@triton.jit
def _walk_segment(h, dsum, u_n, dt_n, B_n, s0, s1, u_base, dt_base, B_base, L, offs_c, offs_cn, offs_d, offs_n,
                  mask_d, mask_n, su_d, su_l, sdt_d, sdt_l, sB_n, sB_l, A2, bias, state_after: tl.constexpr,
                  LAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  BLOCK_T: tl.constexpr):  # fmt: skip
    """The state after steps [s0, s1) from h, and ``dsum`` plus their delta (the forward's LOCAL pass). (u_n, dt_n,
    B_n): the first block's tiles (`_state_inputs`); each block's tiles are loaded during the block before.
    ``state_after``: the kernel set's `_state_after`."""
    for t0 in range(s0, s1, BLOCK_T):
        u_r, dt_r, B_r = u_n, dt_n, B_n
        u_n, dt_n, B_n = _state_inputs(
            u_base, dt_base, B_base, t0 + BLOCK_T, L, offs_c, offs_cn, offs_d, offs_n, mask_d, mask_n,
            su_d, su_l, sdt_d, sdt_l, sB_n, sB_l,
        )  # fmt: skip
        h, dsum = state_after(u_r, dt_r, B_r, A2, bias, h, dsum, t0, L, offs_c, mask_d, mask_n, LAYOUT, HAS_BIAS,
                              SOFTPLUS)  # fmt: skip
    return h, dsum


@triton.jit
def _walk_chunk(h, scratch, sc_off, c0, n_blocks, u_base, dt_base, B_base, L, offs_c, offs_cn, offs_d, offs_n,
                mask_d, mask_n, su_d, su_l, sdt_d, sdt_l, sB_n, sB_l, A2, bias, state_after: tl.constexpr,
                LAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_T: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """The backward's first pass over the chunk from step c0, from h entering it: the state entering each of its
    n_blocks blocks into the program's scratch (block k at k x BLOCK_N x BLOCK_D), each block's tiles loaded during
    the block before. ``state_after``: the kernel set's `_state_after`."""
    u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, c0, L, offs_c, offs_cn, offs_d, offs_n, mask_d, mask_n,
                                   su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
    for k in range(0, n_blocks - 1):
        tl.store(scratch + k * BLOCK_N * BLOCK_D + sc_off, h)
        u_r, dt_r, B_r = u_n, dt_n, B_n
        u_n, dt_n, B_n = _state_inputs(
            u_base, dt_base, B_base, c0 + (k + 1) * BLOCK_T, L, offs_c, offs_cn, offs_d, offs_n, mask_d, mask_n,
            su_d, su_l, sdt_d, sdt_l, sB_n, sB_l,
        )  # fmt: skip
        h, _dsum = state_after(u_r, dt_r, B_r, A2, bias, h, 0.0, c0 + k * BLOCK_T, L, offs_c, mask_d, mask_n, LAYOUT,
                               HAS_BIAS, SOFTPLUS)  # fmt: skip
    tl.store(scratch + (n_blocks - 1) * BLOCK_N * BLOCK_D + sc_off, h)


# Reversing the in-thread step axis by renaming registers: split/join/reshape/permute of an axis that lives inside each
# thread move no data. Triton's own reverse=True scan and tl.flip move data between lanes even then, more lane shuffles
# than the block has arithmetic (benchmarks/sass_report.py counts them; benchmarks/NOTES.md, section 6).
@triton.jit
def _flip2(x):
    a, b = tl.split(x)
    return tl.join(b, a)


@triton.jit
def _flip4(x):
    # (x0..x3) -> (x3..x0): the odd elements, flipped, land in the even slots, the even ones, flipped, in the odd
    X: tl.constexpr = x.shape[0]
    Y: tl.constexpr = x.shape[1]
    ev, odd = tl.split(tl.reshape(x, (X, Y, 2, 2)))
    return tl.reshape(tl.join(_flip2(odd), _flip2(ev)), (X, Y, 4))


@triton.jit
def _flip8(x):
    X: tl.constexpr = x.shape[0]
    Y: tl.constexpr = x.shape[1]
    ev, odd = tl.split(tl.reshape(x, (X, Y, 4, 2)))
    return tl.reshape(tl.join(_flip4(odd), _flip4(ev)), (X, Y, 8))


@triton.jit
def _flip(x):
    """x (t, X, Y) reversed along its step axis 0 (in-thread); t in 1, 2, 4, 8."""
    T: tl.constexpr = x.shape[0]
    if T == 1:
        return x
    else:
        xt = tl.permute(x, (1, 2, 0))
        if T == 2:
            y = _flip2(xt)
        elif T == 4:
            y = _flip4(xt)
        else:
            tl.static_assert(T == 8, "scan kernels: BLOCK_T must be 1, 2, 4 or 8")
            y = _flip8(xt)
        return tl.permute(y, (2, 0, 1))


@triton.jit
def _adjoint_block(e, Cg, dh):
    """The adjoint over one block, reversed: dh_t = e_t dh_{t+1} + Cg_t with e_t = exp(delta_{t+1} A) (1 past L) and
    ``dh`` = dL/dh after the block. Returns dh_t (t n d) and dh at the block's first step."""
    # dh after the block folded into the last step's input; the reversed scan runs on the flipped block
    T: tl.constexpr = e.shape[0]
    last = (tl.arange(0, T) == T - 1)[:, None, None]
    _pp, rr = tl.associative_scan((_flip(e), _flip(tl.where(last, Cg + e * dh[None, :, :], Cg))), 0, _combine)
    dhs = _flip(rr)
    return dhs, _row(dhs, False)


@triton.jit
def _next_decay(dtn_raw, bias, A2, offs_t, mask_d, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """exp(delta_{t+1} A) (t n d) from the stored delta tile one step ahead (delta past L counts as 0), and
    delta_{t+1}."""
    mask_next = (offs_t + 1 < L)[:, None] & mask_d[None, :]
    dt_next, _ = _delta_of(dtn_raw, bias, mask_next, HAS_BIAS, SOFTPLUS)
    return tl.exp2(dt_next[:, None, :] * A2[None, :, :]), dt_next


# The adjoint's decay exp(delta_{t+1} A) is the forward's exp(delta_t A) one step later: the block's own rows shifted
# up by one (register renaming, as in `_flip`), the last row carried over from the block after (walked just before).
@triton.jit
def _shift2(x, c):
    r0, r1 = tl.split(x)
    return tl.join(r1, c), r0


@triton.jit
def _shift4(x, c):
    # (r0..r3), c -> (r1, r2, r3, c), r0: the new even rows are the odd ones, the new odd rows the even ones shifted
    X: tl.constexpr = x.shape[0]
    Y: tl.constexpr = x.shape[1]
    ev, odd = tl.split(tl.reshape(x, (X, Y, 2, 2)))
    new_odd, r0 = _shift2(ev, c)
    return tl.reshape(tl.join(odd, new_odd), (X, Y, 4)), r0


@triton.jit
def _shift8(x, c):
    X: tl.constexpr = x.shape[0]
    Y: tl.constexpr = x.shape[1]
    ev, odd = tl.split(tl.reshape(x, (X, Y, 4, 2)))
    new_odd, r0 = _shift4(ev, c)
    return tl.reshape(tl.join(odd, new_odd), (X, Y, 8)), r0


@triton.jit
def _shift(x, c):
    """x (t, X, Y) moved up one row along its step axis with c (X, Y) as the new last row; and x's first row."""
    T: tl.constexpr = x.shape[0]
    X: tl.constexpr = x.shape[1]
    Y: tl.constexpr = x.shape[2]
    if T == 1:
        return tl.reshape(c, (1, X, Y)), tl.reshape(x, (X, Y))
    else:
        xt = tl.permute(x, (1, 2, 0))
        if T == 2:
            y, r0 = _shift2(xt, c)
        elif T == 4:
            y, r0 = _shift4(xt, c)
        else:
            tl.static_assert(T == 8, "scan kernels: BLOCK_T must be 1, 2, 4 or 8")
            y, r0 = _shift8(xt, c)
        return tl.permute(y, (2, 0, 1)), r0


@triton.jit
def _tiles(pid_d, E, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
    """A program's channel, state and step offsets, their masks and the (n d) tiles' offsets into (d, n)- and
    (n, d)-major buffers (A^T, h'^T and the stored states are (n d))."""
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_T)
    mask_d = offs_d < E
    mask_n = offs_n < N
    mask_nd = mask_n[:, None] & mask_d[None, :]
    nd_off = offs_d[None, :] * N + offs_n[:, None]
    dn_off = offs_n[:, None] * E + offs_d[None, :]
    return offs_d, offs_n, offs_c, mask_d, mask_n, mask_nd, nd_off, dn_off


@triton.jit
def scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hin_ptr, hoff_ptr, yoff_ptr,
    y_ptr, last_ptr, states_ptr, dsum_ptr,
    E, N, L,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
    shi_b, shi_s, shi_d, shi_n, sy_b, sy_d, sy_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_HIN: tl.constexpr, HAS_HOFF: tl.constexpr, HAS_YOFF: tl.constexpr,
    STORE_LAST: tl.constexpr, STORE_STATES: tl.constexpr, LOCAL: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, CHUNK: tl.constexpr, SEG,
):  # fmt: skip
    """One program: BLOCK_D channels of one sequence over one segment of SEG steps.

    LOCAL: the segment's end state from a zero start, into slot s + 1 of the segment buffer ``hin`` (b, S + 1, n, d),
    and the segment's sum of delta into ``dsum`` (b, S, d); `seg_carry_kernel` then turns the slots into the states
    entering each segment. Otherwise: start from slot s of ``hin`` (strided: h_0 itself when there is one segment),
    write y, the state entering every CHUNK steps (for the backward) and, in the last segment, the last state.
    """
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d, offs_n, offs_c, mask_d, mask_n, mask_nd, nd_off, dn_off = _tiles(pid_d, E, N, BLOCK_D, BLOCK_N, BLOCK_T)

    A2, bias = _params(A_ptr, bias_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_BIAS)
    u_base, dt_base, B_base = _bases(pid_b, u_ptr, dt_ptr, B_ptr, su_b, sdt_b, sB_b)
    s0 = pid_s * SEG
    s1 = tl.minimum(s0 + SEG, L)
    if LOCAL:
        u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, s0, L, offs_c, offs_c, offs_d, offs_n, mask_d, mask_n,
                                       su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
        h, dsum = _walk_segment(
            tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32), tl.zeros((BLOCK_D,), dtype=tl.float32), u_n, dt_n, B_n,
            s0, s1, u_base, dt_base, B_base, L, offs_c, offs_c, offs_d, offs_n, mask_d, mask_n, su_d, su_l, sdt_d,
            sdt_l, sB_n, sB_l, A2, bias, _state_after, None, HAS_BIAS, SOFTPLUS, BLOCK_T,
        )  # fmt: skip
        tl.store(_slot(hin_ptr, pid_b, pid_s + 1, shi_b, shi_s, shi_d, shi_n, offs_d, offs_n), h, mask=mask_nd)
        tl.store(dsum_ptr + (pid_b * tl.cdiv(L, SEG) + pid_s) * E + offs_d, dsum, mask=mask_d)
    else:
        Dv, yoff, hoff = _out_params(D_ptr, yoff_ptr, hoff_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_D, HAS_YOFF,
                                     HAS_HOFF)  # fmt: skip
        h = _slot_or(hin_ptr, pid_b, pid_s, shi_b, shi_s, shi_d, shi_n, offs_d, offs_n, mask_nd,
                     tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32), HAS_HIN)  # fmt: skip
        C_base = C_ptr + pid_b * sC_b
        z_base = z_ptr + pid_b * sz_b
        n_chunks = tl.cdiv(L, CHUNK)
        # each block's tiles are loaded during the block before (registers carried over the loop)
        u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, s0, L, offs_c, offs_c, offs_d, offs_n, mask_d, mask_n,
                                       su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
        C_n = _raw_tn(C_base, s0 + offs_c, offs_n, mask_n, L, sC_n, sC_l)
        z_n = _raw_td(z_base, s0 + offs_c, offs_d, mask_d, L, sz_d, sz_l) if HAS_Z else u_n
        for t0 in range(s0, s1, BLOCK_T):
            u_r, dt_r, B_r, C_r, z_r = u_n, dt_n, B_n, C_n, z_n
            u_n, dt_n, B_n = _state_inputs(
                u_base, dt_base, B_base, t0 + BLOCK_T, L, offs_c, offs_c, offs_d, offs_n, mask_d, mask_n,
                su_d, su_l, sdt_d, sdt_l, sB_n, sB_l,
            )  # fmt: skip
            C_n = _raw_tn(C_base, t0 + BLOCK_T + offs_c, offs_n, mask_n, L, sC_n, sC_l)
            if HAS_Z:
                z_n = _raw_td(z_base, t0 + BLOCK_T + offs_c, offs_d, mask_d, L, sz_d, sz_l)
            if STORE_STATES:
                if t0 % CHUNK == 0:  # state entering the chunk, for the backward
                    tl.store(states_ptr + (pid_b * n_chunks + t0 // CHUNK) * E * N + dn_off, h, mask=mask_nd)
            hs, dA, dt, u, Bt, dBu, raw, mask_td, mask_tn = _block_states(
                u_r, dt_r, B_r, A2, bias, h, t0, L, offs_c, mask_d, mask_n, HAS_BIAS, SOFTPLUS
            )
            offs_t = t0 + offs_c
            Ct = C_r.to(tl.float32)
            hr = hs + hoff[None, :, :] if HAS_HOFF else hs
            y = _readout(tl.sum(hr * Ct[:, :, None], axis=1), u, Dv, yoff, HAS_D, HAS_YOFF)  # (t d)
            _store_td(y_ptr, pid_b, sy_b, sy_d, sy_l, offs_t, offs_d, _gated(y, z_r, HAS_Z), mask_td)
            h = _row(hs, True)
        if STORE_LAST:
            if pid_s == tl.num_programs(1) - 1:
                tl.store(last_ptr + pid_b * E * N + nd_off, h, mask=mask_nd)


@triton.jit
def seg_carry_kernel(
    buf_ptr, dsum_ptr, A_ptr, init_ptr, E, N, n_seg, si_b, si_d, si_n,
    HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Segment boundaries, sequentially over the S segments of one sequence; ``buf`` (b, S + 1, n, d) fp32.

    Forward: slot 0 = h_0 (``init``, strided (b d n), or 0); slot k + 1 holds segment k's end state from a zero start
    and becomes the state entering segment k + 1: slot_{k+1} = exp(A dsum_k) slot_k + slot_{k+1}.
    REVERSE (the adjoint): slot S = the gradient of the last state (or 0); slot k holds dL/dh at segment k's first
    step with nothing arriving from the right, and becomes the full one: slot_k += exp(A dsum_k) slot_{k+1}, where
    dsum_k sums delta_{t+1} over the segment's steps t (the adjoint's decay).
    """
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < E
    mask_nd = (offs_n < N)[:, None] & mask_d[None, :]
    dn_off = offs_n[:, None] * E + offs_d[None, :]
    A2 = tl.load(A_ptr + dn_off, mask=mask_nd, other=0.0).to(tl.float32) * LOG2E
    if HAS_INIT:
        init = init_ptr + pid_b * si_b + offs_d[None, :] * si_d + offs_n[:, None] * si_n
        s = tl.load(init, mask=mask_nd, other=0.0).to(tl.float32)
    else:
        s = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    base = buf_ptr + pid_b * (n_seg + 1) * N * E
    first = n_seg if REVERSE else 0
    tl.store(base + first * N * E + dn_off, s, mask=mask_nd)
    for i in range(1, n_seg):
        k = n_seg - i if REVERSE else i
        j = k if REVERSE else k - 1  # the segment whose decay carries s into slot k
        ds = tl.load(dsum_ptr + (pid_b * n_seg + j) * E + offs_d, mask=mask_d, other=0.0)
        s = tl.exp2(ds[None, :] * A2) * s + tl.load(base + k * N * E + dn_off, mask=mask_nd, other=0.0)
        tl.store(base + k * N * E + dn_off, s, mask=mask_nd)


@triton.jit
def scan_bwd_local_kernel(
    dt_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dy_ptr, adj_ptr, dsum_ptr,
    E, N, L,
    sdt_b, sdt_d, sdt_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l, sdy_b, sdy_d, sdy_l,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, SEG,
):  # fmt: skip
    """The adjoint alone over segment s + 1 (program axis 1 = s), from zero at its end: dL/dh at its first step into
    slot s + 1 of ``adj`` (b, S + 1, n, d), and the sum of delta_{t+1} over its steps into ``dsum`` (b, S, d)."""
    pid_d = tl.program_id(0)
    seg = tl.program_id(1) + 1
    pid_b = tl.program_id(2).to(tl.int64)
    n_seg = tl.cdiv(L, SEG)
    offs_d, offs_n, offs_c, mask_d, mask_n, mask_nd, _nd_off, dn_off = _tiles(pid_d, E, N, BLOCK_D, BLOCK_N, BLOCK_T)
    A2, bias = _params(A_ptr, bias_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_BIAS)
    dt_base = dt_ptr + pid_b * sdt_b
    C_base = C_ptr + pid_b * sC_b
    dh = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dsum = tl.zeros((BLOCK_D,), dtype=tl.float32)
    s0 = seg * SEG
    n_blocks = tl.cdiv(tl.minimum(SEG, L - s0), BLOCK_T)
    for j in range(0, n_blocks):
        offs_t = s0 + (n_blocks - 1 - j) * BLOCK_T + offs_c
        Ct = _raw_tn(C_base, offs_t, offs_n, mask_n, L, sC_n, sC_l)
        g = _raw_td(dy_ptr + pid_b * sdy_b, offs_t, offs_d, mask_d, L, sdy_d, sdy_l).to(tl.float32)
        if HAS_Z:
            z = _raw_td(z_ptr + pid_b * sz_b, offs_t, offs_d, mask_d, L, sz_d, sz_l).to(tl.float32)
            g = g * z * sigmoid(z)
        Cg = Ct.to(tl.float32)[:, :, None] * g[:, None, :]
        dtn = _raw_td(dt_base, offs_t + 1, offs_d, mask_d, L, sdt_d, sdt_l)
        e, dt_next = _next_decay(dtn, bias, A2, offs_t, mask_d, L, HAS_BIAS, SOFTPLUS)
        _, dh = _adjoint_block(e, Cg, dh)
        dsum += tl.sum(dt_next, axis=0)
    tl.store(adj_ptr + (pid_b * (n_seg + 1) + seg) * N * E + dn_off, dh, mask=mask_nd)
    tl.store(dsum_ptr + (pid_b * n_seg + seg) * E + offs_d, dsum, mask=mask_d)


@triton.jit
def _bc_slot(pid_d, BC_SLOTS: tl.constexpr):
    """Which dB/dC partial channel block pid_d writes: its own (BC_SLOTS 0) or one of BC_SLOTS shared ones."""
    if BC_SLOTS:
        return pid_d % BC_SLOTS
    return pid_d


@triton.jit
def _put_bc(ptrs, val, mask, BC_SLOTS: tl.constexpr):
    """A dB/dC partial out: stored (its own slot), or added to a shared slot (relaxed: no ordering needed, the
    sum over the slots is read after the kernel)."""
    if BC_SLOTS:
        tl.atomic_add(ptrs, val, mask=mask, sem="relaxed")
    else:
        tl.store(ptrs, val, mask=mask)


@triton.jit
def scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hoff_ptr, yoff_ptr, states_ptr, scratch_ptr,
    dy_ptr, dhin_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dhoff_ptr, dyoff_ptr,
    E, N, L,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
    sdy_b, sdy_d, sdy_l, sdu_b, sdu_d, sdu_l, sg_b, sg_d, sg_l, sdz_b, sdz_d, sdz_l, sdB_b, sdB_p, sdB_n,
    sdh_b, sdh_s, sdh_d, sdh_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_HOFF: tl.constexpr, HAS_YOFF: tl.constexpr, HAS_DHIN: tl.constexpr,
    GRAD_A: tl.constexpr, GRAD_D: tl.constexpr, GRAD_BIAS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, CHUNK: tl.constexpr, SEG,
    BC_SLOTS: tl.constexpr,
):  # fmt: skip
    """One program: BLOCK_D channels of one sequence over one segment (program axis 1). dL/dh arriving after the
    segment's last step comes from slot s + 1 of ``dhin`` (strided: the last state's gradient with one segment).
    Per-channel parameter gradients leave as one partial per (sequence, segment); those of A, D and the delta bias only
    when asked for (GRAD_*: they are frozen in most methods). dB and dC: one partial per channel block stored
    (BC_SLOTS 0), or added atomically into partial pid_d % BC_SLOTS of a zeroed buffer."""
    pid_d = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    n_seg = tl.num_programs(1)
    offs_d, offs_n, offs_c, mask_d, mask_n, mask_nd, nd_off, dn_off = _tiles(pid_d, E, N, BLOCK_D, BLOCK_N, BLOCK_T)
    # this program's scratch: the states entering each block of one chunk, (CHUNK / BLOCK_T) x (n, BLOCK_D) fp32
    prog = (pid_b * n_seg + pid_s) * tl.num_programs(0) + pid_d
    scratch = scratch_ptr + prog * (CHUNK // BLOCK_T) * BLOCK_N * BLOCK_D
    sc_off = offs_n[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]

    A2, bias = _params(A_ptr, bias_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_BIAS)  # A = A2 ln 2
    Dv, yoff, hoff = _out_params(D_ptr, yoff_ptr, hoff_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_D, HAS_YOFF, HAS_HOFF)
    # dL/dh after the segment (the last segment: the gradient of the returned last state)
    dh = _slot_or(dhin_ptr, pid_b, pid_s + 1, sdh_b, sdh_s, sdh_d, sdh_n, offs_d, offs_n, mask_nd,
                  tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32), HAS_DHIN)  # fmt: skip
    dA_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dhoff_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dyoff_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    u_base, dt_base, B_base = _bases(pid_b, u_ptr, dt_ptr, B_ptr, su_b, sdt_b, sB_b)
    C_base, dy_base, z_base = _bases(pid_b, C_ptr, dy_ptr, z_ptr, sC_b, sdy_b, sz_b)
    n_chunks, c_first, c_end = _chunk_range(pid_s, L, SEG, CHUNK)
    # the adjoint's decay at the segment's last step: exp(delta A) at the step after it (1 past L), as `_shift` keeps it
    dt_end = _delta_at(dt_base, bias, c_end * CHUNK + offs_c, offs_d, mask_d, L, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
    zero_nd = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    _dA_end, e_carry = _shift(tl.exp2(dt_end[:, None, :] * A2[None, :, :]), zero_nd)
    for i in range(0, c_end - c_first):
        c = c_end - 1 - i
        c0 = c * CHUNK
        n_blocks = tl.cdiv(tl.minimum(CHUNK, L - c0), BLOCK_T)
        # 1. the states entering each block of the chunk, into the scratch buffer
        h = tl.load(states_ptr + (pid_b * n_chunks + c) * E * N + dn_off, mask=mask_nd, other=0.0)
        _walk_chunk(h, scratch, sc_off, c0, n_blocks, u_base, dt_base, B_base, L, offs_c, offs_c, offs_d, offs_n,
                    mask_d, mask_n, su_d, su_l, sdt_d, sdt_l, sB_n, sB_l, A2, bias, _state_after, None, HAS_BIAS,
                    SOFTPLUS, BLOCK_T, BLOCK_N, BLOCK_D)  # fmt: skip
        tl.debug_barrier()  # scratch written above is read below (possibly by other lanes)

        # 2. the blocks in reverse, each block's tiles loaded during the block after it
        t_last = c0 + (n_blocks - 1) * BLOCK_T
        u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, t_last, L, offs_c, offs_c, offs_d, offs_n, mask_d,
                                       mask_n, su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
        C_n, dy_n, z_n = _adjoint_inputs(C_base, dy_base, z_base, t_last, L, offs_c, offs_c, offs_d, offs_n, mask_d,
                                         mask_n, sC_n, sC_l, sdy_d, sdy_l, sz_d, sz_l, u_n, HAS_Z)  # fmt: skip
        for j in range(0, n_blocks):
            t0 = c0 + (n_blocks - 1 - j) * BLOCK_T
            u_r, dt_r, B_r, C_r, dy_r, z_r = u_n, dt_n, B_n, C_n, dy_n, z_n
            tp = t0 - BLOCK_T  # the block before (in the previous chunk after the last j: loaded, not used)
            u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, tp, L, offs_c, offs_c, offs_d, offs_n, mask_d,
                                           mask_n, su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
            C_n, dy_n, z_n = _adjoint_inputs(C_base, dy_base, z_base, tp, L, offs_c, offs_c, offs_d, offs_n, mask_d,
                                             mask_n, sC_n, sC_l, sdy_d, sdy_l, sz_d, sz_l, z_n, HAS_Z)  # fmt: skip
            h_in = tl.load(scratch + (n_blocks - 1 - j) * BLOCK_N * BLOCK_D + sc_off)
            hs, dA, dt, u, Bt, dBu, raw, mask_td, mask_tn = _block_states(
                u_r, dt_r, B_r, A2, bias, h_in, t0, L, offs_c, mask_d, mask_n, HAS_BIAS, SOFTPLUS
            )
            offs_t = t0 + offs_c
            Ct = C_r.to(tl.float32)
            dy = dy_r.to(tl.float32)
            hr = hs + hoff[None, :, :] if HAS_HOFF else hs
            g_ptrs = pid_b * sg_b + offs_t[:, None] * sg_l + offs_d[None, :] * sg_d
            if HAS_Z:  # y = o * silu(z), o = C (h + h') + D u + y'
                z = z_r.to(tl.float32)
                o = _readout(tl.sum(hr * Ct[:, :, None], axis=1), u, Dv, yoff, HAS_D, HAS_YOFF)
                g = _gate_back(dy, o, z, dz_ptr, pid_b, sdz_b, sdz_d, sdz_l, offs_t, offs_d, mask_td)
            else:
                g = dy
            # (g is 0 outside [0, L) and past E already: dy is loaded as 0 there, z too)
            # read-out: dC_t = sum_d g (h_t + h'), dh' += sum_t C_t g, dD += g u, dy' += g
            bc_ptrs = pid_b * sdB_b + _bc_slot(pid_d, BC_SLOTS) * sdB_p + offs_n[None, :] * sdB_n + offs_t[:, None]
            _put_bc(dC_ptr + bc_ptrs, tl.sum(hr * g[:, None, :], axis=2), mask_tn, BC_SLOTS)
            Cg = Ct[:, :, None] * g[:, None, :]  # (t n d) dL/dh_t from the read-out
            if HAS_HOFF:
                dhoff_acc += tl.sum(Cg, axis=0)
            if GRAD_D:
                dD_acc += tl.sum(g * u, axis=0)
            if HAS_YOFF:
                dyoff_acc += tl.sum(g, axis=0)
            # adjoint recurrence, reversed; dh enters as dh after the block
            e, e_carry = _shift(dA, e_carry)
            dhs, dh = _adjoint_block(e, Cg, dh)
            # through h_t = exp(delta A) h_{t-1} + delta B u
            q = dhs * (hs - dBu)  # dL/d(exp(delta A)) * exp(delta A)
            dhB = tl.sum(dhs * Bt[:, :, None], axis=1)  # (t d)
            if GRAD_A:
                dA_acc += tl.sum(q * dt[:, None, :], axis=0)
            ddt = u * dhB + tl.sum(q * A2[None, :, :], axis=1) * LN2
            du = dt * dhB
            if HAS_D:
                du += g * Dv[None, :]
            _put_bc(dB_ptr + bc_ptrs, tl.sum(dhs * (dt * u)[:, None, :], axis=2), mask_tn, BC_SLOTS)
            if SOFTPLUS:
                ddt = ddt * sigmoid(raw)
            if GRAD_BIAS:  # (the stores are masked: only the sum needs ddt 0 outside [0, L))
                dbias_acc += tl.sum(tl.where(mask_td, ddt, 0.0), axis=0)
            _store_td(du_ptr, pid_b, sdu_b, sdu_d, sdu_l, offs_t, offs_d, du, mask_td)
            tl.store(ddt_ptr + g_ptrs, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_td)
        tl.debug_barrier()  # the next chunk overwrites the scratch

    part = pid_b * n_seg + pid_s  # partials per (sequence, segment), (b, S, d, n) and (b, S, d)
    row = part * E * N + nd_off
    if GRAD_A:
        tl.store(dA_ptr + row, dA_acc, mask=mask_nd)
    if HAS_H0:  # h_0 = exp(delta_0 A) h_init + ...: dh_init = exp(delta_0 A) dh_0
        if pid_s == 0:
            offs_0 = tl.zeros((1,), dtype=tl.int32)
            dt0_raw = _raw_td(dt_base, offs_0, offs_d, mask_d, L, sdt_d, sdt_l)
            dt0, _ = _delta_of(dt0_raw, bias, mask_d[None, :], HAS_BIAS, SOFTPLUS)
            tl.store(dh0_ptr + pid_b * E * N + nd_off, dh * tl.exp2(dt0 * A2), mask=mask_nd)
    _store_param_grads(dhoff_ptr, dD_ptr, dyoff_ptr, dbias_ptr, part, row, E, offs_d, mask_nd, mask_d, dhoff_acc,
                       dD_acc, dyoff_acc, dbias_acc, HAS_HOFF, GRAD_D, HAS_YOFF, GRAD_BIAS)  # fmt: skip
