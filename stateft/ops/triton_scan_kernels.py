"""Triton kernels for the Mamba-1 selective scan (forward and backward), with h_0, h' and y' fused in.

One program owns BLOCK_D channels of one sequence and all (padded) states, and walks the sequence in chunks of
BLOCK_T steps. Inside a chunk the linear recurrence h_t = a_t h_{t-1} + b_t is an associative scan over a
(BLOCK_D, BLOCK_N, BLOCK_T) register tile; the state is carried from chunk to chunk. The forward stores the state at
the start of every chunk (b, chunks, d, n) fp32 so the backward can rebuild h inside a chunk without keeping all
L states: it walks the chunks in reverse, recomputes h_t, and runs the adjoint recurrence
dh_t = C_t g_t + exp(delta_{t+1} A) dh_{t+1} as a reversed associative scan.

All arithmetic is fp32 whatever the input dtype; exp(delta A) is computed as exp2(delta A log2 e).
Reductions over channels (dB, dC) leave the program: each writes its partial sum (or adds it atomically), and the
caller sums the partials. Per-channel parameter gradients (dA, dD, dh', dy', d bias) are summed over the sequence in
registers and written per batch row.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _softplus(x):
    # log1p(exp(x)) overflows for large x, where softplus(x) == x to fp32 precision anyway
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _load_delta(dt_ptr, bias, offs_d, offs_t, mask, s_d, s_l, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta after bias and softplus, 0 where masked (so exp(delta A) = 1 and delta B u = 0 there)."""
    raw = tl.load(dt_ptr + offs_d[:, None] * s_d + offs_t[None, :] * s_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def scan_fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, hoff_ptr, yoff_ptr,
    y_ptr, last_ptr, states_ptr,
    E, N, L,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
    sh0_b, sh0_d, sh0_n, sy_b, sy_d, sy_l,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_HOFF: tl.constexpr, HAS_YOFF: tl.constexpr,
    STORE_LAST: tl.constexpr, STORE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_T)
    mask_d = offs_d < E
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn_off = offs_d[:, None] * N + offs_n[None, :]  # contiguous (d n) parameters and buffers

    A2 = tl.load(A_ptr + dn_off, mask=mask_dn, other=0.0).to(tl.float32) * LOG2E  # (D N), exp2 units
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    yoff = tl.load(yoff_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_YOFF else None
    hoff = tl.load(hoff_ptr + dn_off, mask=mask_dn, other=0.0).to(tl.float32) if HAS_HOFF else None
    if HAS_H0:
        h0_ptrs = h0_ptr + pid_b * sh0_b + offs_d[:, None] * sh0_d + offs_n[None, :] * sh0_n
        h = tl.load(h0_ptrs, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)

    u_base = u_ptr + pid_b * su_b
    dt_base = dt_ptr + pid_b * sdt_b
    B_base = B_ptr + pid_b * sB_b
    C_base = C_ptr + pid_b * sC_b
    n_chunks = tl.cdiv(L, BLOCK_T)
    for c in range(0, n_chunks):
        if STORE_STATES:  # state entering chunk c, for the backward
            tl.store(states_ptr + (pid_b * n_chunks + c) * E * N + dn_off, h, mask=mask_dn)
        offs_t = c * BLOCK_T + offs_c
        mask_t = offs_t < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        u = tl.load(u_base + offs_d[:, None] * su_d + offs_t[None, :] * su_l, mask=mask_dt, other=0.0).to(tl.float32)
        dt, _ = _load_delta(dt_base, bias, offs_d, offs_t, mask_dt, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_base + offs_n[:, None] * sB_n + offs_t[None, :] * sB_l, mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + offs_n[:, None] * sC_n + offs_t[None, :] * sC_l, mask=mask_nt, other=0.0).to(tl.float32)

        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])  # (D N T) exp(delta A)
        dBu = (dt * u)[:, None, :] * Bt[None, :, :]  # (D N T) delta B u
        aa, hs = tl.associative_scan((dA, dBu), 2, _combine)
        hs = hs + aa * h[:, :, None]  # h_t for t in the chunk
        if HAS_HOFF:
            y = tl.sum((hs + hoff[:, :, None]) * Ct[None, :, :], axis=1)  # C_t (h_t + h')
        else:
            y = tl.sum(hs * Ct[None, :, :], axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_YOFF:
            y += yoff[:, None]
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * sz_b + offs_d[:, None] * sz_d + offs_t[None, :] * sz_l, mask=mask_dt, other=0.0)
            z = z.to(tl.float32)
            y = y * z * tl.sigmoid(z)
        y_ptrs = y_ptr + pid_b * sy_b + offs_d[:, None] * sy_d + offs_t[None, :] * sy_l
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask_dt)
        # padded steps have exp(delta A) = 1 and no input, so the last column is the state after the chunk
        h = tl.sum(tl.where((offs_c == BLOCK_T - 1)[None, None, :], hs, 0.0), axis=2)
    if STORE_LAST:
        tl.store(last_ptr + pid_b * E * N + dn_off, h, mask=mask_dn)


@triton.jit
def scan_bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, hoff_ptr, yoff_ptr, states_ptr,
    dy_ptr, dlast_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dhoff_ptr, dyoff_ptr,
    E, N, L,
    su_b, su_d, su_l, sdt_b, sdt_d, sdt_l, sB_b, sB_n, sB_l, sC_b, sC_n, sC_l, sz_b, sz_d, sz_l,
    sdy_b, sdy_d, sdy_l, sdu_b, sdu_d, sdu_l, sg_b, sg_d, sg_l, sdB_b, sdB_p, sdB_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_HOFF: tl.constexpr, HAS_YOFF: tl.constexpr, HAS_DLAST: tl.constexpr,
    ATOMIC_BC: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    pid_d = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_T)
    mask_d = offs_d < E
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn_off = offs_d[:, None] * N + offs_n[None, :]

    A = tl.load(A_ptr + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    A2 = A * LOG2E
    bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_BIAS else None
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else None
    yoff = tl.load(yoff_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_YOFF else None
    hoff = tl.load(hoff_ptr + dn_off, mask=mask_dn, other=0.0).to(tl.float32) if HAS_HOFF else None
    if HAS_DLAST:  # gradient arriving through the returned last state: dh_{L-1} starts from it
        dh = tl.load(dlast_ptr + pid_b * E * N + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        dh = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dhoff_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dyoff_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)

    u_base = u_ptr + pid_b * su_b
    dt_base = dt_ptr + pid_b * sdt_b
    B_base = B_ptr + pid_b * sB_b
    C_base = C_ptr + pid_b * sC_b
    n_chunks = tl.cdiv(L, BLOCK_T)
    for i in range(0, n_chunks):
        c = n_chunks - 1 - i
        offs_t = c * BLOCK_T + offs_c
        mask_t = offs_t < L
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        u = tl.load(u_base + offs_d[:, None] * su_d + offs_t[None, :] * su_l, mask=mask_dt, other=0.0).to(tl.float32)
        dt, raw = _load_delta(dt_base, bias, offs_d, offs_t, mask_dt, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        mask_next = mask_d[:, None] & (offs_t + 1 < L)[None, :]
        dt_next, _ = _load_delta(dt_base, bias, offs_d, offs_t + 1, mask_next, sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_base + offs_n[:, None] * sB_n + offs_t[None, :] * sB_l, mask=mask_nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + offs_n[:, None] * sC_n + offs_t[None, :] * sC_l, mask=mask_nt, other=0.0).to(tl.float32)
        dy = tl.load(
            dy_ptr + pid_b * sdy_b + offs_d[:, None] * sdy_d + offs_t[None, :] * sdy_l, mask=mask_dt, other=0.0
        )
        dy = dy.to(tl.float32)

        # 1. rebuild h_t inside the chunk from the stored chunk-start state
        h_start = tl.load(states_ptr + (pid_b * n_chunks + c) * E * N + dn_off, mask=mask_dn, other=0.0)
        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
        dBu = (dt * u)[:, None, :] * Bt[None, :, :]
        aa, hs = tl.associative_scan((dA, dBu), 2, _combine)
        hs = hs + aa * h_start[:, :, None]
        hr = hs + hoff[:, :, None] if HAS_HOFF else hs  # the state the read-out sees

        # 2. gate: y = o * silu(z), o = C (h + h') + D u + y'
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * sz_b + offs_d[:, None] * sz_d + offs_t[None, :] * sz_l, mask=mask_dt, other=0.0)
            z = z.to(tl.float32)
            sig = tl.sigmoid(z)
            o = tl.sum(hr * Ct[None, :, :], axis=1)
            if HAS_D:
                o += Dv[:, None] * u
            if HAS_YOFF:
                o += yoff[:, None]
            dz = dy * o * sig * (1.0 + z * (1.0 - sig))
            g_ptrs = offs_d[:, None] * sg_d + offs_t[None, :] * sg_l + pid_b * sg_b
            tl.store(dz_ptr + g_ptrs, dz.to(dz_ptr.dtype.element_ty), mask=mask_dt)
            dyg = dy * z * sig  # dL/do
        else:
            dyg = dy
        dyg = tl.where(mask_dt, dyg, 0.0)

        # 3. read-out gradients: dC_t = sum_d dyg (h_t + h'), dh' = sum_t dyg C_t, dD, dy'
        dC_part = tl.sum(dyg[:, None, :] * hr, axis=0)  # (N T)
        g = Ct[None, :, :] * dyg[:, None, :]  # (D N T) dL/dh_t from the read-out
        if HAS_HOFF:
            dhoff_acc += tl.sum(g, axis=2)
        if HAS_D:
            dD_acc += tl.sum(dyg * u, axis=1)
        if HAS_YOFF:
            dyoff_acc += tl.sum(dyg, axis=1)

        # 4. adjoint recurrence, reversed: dh_t = g_t + exp(delta_{t+1} A) dh_{t+1}; dh enters as dh_{chunk end}
        e = tl.exp2(dt_next[:, None, :] * A2[:, :, None])
        pp, rr = tl.associative_scan((e, g), 2, _combine, reverse=True)
        dhs = rr + pp * dh[:, :, None]
        dh = tl.sum(tl.where((offs_c == 0)[None, None, :], dhs, 0.0), axis=2)

        # 5. through h_t = exp(delta A) h_{t-1} + delta B u: exp(delta A) h_{t-1} = h_t - delta B u
        q = dhs * (hs - dBu)  # dL/d(exp(delta A)) * exp(delta A)
        dhB = tl.sum(dhs * Bt[None, :, :], axis=1)  # (D T)
        dA_acc += tl.sum(q * dt[:, None, :], axis=2)
        ddt = u * dhB + tl.sum(q * A[:, :, None], axis=1)
        du = dt * dhB
        if HAS_D:
            du += dyg * Dv[:, None]
        dB_part = tl.sum(dhs * (dt * u)[:, None, :], axis=0)  # (N T)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(mask_dt, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=1)
        du_ptrs = du_ptr + pid_b * sdu_b + offs_d[:, None] * sdu_d + offs_t[None, :] * sdu_l
        tl.store(du_ptrs, du.to(du_ptr.dtype.element_ty), mask=mask_dt)
        g_ptrs = offs_d[:, None] * sg_d + offs_t[None, :] * sg_l + pid_b * sg_b
        tl.store(ddt_ptr + g_ptrs, ddt.to(ddt_ptr.dtype.element_ty), mask=mask_dt)
        # dB, dC: (b, parts, n, l) fp32; one partial per channel block, or one buffer added to atomically
        bc_off = pid_b * sdB_b + offs_n[:, None] * sdB_n + offs_t[None, :]
        if ATOMIC_BC:
            tl.atomic_add(dB_ptr + bc_off, dB_part, mask=mask_nt, sem="relaxed")
            tl.atomic_add(dC_ptr + bc_off, dC_part, mask=mask_nt, sem="relaxed")
        else:
            tl.store(dB_ptr + bc_off + pid_d * sdB_p, dB_part, mask=mask_nt)
            tl.store(dC_ptr + bc_off + pid_d * sdB_p, dC_part, mask=mask_nt)

    row = pid_b * E * N + dn_off
    tl.store(dA_ptr + row, dA_acc, mask=mask_dn)
    if HAS_H0:  # h_0 = exp(delta_0 A) h_init + ...: dh_init = exp(delta_0 A) dh_0
        offs_0 = tl.zeros((1,), dtype=tl.int32)
        dt0, _ = _load_delta(dt_base, bias, offs_d, offs_0, mask_d[:, None], sdt_d, sdt_l, HAS_BIAS, SOFTPLUS)
        tl.store(dh0_ptr + row, dh * tl.exp2(dt0 * A2), mask=mask_dn)
    if HAS_HOFF:
        tl.store(dhoff_ptr + row, dhoff_acc, mask=mask_dn)
    if HAS_D:
        tl.store(dD_ptr + pid_b * E + offs_d, dD_acc, mask=mask_d)
    if HAS_YOFF:
        tl.store(dyoff_ptr + pid_b * E + offs_d, dyoff_acc, mask=mask_d)
    if HAS_BIAS:
        tl.store(dbias_ptr + pid_b * E + offs_d, dbias_acc, mask=mask_d)
