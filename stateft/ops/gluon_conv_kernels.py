"""The fused conv in Gluon: the forward with x read once, the backward in one pass (`conv_triton`'s Triton kernels:
read those first).

The Triton forward loads x at the K shifted steps of each output (cache hits, but K loads); the Triton backward writes
the pre-activation gradient dv (fp32, (b l c)) in a first kernel and reads it back at K shifted steps in a second
(dx[t] = sum_s w[:, K-1-s] dv[t + s]): a round trip of 2 x 4 bytes per element through memory, about half of the
pass's traffic. Here each thread holds 8 consecutive steps of a channel (`steps_layout`), so the shifts are renamings
of its registers (rows split off along the in-thread axis, as in the scan's Gluon kernels): x at the 3 steps before
its 8 (and in the backward du and x at the 3 after, for dv there) come from halo tiles whose data the neighbouring
thread's loads bring into cache. x and du are read once from memory, u or dx written once, dv never leaves registers.
Only K = 4 runs here, and the backward only for the frozen conv (no dw, d bias partial sums) with no learned window to
differentiate; `conv_triton` keeps the Triton kernels for the rest, for the interpreter and as the reference
(tests/ops/test_conv_triton.py compares them on the GPU). Kernel times against the Triton kernels and the memory-traffic
floor: benchmarks/results/conv_kernel.md.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from stateft.ops.conv_pad import x_pad
from stateft.ops.gluon_scan_kernels import _like, _rows, _stack
from stateft.ops.triton_math import sigmoid


@gluon.constexpr_function
def channels_layout(WARPS):
    """(steps, channels) tiles with the channels contiguous in memory (x, dx): 8 channels (16 bytes of bf16) per
    thread, 8 threads along the channels, 4 steps per warp, the warps along the steps."""
    return gl.BlockedLayout([1, 8], [4, 8], [WARPS, 1], [1, 0])


@gluon.constexpr_function
def steps_layout(ROWS, WARPS):
    """(steps, channels) tiles for the arithmetic: ROWS consecutive steps of a channel in each thread, 8 threads along
    the steps, 4 along the channels, the warps along the channels. With ROWS 8 a thread's steps t = 8 g + r (g its
    lane group); the halo tiles (ROWS 4) hold, on the same thread, the 4 steps before or after those 8."""
    return gl.BlockedLayout([ROWS, 1], [8, 4], [1, WARPS], [0, 1])


@gluon.jit
def _rows4(x):
    """The 4 rows (X, Y) of x (4, X, Y) along its in-thread axis."""
    X: gl.constexpr = x.shape[1]
    Y: gl.constexpr = x.shape[2]
    ev, od = gl.split(gl.reshape(gl.permute(x, (1, 2, 0)), (X, Y, 2, 2)))  # steps 0 2 | 1 3
    r0, r2 = gl.split(ev)
    r1, r3 = gl.split(od)
    return r0, r1, r2, r3


@gluon.jit
def _by_row(tile, LS: gl.constexpr):
    """A (64, C) tile given in any layout as (8 rows, 8 groups, C) in `steps_layout` LS (step 8 g + r at [r, g])."""
    G: gl.constexpr = tile.shape[0] // 8
    C: gl.constexpr = tile.shape[1]
    return gl.permute(gl.reshape(gl.convert_layout(tile, LS), (G, 8, C)), (1, 0, 2))


@gluon.jit
def _split4(tile, LS4: gl.constexpr, ref):
    """The 4 in-thread rows (8 groups, C) of a (32, C) halo tile, in ref's layout (a row from `_split8`)."""
    G: gl.constexpr = tile.shape[0] // 4
    C: gl.constexpr = tile.shape[1]
    t = gl.convert_layout(tile, LS4)
    r0, r1, r2, r3 = _rows4(gl.permute(gl.reshape(t, (G, 4, C)), (1, 0, 2)))
    return _like(r0, ref), _like(r1, ref), _like(r2, ref), _like(r3, ref)


@gluon.jit
def _tap4(a0, a1, a2, a3, w0, w1, w2, w3):
    return w0 * a0 + w1 * a1 + w2 * a2 + w3 * a3


@gluon.jit
def _silu(v):
    return v * sigmoid(v)


@gluon.jit
def _dsilu(du, v):
    """du * silu'(v)."""
    sig = sigmoid(v)
    return du * sig * (1.0 + v * (1.0 - sig))


@gluon.jit
def conv_silu_fwd_gluon_kernel(
    x_ptr, win_ptr, w_ptr, bias_ptr, u_ptr, C, L,
    sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, su_b, su_c, su_l,
    K: gl.constexpr, HAS_WIN: gl.constexpr, HAS_BIAS: gl.constexpr, U_STEPS: gl.constexpr,
    BLOCK_L: gl.constexpr, BLOCK_C: gl.constexpr, WARPS: gl.constexpr,
):  # fmt: skip
    """`conv_triton.conv_silu_fwd_kernel` with x read once: each thread's 8 steps and the 3 before them (x at the
    4 steps before each thread's 8 from a halo tile) in registers, u[t] = silu(bias + sum_k w_k x[t + k - 3]) by
    renaming. U_STEPS: u is laid out with the steps contiguous (the Mamba-1 mixer's), stored from the steps layout;
    else with the channels contiguous (Mamba-2's), stored after a move to that layout."""
    LS: gl.constexpr = steps_layout(8, WARPS)
    pid_b, t0, c0 = _origin(K, BLOCK_L, BLOCK_C)
    x_rows, m, p = _x_window(x_ptr, win_ptr, pid_b, t0, c0, C, L, sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, BLOCK_L, BLOCK_C,
                             WARPS, HAS_WIN)  # fmt: skip
    m0, m1, m2, m3, m4, m5, m6, m7 = m
    p1, p2, p3 = p
    w0, w1, w2, w3, bias = _taps(w_ptr, bias_ptr, c0, C, m0, K, HAS_BIAS)
    u0 = _silu(bias + _tap4(p1, p2, p3, m0, w0, w1, w2, w3))
    u1 = _silu(bias + _tap4(p2, p3, m0, m1, w0, w1, w2, w3))
    u2 = _silu(bias + _tap4(p3, m0, m1, m2, w0, w1, w2, w3))
    u3 = _silu(bias + _tap4(m0, m1, m2, m3, w0, w1, w2, w3))
    u4 = _silu(bias + _tap4(m1, m2, m3, m4, w0, w1, w2, w3))
    u5 = _silu(bias + _tap4(m2, m3, m4, m5, w0, w1, w2, w3))
    u6 = _silu(bias + _tap4(m3, m4, m5, m6, w0, w1, w2, w3))
    u7 = _silu(bias + _tap4(m4, m5, m6, m7, w0, w1, w2, w3))
    u = _unrow((u0, u1, u2, u3, u4, u5, u6, u7), x_rows).to(u_ptr.dtype.element_ty)
    _store_tile(u_ptr + pid_b * su_b, u, t0, c0, C, L, su_c, su_l, LS if U_STEPS else channels_layout(WARPS))


@gluon.jit
def _origin(K: gl.constexpr, BLOCK_L: gl.constexpr, BLOCK_C: gl.constexpr):
    """This program's sequence and the first step and channel of its tile; the shape the kernels are written for."""
    gl.static_assert(K == 4, "conv (Gluon): K must be 4")
    gl.static_assert(BLOCK_L == 64, "conv (Gluon): BLOCK_L must be 64 (8 lane groups of 8 steps)")
    return gl.program_id(2).to(gl.int64), gl.program_id(0) * BLOCK_L, gl.program_id(1) * BLOCK_C


@gluon.jit
def _x_window(x_ptr, win_ptr, pid_b, t0, c0, C, L, sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, BLOCK_L: gl.constexpr,
              BLOCK_C: gl.constexpr, WARPS: gl.constexpr, HAS_WIN: gl.constexpr):  # fmt: skip
    """x around a tile in the steps layout: (the tile as `_by_row` rows, its 8 rows from `_rows`, the 3 steps before
    each thread's 8 as 3 rows in their layout)."""
    LX: gl.constexpr = channels_layout(WARPS)
    x_base = x_ptr + pid_b * sx_b
    win_base = win_ptr + pid_b * sw_b
    x_t = _x_tile(x_base, win_base, t0, c0, C, L, sx_c, sx_l, sw_c, sw_k, 0, BLOCK_L, BLOCK_C, LX, HAS_WIN)
    x_rows = _by_row(x_t, steps_layout(8, WARPS))
    m = _rows(x_rows)
    x_prev = _x_tile(x_base, win_base, t0, c0, C, L, sx_c, sx_l, sw_c, sw_k, -4, BLOCK_L, BLOCK_C, LX, HAS_WIN)
    _p0, p1, p2, p3 = _split4(x_prev, steps_layout(4, WARPS), m[0])
    return x_rows, m, (p1, p2, p3)


@gluon.jit
def _x_tile(x_base, win_base, t0, c0, C, L, sx_c, sx_l, sw_c, sw_k, SHIFT: gl.constexpr, BLOCK_L: gl.constexpr,
            BLOCK_C: gl.constexpr, LX: gl.constexpr, HAS_WIN: gl.constexpr):  # fmt: skip
    """x (fp32, 0 outside the sequence, the window before it) loaded in LX (channels contiguous, as in memory): the
    tile's BLOCK_L steps (SHIFT 0), or a halo of BLOCK_L / 2 rows holding the 4 steps from 8 g + SHIFT for each lane
    group g of 8 steps (SHIFT -4: the 4 before them, 8: the 4 after). The strides come one by one: Triton 3.6 fails
    to lower these kernels when they are passed on as a tuple."""
    offs_c = c0 + gl.arange(0, BLOCK_C, layout=gl.SliceLayout(0, LX))
    if SHIFT == 0:
        t = t0 + gl.arange(0, BLOCK_L, layout=gl.SliceLayout(1, LX))
    else:
        j = gl.arange(0, BLOCK_L // 2, layout=gl.SliceLayout(1, LX))
        t = t0 + (j // 4) * 8 + SHIFT + j % 4
    return x_pad(x_base, win_base, t + 3, offs_c, offs_c < C, L, sx_c, sx_l, sw_c, sw_k, 3, HAS_WIN)  # x_pad[t + K-1]


@gluon.jit
def _taps(w_ptr, bias_ptr, c0, C, ref, K: gl.constexpr, HAS_BIAS: gl.constexpr):
    """The conv's 4 taps and its bias (0 without one) per channel, as rows (1, C) broadcastable to ref's layout."""
    c_r = c0 + gl.arange(0, ref.shape[1], layout=gl.SliceLayout(0, ref.type.layout))
    mask_r = c_r < C
    w0 = gl.load(w_ptr + c_r * K, mask=mask_r, other=0.0)[None, :]
    w1 = gl.load(w_ptr + c_r * K + 1, mask=mask_r, other=0.0)[None, :]
    w2 = gl.load(w_ptr + c_r * K + 2, mask=mask_r, other=0.0)[None, :]
    w3 = gl.load(w_ptr + c_r * K + 3, mask=mask_r, other=0.0)[None, :]
    if HAS_BIAS:
        bias = gl.load(bias_ptr + c_r, mask=mask_r, other=0.0)[None, :]
    else:
        bias = 0.0
    return w0, w1, w2, w3, bias


@gluon.jit
def _unrow(rows, x_rows):
    """The (64, C) tile (step 8 g + r) made of the 8 rows (8 groups, C) from `_rows` of x_rows (`_by_row`)."""
    t = gl.permute(_stack(rows, x_rows), (1, 0, 2))  # (8 groups, 8 rows, C)
    return gl.reshape(t, (t.shape[0] * 8, t.shape[2]))


@gluon.jit
def _store_tile(base, v, t0, c0, C, L, s_c, s_l, LAYOUT: gl.constexpr):
    """Store the (steps, channels) tile v from (t0, c0), moved to LAYOUT (the one that matches the memory order)."""
    v = gl.convert_layout(v, LAYOUT)
    t = t0 + gl.arange(0, v.shape[0], layout=gl.SliceLayout(1, LAYOUT))
    c = c0 + gl.arange(0, v.shape[1], layout=gl.SliceLayout(0, LAYOUT))
    gl.store(base + t[:, None] * s_l + c[None, :] * s_c, v, mask=(t < L)[:, None] & (c < C)[None, :])


@gluon.jit
def conv_silu_bwd_gluon_kernel(
    x_ptr, win_ptr, w_ptr, bias_ptr, du_ptr, du2_ptr, dx_ptr, C, L,
    sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, sdu_b, sdu_c, sdu_l, sdu2_b, sdu2_c, sdu2_l, sdx_b, sdx_c, sdx_l,
    K: gl.constexpr, HAS_WIN: gl.constexpr, HAS_BIAS: gl.constexpr, HAS_DU2: gl.constexpr,
    BLOCK_L: gl.constexpr, BLOCK_C: gl.constexpr, WARPS: gl.constexpr,
):  # fmt: skip
    """dx for one (step tile, channel tile, sequence) with the conv frozen: dv at the tile's steps and the 3 after
    each thread's 8, then dx[t] = sum_s w[:, 3-s] dv[t + s], written in dx's layout. du is the sum of du and, if
    HAS_DU2, du2 (the two aliases of u). BLOCK_L = 64 (8 lane groups of 8 steps)."""
    LS: gl.constexpr = steps_layout(8, WARPS)
    LS4: gl.constexpr = steps_layout(4, WARPS)
    pid_b, t0, c0 = _origin(K, BLOCK_L, BLOCK_C)
    # x at the tile's steps, at the 3 before each thread's 8 and the 3 after
    x_rows, m, p = _x_window(x_ptr, win_ptr, pid_b, t0, c0, C, L, sx_b, sx_c, sx_l, sw_b, sw_c, sw_k, BLOCK_L, BLOCK_C,
                             WARPS, HAS_WIN)  # fmt: skip
    m0, m1, m2, m3, m4, m5, m6, m7 = m
    p1, p2, p3 = p
    x_next = _x_tile(x_ptr + pid_b * sx_b, win_ptr + pid_b * sw_b, t0, c0, C, L, sx_c, sx_l, sw_c, sw_k, 8, BLOCK_L,
                     BLOCK_C, channels_layout(WARPS), HAS_WIN)  # fmt: skip
    n0, n1, n2, _n3 = _split4(x_next, LS4, m0)

    # du (+ du2) at the tile's steps and the 4 after each thread's 8, loaded in the steps layout (the scan and
    # x_proj write them with the steps contiguous: a thread's 8 steps are 16 bytes)
    c_s = c0 + gl.arange(0, BLOCK_C, layout=gl.SliceLayout(0, LS))
    t_s = t0 + gl.arange(0, BLOCK_L, layout=gl.SliceLayout(1, LS))
    j_s = gl.arange(0, BLOCK_L // 2, layout=gl.SliceLayout(1, LS4))
    c_s4 = c0 + gl.arange(0, BLOCK_C, layout=gl.SliceLayout(0, LS4))
    t_n4 = t0 + (j_s // 4) * 8 + 8 + j_s % 4
    m_s = (t_s < L)[:, None] & (c_s < C)[None, :]
    m_n4 = (t_n4 < L)[:, None] & (c_s4 < C)[None, :]
    du_base = du_ptr + pid_b * sdu_b
    du = gl.load(du_base + t_s[:, None] * sdu_l + c_s[None, :] * sdu_c, mask=m_s, other=0.0).to(gl.float32)
    du_n = gl.load(du_base + t_n4[:, None] * sdu_l + c_s4[None, :] * sdu_c, mask=m_n4, other=0.0).to(gl.float32)
    if HAS_DU2:
        du2_base = du2_ptr + pid_b * sdu2_b
        du += gl.load(du2_base + t_s[:, None] * sdu2_l + c_s[None, :] * sdu2_c, mask=m_s, other=0.0).to(gl.float32)
        du_n += gl.load(du2_base + t_n4[:, None] * sdu2_l + c_s4[None, :] * sdu2_c, mask=m_n4, other=0.0).to(gl.float32)
    g0, g1, g2, g3, g4, g5, g6, g7 = _rows(_by_row(du, LS))
    h0, h1, h2, h3 = _split4(du_n, LS4, m0)

    w0, w1, w2, w3, bias = _taps(w_ptr, bias_ptr, c0, C, m0, K, HAS_BIAS)

    # v[t] = bias + sum_k w_k x[t + k - 3]; dv = du silu'(v), at the thread's 8 steps and the 3 after
    d0 = _dsilu(g0, bias + _tap4(p1, p2, p3, m0, w0, w1, w2, w3))
    d1 = _dsilu(g1, bias + _tap4(p2, p3, m0, m1, w0, w1, w2, w3))
    d2 = _dsilu(g2, bias + _tap4(p3, m0, m1, m2, w0, w1, w2, w3))
    d3 = _dsilu(g3, bias + _tap4(m0, m1, m2, m3, w0, w1, w2, w3))
    d4 = _dsilu(g4, bias + _tap4(m1, m2, m3, m4, w0, w1, w2, w3))
    d5 = _dsilu(g5, bias + _tap4(m2, m3, m4, m5, w0, w1, w2, w3))
    d6 = _dsilu(g6, bias + _tap4(m3, m4, m5, m6, w0, w1, w2, w3))
    d7 = _dsilu(g7, bias + _tap4(m4, m5, m6, m7, w0, w1, w2, w3))
    e0 = _dsilu(h0, bias + _tap4(m5, m6, m7, n0, w0, w1, w2, w3))
    e1 = _dsilu(h1, bias + _tap4(m6, m7, n0, n1, w0, w1, w2, w3))
    e2 = _dsilu(h2, bias + _tap4(m7, n0, n1, n2, w0, w1, w2, w3))

    # dx[t] = sum_s w_{3-s} dv[t + s]
    x0 = _tap4(d0, d1, d2, d3, w3, w2, w1, w0)
    x1 = _tap4(d1, d2, d3, d4, w3, w2, w1, w0)
    x2 = _tap4(d2, d3, d4, d5, w3, w2, w1, w0)
    x3 = _tap4(d3, d4, d5, d6, w3, w2, w1, w0)
    x4 = _tap4(d4, d5, d6, d7, w3, w2, w1, w0)
    x5 = _tap4(d5, d6, d7, e0, w3, w2, w1, w0)
    x6 = _tap4(d6, d7, e0, e1, w3, w2, w1, w0)
    x7 = _tap4(d7, e0, e1, e2, w3, w2, w1, w0)
    dx = _unrow((x0, x1, x2, x3, x4, x5, x6, x7), x_rows).to(dx_ptr.dtype.element_ty)
    _store_tile(dx_ptr + pid_b * sdx_b, dx, t0, c0, C, L, sdx_c, sdx_l, channels_layout(WARPS))
