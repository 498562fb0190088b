"""The selective scan's main kernels in Gluon, Triton's explicit-layout dialect: the same algorithms and arguments as
`triton_scan_kernels.scan_fwd_kernel` and `scan_bwd_kernel` (read those first), with every register layout chosen
here instead of by the compiler.

Why two kernel sets: in plain Triton the flips around the backward's reversed scan put everything that flows into it
in a second register layout, where the compiler recomputes the (t d) work (softplus, sigmoid, exp(delta A), the bf16
conversions) instead of renaming registers, and the sums over the channels for dB and dC are butterflies across the
lanes. Here

- one (t n d) block layout (`block_layout`): the BLOCK_T steps inside each thread, states and channels across the
  lanes. The recurrences over a block's 8 in-thread steps are written out row by row on split/join renamings
  (`_rows`, `_stack`), converted back with ``assert_trivial`` (the compiler must prove they move no data);
- (t d) and (t n) tiles are loaded, computed on (softplus, sigmoid, gating) and stored in compact layouts, every value
  once per warp (`compact_td`, `compact_tn`), and moved to the block layout's slices where the block needs them (the
  block layout holds a (t d) value on 4 lanes and a (t n) value on 8);
- dB and dC: the (t n d) products moved to a layout with the channels inside each thread (one exchange through shared
  memory) and summed there (`_channel_sum`);
- the sums over the states: a thread's own states summed in registers, then the 4 lanes' partials of each (t d) value
  gathered into one thread by the exchange that moves the result to the compact layout anyway (`_state_sum`).
What the compiler makes of both sets: `benchmarks/sass_report.py`; what each costs on an H100: benchmarks/NOTES.md.

What does not depend on a layout comes from `triton_scan_kernels` (plain ``@triton.jit`` helpers run inside Gluon
kernels too): the tile loads, the walks over blocks (`_walk_segment`, `_walk_chunk`, with `_state_after_g` for the
block), the parameters, the read-out and gate, the stores. The kernels' signatures are the same as the Triton ones:
`scan_triton` launches either with the same arguments.

Gluon has no interpreter: these kernels run on NVIDIA GPUs only. The Triton kernels stay the CPU-tested reference and
the fallback (`settings.ScanSettings.kernels`, `scan_triton._pick`); tests/ops/test_scan_gluon.py compares them with the
reference and the Triton kernels on the GPU, and tests/ops/test_sass_report.py compiles them for sm_90 on the CPU.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from stateft.ops.triton_math import LN2, sigmoid, softplus
from stateft.ops.triton_scan_kernels import (
    _adjoint_inputs,
    _bases,
    _bc_slot,
    _chunk_range,
    _delta_at,
    _delta_of,
    _gate_back,
    _gated,
    _out_params,
    _params,
    _put_bc,
    _raw_td,
    _raw_tn,
    _readout,
    _slot,
    _slot_or,
    _state_inputs,
    _store_param_grads,
    _store_td,
    _walk_chunk,
    _walk_segment,
)


@gluon.constexpr_function
def block_layout(BLOCK_T, W):
    """The (t n d) block: the steps in-thread, 4 lanes of states x 8 lanes of channels, the rest of the states in
    registers; W warps side by side along the channels."""
    return gl.BlockedLayout([BLOCK_T, 1, 1], [1, 4, 8], [1, 1, W], [0, 2, 1])


@gluon.constexpr_function
def compact_td(BLOCK_T, W):
    """(t d) tiles with every value once per warp, consecutive steps in a thread: loads, the (t d) elementwise work
    (softplus, sigmoid, gating) and stores, moved to the block layout's slice where the block needs them."""
    return gl.BlockedLayout([BLOCK_T // 4, 1], [4, 8], [1, W], [0, 1])


@gluon.constexpr_function
def compact_tn(BLOCK_T, W):
    """(t n) tiles (B, C) with every value once per warp (for 16 states), consecutive steps in a thread; every warp
    holds the whole tile (all of a block's channels use it)."""
    return gl.BlockedLayout([BLOCK_T // 2, 1], [2, 16], [1, W], [0, 1])


@gluon.constexpr_function
def state_sum_layout(BLOCK_T, W):
    """(t, 4, d) for the sums over the states: a (t d) value's 4 lane partials inside one thread, the steps across
    those 4 lanes (2 each); its slice along axis 1 is `compact_td`."""
    return gl.BlockedLayout([BLOCK_T // 4, 4, 1], [4, 1, 8], [1, 1, W], [0, 2, 1])


@gluon.jit
def _like(x, ref):
    """x in ref's layout; the conversion must be a renaming of registers (checked at compile time)."""
    return gl.convert_layout(x, ref.type.layout, assert_trivial=True)


# A block's 8 steps live in each thread's registers: split along that axis, a (8, X, Y) block is 8 (X, Y) rows at no
# cost (register renaming), and the recurrences over the steps are written out row by row, in either direction (no
# scan, no flips, no shifted copies).
@gluon.jit
def _rows(x):
    """The 8 rows (X, Y) of x (8, X, Y) along its in-thread step axis."""
    X: gl.constexpr = x.shape[1]
    Y: gl.constexpr = x.shape[2]
    gl.static_assert(x.shape[0] == 8, "gluon scan: BLOCK_T must be 8")
    ev, od = gl.split(gl.reshape(gl.permute(x, (1, 2, 0)), (X, Y, 4, 2)))  # steps 0 2 4 6 | 1 3 5 7
    e0, e1 = gl.split(gl.reshape(ev, (X, Y, 2, 2)))  # 0 4 | 2 6
    o0, o1 = gl.split(gl.reshape(od, (X, Y, 2, 2)))  # 1 5 | 3 7
    r0, r4 = gl.split(e0)
    r2, r6 = gl.split(e1)
    r1, r5 = gl.split(o0)
    r3, r7 = gl.split(o1)
    return r0, r1, r2, r3, r4, r5, r6, r7


@gluon.jit
def _stack(rows, ref):
    """The block (8, X, Y) made of 8 rows from `_rows`, in ref's layout (the inverse of `_rows`)."""
    r0, r1, r2, r3, r4, r5, r6, r7 = rows
    X: gl.constexpr = r0.shape[0]
    Y: gl.constexpr = r0.shape[1]
    ev = gl.reshape(gl.join(gl.join(r0, r4), gl.join(r2, r6)), (X, Y, 4))
    od = gl.reshape(gl.join(gl.join(r1, r5), gl.join(r3, r7)), (X, Y, 4))
    return _like(gl.permute(gl.reshape(gl.join(ev, od), (X, Y, 8)), (2, 0, 1)), ref)


@gluon.jit
def _forward_rows(a, b, h):
    """h_t = a_t h_{t-1} + b_t over a block's rows (t = 0..7) from h entering it, rows of a and b from `_rows`;
    returns the 8 rows of h_t."""
    a0, a1, a2, a3, a4, a5, a6, a7 = a
    b0, b1, b2, b3, b4, b5, b6, b7 = b
    h0 = a0 * _like(h, b0) + b0
    h1 = a1 * h0 + b1
    h2 = a2 * h1 + b2
    h3 = a3 * h2 + b3
    h4 = a4 * h3 + b4
    h5 = a5 * h4 + b5
    h6 = a6 * h5 + b6
    h7 = a7 * h6 + b7
    return h0, h1, h2, h3, h4, h5, h6, h7


@gluon.jit
def _adjoint_rows(dA, c, e_last, dh):
    """The adjoint over a block, backwards: dh_t = exp(delta_{t+1} A) dh_{t+1} + c_t, with exp(delta_{t+1} A) the
    block's own exp(delta A) rows one step on and ``e_last`` past its last step; ``dh`` = dL/dh after the block.
    Returns the 8 rows of dh_t."""
    _a0, a1, a2, a3, a4, a5, a6, a7 = dA
    c0, c1, c2, c3, c4, c5, c6, c7 = c
    # the forward recurrence over the rows taken last to first
    g7, g6, g5, g4, g3, g2, g1, g0 = _forward_rows(
        (_like(e_last, c7), a7, a6, a5, a4, a3, a2, a1), (c7, c6, c5, c4, c3, c2, c1, c0), dh
    )
    return g0, g1, g2, g3, g4, g5, g6, g7


@gluon.jit
def _block_g(u_raw, dt_raw, B_raw, A2, bias, h_in, t0, L, t_c, mask_d, L3: gl.constexpr,
             HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr):  # fmt: skip
    """`triton_scan_kernels._block_states` for the block from t0, from its stored tiles (`_state_inputs`, compact
    layouts) and the state entering it: u, delta, raw delta (after the bias) and the (t d) mask in the compact layout;
    delta, delta u and B in the block layout L3's slices; the rows of exp(delta A) and of h_t; delta B u (t n d)."""
    mask_c = ((t0 + t_c) < L)[:, None] & mask_d[None, :]
    u = u_raw.to(gl.float32)
    dt, raw = _delta_of(dt_raw, bias, mask_c, HAS_BIAS, SOFTPLUS)
    dt_l = gl.convert_layout(dt, gl.SliceLayout(1, L3))
    w_l = gl.convert_layout(dt * u, gl.SliceLayout(1, L3))
    Bt = gl.convert_layout(B_raw.to(gl.float32), gl.SliceLayout(2, L3))
    dA = gl.exp2(dt_l[:, None, :] * A2[None, :, :])
    dBu = Bt[:, :, None] * w_l[:, None, :]
    dA_rows = _rows(dA)
    return u, dt, raw, mask_c, dt_l, w_l, Bt, dA_rows, _forward_rows(dA_rows, _rows(dBu), h_in), dBu


@gluon.jit
def _state_after_g(u_raw, dt_raw, B_raw, A2, bias, h_in, dsum, t0, L, t_c, mask_d, mask_n, L3: gl.constexpr,
                   HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr):  # fmt: skip
    """`triton_scan_kernels._state_after` (the walks' hook): the state after the block from t0 in h_in's layout, and
    ``dsum`` plus the block's delta, (t d) in the compact layout (summed over the steps by the caller)."""
    blk = _block_g(u_raw, dt_raw, B_raw, A2, bias, h_in, t0, L, t_c, mask_d, L3, HAS_BIAS, SOFTPLUS)
    dsum += blk[1]
    return _like(blk[8][7], h_in), dsum


@gluon.jit
def _state_sum(p, LQ: gl.constexpr, LC: gl.constexpr):
    """sum over the states of a (t n d) block, in the compact (t d) layout LC: a thread's own states summed in
    registers, then the 4 lanes' partials of each value moved into one thread (each lane keeping 2 of the 8 steps:
    `state_sum_layout`) and summed there, instead of two rounds of shuffles for all 8 steps on every lane."""
    T: gl.constexpr = p.shape[0]
    N: gl.constexpr = p.shape[1]
    D: gl.constexpr = p.shape[2]
    part = gl.sum(gl.reshape(p, (T, N // 4, 4, D)), axis=1)  # state n = 4 r + lane: the r in each thread
    return gl.convert_layout(gl.sum(gl.convert_layout(part, LQ), axis=1), LC, assert_trivial=True)


@gluon.jit
def _channel_sum(p, LR: gl.constexpr):
    """sum over the channels of a (t n d) block: moved to LR (channels inside each thread) and summed there."""
    return gl.sum(gl.convert_layout(p, LR), axis=2)


@gluon.jit
def _tiles(pid_d, E, N, BLOCK_D: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr, LC: gl.constexpr,
           LCN: gl.constexpr, LND: gl.constexpr):  # fmt: skip
    """A program's channel, state and step offsets for its (t d), (t n) and (n d) tiles (layouts LC, LCN and LND's
    slices), their masks and the (n d) tiles' offsets into (d, n)- and (n, d)-major parameters."""
    offs_d = pid_d * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, LC))
    offs_dn = pid_d * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, LND))
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, LCN))
    offs_nd = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, LND))
    t_c = gl.arange(0, BLOCK_T, layout=gl.SliceLayout(1, LC))
    t_cn = gl.arange(0, BLOCK_T, layout=gl.SliceLayout(1, LCN))
    mask_nd = (offs_nd < N)[:, None] & (offs_dn < E)[None, :]
    nd_off = offs_dn[None, :] * N + offs_nd[:, None]
    dn_off = offs_nd[:, None] * E + offs_dn[None, :]
    return offs_d, offs_dn, offs_n, offs_nd, t_c, t_cn, offs_d < E, offs_n < N, mask_nd, nd_off, dn_off


@gluon.jit
def scan_fwd_gluon_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hin_ptr, hoff_ptr, yoff_ptr,
    y_ptr, last_ptr, states_ptr, dsum_ptr,
    E, N, L,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
    shi_b, shi_s, shi_d, shi_n, sy_b, sy_d, sy_l,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    HAS_HIN: gl.constexpr, HAS_HOFF: gl.constexpr, HAS_YOFF: gl.constexpr,
    STORE_LAST: gl.constexpr, STORE_STATES: gl.constexpr, LOCAL: gl.constexpr,
    BLOCK_D: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr, CHUNK: gl.constexpr, SEG,
):  # fmt: skip
    """`triton_scan_kernels.scan_fwd_kernel` (same arguments and outputs) for BLOCK_D 8 per warp, BLOCK_N >= 4 and
    BLOCK_T 8 (`scan_triton._gluon_fits`)."""
    W: gl.constexpr = BLOCK_D // 8  # warps
    L3: gl.constexpr = block_layout(BLOCK_T, W)
    LTN: gl.constexpr = gl.SliceLayout(2, L3)
    LND: gl.constexpr = gl.SliceLayout(0, L3)
    LC: gl.constexpr = compact_td(BLOCK_T, W)
    LCN: gl.constexpr = compact_tn(BLOCK_T, W)
    LQ: gl.constexpr = state_sum_layout(BLOCK_T, W)

    pid_d = gl.program_id(0)
    pid_s = gl.program_id(1)
    pid_b = gl.program_id(2).to(gl.int64)
    offs_d, offs_dn, offs_n, offs_nd, t_c, t_cn, mask_d, mask_n, mask_nd, nd_off, dn_off = _tiles(
        pid_d, E, N, BLOCK_D, BLOCK_N, BLOCK_T, LC, LCN, LND
    )

    A2, bias = _params(A_ptr, bias_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_BIAS)
    u_base, dt_base, B_base = _bases(pid_b, u_ptr, dt_ptr, B_ptr, su_b, sdt_b, sB_b)
    s0 = pid_s * SEG
    s1 = gl.minimum(s0 + SEG, L)
    u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, s0, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n,
                                   su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
    if LOCAL:
        h, dsum = _walk_segment(
            gl.zeros((BLOCK_N, BLOCK_D), gl.float32, LND), gl.zeros((BLOCK_T, BLOCK_D), gl.float32, LC), u_n, dt_n,
            B_n, s0, s1, u_base, dt_base, B_base, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n, su_d, su_l, sdt_d,
            sdt_l, sB_n, sB_l, A2, bias, _state_after_g, L3, HAS_BIAS, SOFTPLUS, BLOCK_T,
        )  # fmt: skip
        gl.store(_slot(hin_ptr, pid_b, pid_s + 1, shi_b, shi_s, shi_d, shi_n, offs_dn, offs_nd), h, mask=mask_nd)
        gl.store(dsum_ptr + (pid_b * gl.cdiv(L, SEG) + pid_s) * E + offs_d, gl.sum(dsum, axis=0), mask=mask_d)
    else:
        Dv, yoff, hoff = _out_params(D_ptr, yoff_ptr, hoff_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_D, HAS_YOFF,
                                     HAS_HOFF)  # fmt: skip
        h = _slot_or(hin_ptr, pid_b, pid_s, shi_b, shi_s, shi_d, shi_n, offs_dn, offs_nd, mask_nd,
                     gl.zeros((BLOCK_N, BLOCK_D), gl.float32, LND), HAS_HIN)  # fmt: skip
        C_base = C_ptr + pid_b * sC_b
        z_base = z_ptr + pid_b * sz_b
        n_chunks = gl.cdiv(L, CHUNK)
        C_n = _raw_tn(C_base, s0 + t_cn, offs_n, mask_n, L, sC_n, sC_l)
        z_n = _raw_td(z_base, s0 + t_c, offs_d, mask_d, L, sz_d, sz_l) if HAS_Z else u_n
        for t0 in range(s0, s1, BLOCK_T):
            u_r, dt_r, B_r, C_r, z_r = u_n, dt_n, B_n, C_n, z_n
            tn = t0 + BLOCK_T
            u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, tn, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n,
                                           su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
            C_n = _raw_tn(C_base, tn + t_cn, offs_n, mask_n, L, sC_n, sC_l)
            if HAS_Z:
                z_n = _raw_td(z_base, tn + t_c, offs_d, mask_d, L, sz_d, sz_l)
            if STORE_STATES:
                if t0 % CHUNK == 0:  # the state entering the chunk, for the backward
                    gl.store(states_ptr + (pid_b * n_chunks + t0 // CHUNK) * E * N + dn_off, h, mask=mask_nd)
            offs_t = t0 + t_c
            u, _dt, _raw, mask_c, _dt_l, _w_l, _Bt, _dA, h_rows, dBu = _block_g(
                u_r, dt_r, B_r, A2, bias, h, t0, L, t_c, mask_d, L3, HAS_BIAS, SOFTPLUS
            )
            hs = _stack(h_rows, dBu)
            Ct = gl.convert_layout(C_r.to(gl.float32), LTN)
            hr = hs + hoff[None, :, :] if HAS_HOFF else hs
            y = _readout(_state_sum(hr * Ct[:, :, None], LQ, LC), u, Dv, yoff, HAS_D, HAS_YOFF)
            _store_td(y_ptr, pid_b, sy_b, sy_d, sy_l, offs_t, offs_d, _gated(y, z_r, HAS_Z), mask_c)
            h = _like(h_rows[7], h)
        if STORE_LAST:
            if pid_s == gl.num_programs(1) - 1:
                gl.store(last_ptr + pid_b * E * N + nd_off, h, mask=mask_nd)


@gluon.jit
def scan_bwd_gluon_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hoff_ptr, yoff_ptr, states_ptr, scratch_ptr,
    dy_ptr, dhin_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dhoff_ptr, dyoff_ptr,
    E, N, L,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
    sdy_b, sdy_d, sdy_l, sdu_b, sdu_d, sdu_l, sg_b, sg_d, sg_l, sdz_b, sdz_d, sdz_l, sdB_b, sdB_p, sdB_n,
    sdh_b, sdh_s, sdh_d, sdh_n,
    HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
    HAS_H0: gl.constexpr, HAS_HOFF: gl.constexpr, HAS_YOFF: gl.constexpr, HAS_DHIN: gl.constexpr,
    GRAD_A: gl.constexpr, GRAD_D: gl.constexpr, GRAD_BIAS: gl.constexpr,
    BLOCK_D: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_T: gl.constexpr, CHUNK: gl.constexpr, SEG,
    BC_SLOTS: gl.constexpr,
):  # fmt: skip
    """`triton_scan_kernels.scan_bwd_kernel` (same arguments and outputs) for BLOCK_D 8 per warp, BLOCK_N >= 4 and
    BLOCK_T 8 (`scan_triton._gluon_fits`)."""
    W: gl.constexpr = BLOCK_D // 8  # warps
    L3: gl.constexpr = block_layout(BLOCK_T, W)
    LTD: gl.constexpr = gl.SliceLayout(1, L3)  # (t d), each value on the 4 lanes of its channel
    LTN: gl.constexpr = gl.SliceLayout(2, L3)  # (t n), each value on the 8 lanes of its state group
    LND: gl.constexpr = gl.SliceLayout(0, L3)
    LC: gl.constexpr = compact_td(BLOCK_T, W)
    LCN: gl.constexpr = compact_tn(BLOCK_T, W)
    LQ: gl.constexpr = state_sum_layout(BLOCK_T, W)
    # dB / dC: steps x states across the lanes, the channels inside each thread
    LR: gl.constexpr = gl.BlockedLayout(
        [1, BLOCK_N * BLOCK_T // 32, 8], [BLOCK_T, 32 // BLOCK_T, 1], [1, 1, W], [2, 1, 0]
    )
    LRS: gl.constexpr = gl.SliceLayout(2, LR)

    pid_d = gl.program_id(0)
    pid_s = gl.program_id(1)
    pid_b = gl.program_id(2).to(gl.int64)
    n_seg = gl.num_programs(1)
    offs_d, offs_dn, offs_n, offs_nd, t_c, t_cn, mask_d, mask_n, mask_nd, nd_off, dn_off = _tiles(
        pid_d, E, N, BLOCK_D, BLOCK_N, BLOCK_T, LC, LCN, LND
    )
    mask_dn = offs_dn < E
    t_r = gl.arange(0, BLOCK_T, layout=gl.SliceLayout(1, LRS))
    n_r = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, LRS))
    prog = (pid_b * n_seg + pid_s) * gl.num_programs(0) + pid_d
    scratch = scratch_ptr + prog * (CHUNK // BLOCK_T) * BLOCK_N * BLOCK_D
    sc_off = offs_nd[:, None] * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, LND))[None, :]

    A2, bias = _params(A_ptr, bias_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_BIAS)
    Dv, yoff, hoff = _out_params(D_ptr, yoff_ptr, hoff_ptr, offs_d, dn_off, mask_d, mask_nd, HAS_D, HAS_YOFF, HAS_HOFF)
    dh = _slot_or(dhin_ptr, pid_b, pid_s + 1, sdh_b, sdh_s, sdh_d, sdh_n, offs_dn, offs_nd, mask_nd,
                  gl.zeros((BLOCK_N, BLOCK_D), gl.float32, LND), HAS_DHIN)  # fmt: skip
    dA_acc = gl.zeros((BLOCK_N, BLOCK_D), gl.float32, LND)
    dhoff_acc = gl.zeros((BLOCK_N, BLOCK_D), gl.float32, LND)
    dD_acc = gl.zeros((BLOCK_T, BLOCK_D), gl.float32, LC)  # summed over the steps at the end
    dyoff_acc = gl.zeros((BLOCK_T, BLOCK_D), gl.float32, LC)
    dbias_acc = gl.zeros((BLOCK_T, BLOCK_D), gl.float32, LC)

    u_base, dt_base, B_base = _bases(pid_b, u_ptr, dt_ptr, B_ptr, su_b, sdt_b, sB_b)
    C_base, dy_base, z_base = _bases(pid_b, C_ptr, dy_ptr, z_ptr, sC_b, sdy_b, sz_b)
    n_chunks, c_first, c_end = _chunk_range(pid_s, L, SEG, CHUNK)
    # the adjoint's decay at the segment's last step: exp(delta A) one step after it (1 past L)
    dt_end = _delta_at(dt_base, bias, c_end * CHUNK + t_c, offs_d, mask_d, L, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
    e_carry = gl.convert_layout(
        _rows(gl.exp2(gl.convert_layout(dt_end, LTD)[:, None, :] * A2[None, :, :]))[0], LND, assert_trivial=True
    )
    for i in range(0, c_end - c_first):
        c = c_end - 1 - i
        c0 = c * CHUNK
        n_blocks = gl.cdiv(gl.minimum(CHUNK, L - c0), BLOCK_T)
        # 1. the states entering each block of the chunk, into the scratch (each thread reads back what it wrote)
        h = gl.load(states_ptr + (pid_b * n_chunks + c) * E * N + dn_off, mask=mask_nd, other=0.0)
        _walk_chunk(h, scratch, sc_off, c0, n_blocks, u_base, dt_base, B_base, L, t_c, t_cn, offs_d, offs_n, mask_d,
                    mask_n, su_d, su_l, sdt_d, sdt_l, sB_n, sB_l, A2, bias, _state_after_g, L3, HAS_BIAS, SOFTPLUS,
                    BLOCK_T, BLOCK_N, BLOCK_D)  # fmt: skip

        # 2. the blocks in reverse, each block's tiles loaded during the block after it
        t_last = c0 + (n_blocks - 1) * BLOCK_T
        u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, t_last, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n,
                                       su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
        C_n, dy_n, z_n = _adjoint_inputs(C_base, dy_base, z_base, t_last, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n,
                                         sC_n, sC_l, sdy_d, sdy_l, sz_d, sz_l, u_n, HAS_Z)  # fmt: skip
        for j in range(0, n_blocks):
            t0 = c0 + (n_blocks - 1 - j) * BLOCK_T
            u_r, dt_r, B_r, C_r, dy_r, z_r = u_n, dt_n, B_n, C_n, dy_n, z_n
            tp = t0 - BLOCK_T  # the block before (in the previous chunk after the last j: loaded, not used)
            u_n, dt_n, B_n = _state_inputs(u_base, dt_base, B_base, tp, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n,
                                           su_d, su_l, sdt_d, sdt_l, sB_n, sB_l)  # fmt: skip
            C_n, dy_n, z_n = _adjoint_inputs(C_base, dy_base, z_base, tp, L, t_c, t_cn, offs_d, offs_n, mask_d, mask_n,
                                             sC_n, sC_l, sdy_d, sdy_l, sz_d, sz_l, z_n, HAS_Z)  # fmt: skip
            h_in = gl.load(scratch + (n_blocks - 1 - j) * BLOCK_N * BLOCK_D + sc_off)
            offs_t = t0 + t_c
            u, dt, raw, mask_c, dt_l, w_l, Bt, dA_rows, h_rows, dBu = _block_g(
                u_r, dt_r, B_r, A2, bias, h_in, t0, L, t_c, mask_d, L3, HAS_BIAS, SOFTPLUS
            )
            Ct = gl.convert_layout(C_r.to(gl.float32), LTN)
            hs = _stack(h_rows, dBu)
            dy = dy_r.to(gl.float32)
            hr = hs + hoff[None, :, :] if HAS_HOFF else hs
            g_ptrs = pid_b * sg_b + offs_t[:, None] * sg_l + offs_d[None, :] * sg_d
            if HAS_Z:  # y = o * silu(z), o = C (h + h') + D u + y'
                z = z_r.to(gl.float32)
                o = _readout(_state_sum(hr * Ct[:, :, None], LQ, LC), u, Dv, yoff, HAS_D, HAS_YOFF)
                g = _gate_back(dy, o, z, dz_ptr, pid_b, sdz_b, sdz_d, sdz_l, offs_t, offs_d, mask_c)
            else:
                g = dy
            g_l = gl.convert_layout(g, LTD)
            # read-out: dC_t = sum_d g (h_t + h'), dh' += sum_t C_t g, dD += g u, dy' += g
            offs_tr = t0 + t_r
            mask_r = (offs_tr < L)[:, None] & (n_r < N)[None, :]
            bc_ptrs = pid_b * sdB_b + _bc_slot(pid_d, BC_SLOTS) * sdB_p + n_r[None, :] * sdB_n + offs_tr[:, None]
            _put_bc(dC_ptr + bc_ptrs, _channel_sum(hr * g_l[:, None, :], LR), mask_r, BC_SLOTS)
            Cg = Ct[:, :, None] * g_l[:, None, :]
            if HAS_HOFF:
                dhoff_acc += gl.sum(Cg, axis=0)
            if GRAD_D:
                dD_acc += g * u
            if HAS_YOFF:
                dyoff_acc += g
            # adjoint, backwards over the block's rows: dh_t = exp(delta_{t+1} A) dh_{t+1} + C_t g_t
            dh_rows = _adjoint_rows(dA_rows, _rows(Cg), e_carry, dh)
            e_carry = _like(dA_rows[0], e_carry)  # exp(delta A) at this block's first step, for the block before
            dh = _like(dh_rows[0], dh)
            dhs = _stack(dh_rows, dBu)
            # through h_t = exp(delta A) h_{t-1} + delta B u
            q = dhs * (hs - dBu)
            if GRAD_A:
                dA_acc += gl.sum(q * dt_l[:, None, :], axis=0)
            dhB = _state_sum(dhs * Bt[:, :, None], LQ, LC)
            ddt = u * dhB + _state_sum(q * A2[None, :, :], LQ, LC) * LN2
            du = dt * dhB
            if HAS_D:
                du += g * Dv[None, :]
            _put_bc(dB_ptr + bc_ptrs, _channel_sum(dhs * w_l[:, None, :], LR), mask_r, BC_SLOTS)
            if SOFTPLUS:
                ddt = ddt * sigmoid(raw)
            if GRAD_BIAS:
                dbias_acc += gl.where(mask_c, ddt, 0.0)
            _store_td(du_ptr, pid_b, sdu_b, sdu_d, sdu_l, offs_t, offs_d, du, mask_c)
            gl.store(ddt_ptr + g_ptrs, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_c)

    part = pid_b * n_seg + pid_s
    row = part * E * N + nd_off
    if GRAD_A:
        gl.store(dA_ptr + row, dA_acc, mask=mask_nd)
    if HAS_H0:  # dh_init = exp(delta_0 A) dh_0
        if pid_s == 0:
            raw0 = gl.load(dt_base + offs_dn * sdt_d, mask=mask_dn, other=0.0).to(gl.float32)
            if HAS_BIAS:
                raw0 += gl.load(bias_ptr + offs_dn, mask=mask_dn, other=0.0).to(gl.float32)
            dt0 = softplus(raw0) if SOFTPLUS else raw0
            gl.store(dh0_ptr + pid_b * E * N + nd_off, dh * gl.exp2(dt0[None, :] * A2), mask=mask_nd)
    dD, dyoff, dbias = gl.sum(dD_acc, axis=0), gl.sum(dyoff_acc, axis=0), gl.sum(dbias_acc, axis=0)
    _store_param_grads(dhoff_ptr, dD_ptr, dyoff_ptr, dbias_ptr, part, row, E, offs_d, mask_nd, mask_d, dhoff_acc, dD,
                       dyoff, dbias, HAS_HOFF, GRAD_D, HAS_YOFF, GRAD_BIAS)  # fmt: skip
