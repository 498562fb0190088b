"""Triton kernels of the Mamba-2 SSD scan (forward and backward), used by `ssd_triton`.

One program owns one (batch, head, block of BLOCK_P head channels) and walks the sequence in chunks of BLOCK_Q steps,
keeping the (BLOCK_P, N) state in registers. Per chunk (a = dt A, s = cumsum(a) inside the chunk, u = dt x):

    y     = ((C B^T) * L) u + exp(s) * (C S^T) + D x         L[i, j] = exp(s_i - s_j) for i >= j, else 0
    S_out = exp(s_Q) S + u^T (w * B)                          w_j = exp(s_Q - s_j)

The backward walks the chunks in reverse with dS (the gradient of the chunk's end state), re-reading the chunk start
states the forward stored. Everything is fp32; positions past the end load as zeros (no input, no decay).
Quantities summed over head channels (dt, a, B, C gradients) are written per channel block and summed by the caller.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def ssd_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, h0_ptr, y_ptr, final_ptr, states_ptr,
    batch, length, nheads, headdim, dstate, heads_per_group,
    sx_b, sx_l, sx_h, sx_p, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n,
    sh_b, sh_h, sh_p, sh_n,
    HAS_D: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, STORE_STATES: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_p = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)  # 64-bit offsets: b * H * P * N * L can pass 2^31 at large sizes
    b = pid_bh // nheads
    h = pid_bh % nheads
    g = h // heads_per_group
    offs_q = tl.arange(0, BLOCK_Q)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_pn = (offs_p[:, None] < headdim) & (offs_n[None, :] < dstate)
    A = tl.load(A_ptr + h).to(tl.float32)
    D = 0.0
    if HAS_D:
        D = tl.load(D_ptr + h).to(tl.float32)
    if HAS_H0:
        h0_ptrs = h0_ptr + b * sh_b + h * sh_h + offs_p[:, None] * sh_p + offs_n[None, :] * sh_n
        state = tl.load(h0_ptrs, mask=mask_pn, other=0.0).to(tl.float32)  # (P N)
    else:
        state = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    pn = offs_p[:, None] * dstate + offs_n[None, :]  # offsets in a contiguous (P N) state
    causal = offs_q[:, None] >= offs_q[None, :]
    n_chunks = tl.cdiv(length, BLOCK_Q)
    for c in range(0, n_chunks):
        if STORE_STATES:  # chunk start states, (b c h p n): the backward re-reads them
            tl.store(states_ptr + (((b * n_chunks + c) * nheads + h) * headdim * dstate) + pn, state, mask=mask_pn)
        t = c * BLOCK_Q + offs_q
        mask_t = t < length
        mask_qp = mask_t[:, None] & (offs_p[None, :] < headdim)
        mask_qn = mask_t[:, None] & (offs_n[None, :] < dstate)
        dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=mask_t, other=0.0).to(tl.float32)  # (Q)
        x_ptrs = x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + offs_p[None, :] * sx_p
        x = tl.load(x_ptrs, mask=mask_qp, other=0.0).to(tl.float32)  # (Q P)
        Bc = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + offs_n[None, :] * sB_n, mask=mask_qn,
                     other=0.0).to(tl.float32)  # (Q N)  # fmt: skip
        Cc = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + offs_n[None, :] * sC_n, mask=mask_qn,
                     other=0.0).to(tl.float32)  # (Q N)  # fmt: skip
        a = dt * A
        s = tl.cumsum(a, axis=0)  # (Q)
        s_end = tl.sum(a, axis=0)
        u = x * dt[:, None]  # (Q P)
        L = tl.where(causal, tl.exp(s[:, None] - s[None, :]), 0.0)  # (Q Q)
        M = tl.dot(Cc, tl.trans(Bc), input_precision=PRECISION) * L
        y = tl.dot(M, u, input_precision=PRECISION)  # 1. intra-chunk
        y += tl.exp(s)[:, None] * tl.dot(Cc, tl.trans(state), input_precision=PRECISION)  # 4. start state read-out
        y += D * x
        y_ptrs = y_ptr + ((b * length + t[:, None]) * nheads + h) * headdim + offs_p[None, :]
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask_qp)
        w = tl.exp(s_end - s)  # (Q)
        state = tl.exp(s_end) * state + tl.dot(tl.trans(u), Bc * w[:, None], input_precision=PRECISION)  # 2.+3.
    if STORE_FINAL:
        tl.store(final_ptr + (b * nheads + h) * headdim * dstate + pn, state, mask=mask_pn)


@triton.jit
def ssd_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, dfinal_ptr, states_ptr,
    dx_ptr, ddt_ptr, da_ptr, dB_ptr, dC_ptr, dh0_ptr,
    batch, length, nheads, headdim, dstate, heads_per_group,
    sx_b, sx_l, sx_h, sx_p, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g, sB_n, sC_b, sC_l, sC_g, sC_n,
    sdy_b, sdy_l, sdy_h, sdy_p,
    HAS_D: tl.constexpr, HAS_DFINAL: tl.constexpr, STORE_DH0: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    pid_p = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)  # 64-bit offsets: b * H * P * N * L can pass 2^31 at large sizes
    b = pid_bh // nheads
    h = pid_bh % nheads
    g = h // heads_per_group
    offs_q = tl.arange(0, BLOCK_Q)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_pn = (offs_p[:, None] < headdim) & (offs_n[None, :] < dstate)
    pn = offs_p[:, None] * dstate + offs_n[None, :]
    A = tl.load(A_ptr + h).to(tl.float32)
    D = 0.0
    if HAS_D:
        D = tl.load(D_ptr + h).to(tl.float32)
    if HAS_DFINAL:
        dS = tl.load(dfinal_ptr + (b * nheads + h) * headdim * dstate + pn, mask=mask_pn, other=0.0)  # (P N)
    else:
        dS = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    causal = offs_q[:, None] >= offs_q[None, :]
    n_chunks = tl.cdiv(length, BLOCK_Q)
    for k in range(0, n_chunks):
        c = n_chunks - 1 - k
        S = tl.load(states_ptr + (((b * n_chunks + c) * nheads + h) * headdim * dstate) + pn, mask=mask_pn,
                    other=0.0)  # (P N) chunk start state  # fmt: skip
        t = c * BLOCK_Q + offs_q
        mask_t = t < length
        mask_qp = mask_t[:, None] & (offs_p[None, :] < headdim)
        mask_qn = mask_t[:, None] & (offs_n[None, :] < dstate)
        dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h * sdt_h, mask=mask_t, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + offs_p[None, :] * sx_p, mask=mask_qp,
                    other=0.0).to(tl.float32)  # fmt: skip
        dy = tl.load(dy_ptr + b * sdy_b + t[:, None] * sdy_l + h * sdy_h + offs_p[None, :] * sdy_p, mask=mask_qp,
                     other=0.0).to(tl.float32)  # fmt: skip
        Bc = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + offs_n[None, :] * sB_n, mask=mask_qn,
                     other=0.0).to(tl.float32)  # fmt: skip
        Cc = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + offs_n[None, :] * sC_n, mask=mask_qn,
                     other=0.0).to(tl.float32)  # fmt: skip
        # recompute the chunk's forward quantities
        a = dt * A
        s = tl.cumsum(a, axis=0)
        s_end = tl.sum(a, axis=0)
        e = tl.exp(s)  # (Q)
        w = tl.exp(s_end - s)  # (Q)
        u = x * dt[:, None]  # (Q P)
        L = tl.where(causal, tl.exp(s[:, None] - s[None, :]), 0.0)
        M = tl.dot(Cc, tl.trans(Bc), input_precision=PRECISION) * L  # (Q Q)
        # 1. intra-chunk y = M u
        dM = tl.dot(dy, tl.trans(u), input_precision=PRECISION)  # (Q Q), partial over this channel block
        du = tl.dot(tl.trans(M), dy, input_precision=PRECISION)  # (Q P)
        dG = dM * L
        dC = tl.dot(dG, Bc, input_precision=PRECISION)  # (Q N)
        dB = tl.dot(tl.trans(dG), Cc, input_precision=PRECISION)
        PM = dM * M  # d/ds of exp(s_i - s_j): +row sums at i, -column sums at j
        ds = tl.sum(PM, axis=1) - tl.sum(PM, axis=0)  # (Q)
        # 4. read-out of the start state: y += e * (C S^T)
        dyS = tl.dot(dy, S, input_precision=PRECISION)  # (Q N)
        dC += e[:, None] * dyS
        ds += e * tl.sum(dyS * Cc, axis=1)
        dS_start = tl.dot(tl.trans(dy * e[:, None]), Cc, input_precision=PRECISION)  # (P N)
        # 2.+3. end state: S_out = exp(s_end) S + u^T (w * B)
        decay = tl.exp(s_end)
        dS_start += decay * dS
        ds_end = decay * tl.sum(tl.sum(dS * S, axis=1), axis=0)
        du += w[:, None] * tl.dot(Bc, tl.trans(dS), input_precision=PRECISION)  # (Q P)
        udS = tl.dot(u, dS, input_precision=PRECISION)  # (Q N)
        dB += w[:, None] * udS
        R = w * tl.sum(Bc * udS, axis=1)  # (Q) d/d(s_end - s_j)
        ds_end += tl.sum(R, axis=0)
        ds -= R
        # s = cumsum(a), s_end = sum(a): da_j = sum_{i >= j} ds_i + ds_end
        da = tl.cumsum(ds, axis=0, reverse=True) + ds_end
        dx = du * dt[:, None] + D * dy
        ddt = tl.sum(du * x, axis=1)  # through u = dt x; the a = dt A part is added by the caller
        tl.store(dx_ptr + ((b * length + t[:, None]) * nheads + h) * headdim + offs_p[None, :],
                 dx.to(dx_ptr.dtype.element_ty), mask=mask_qp)  # fmt: skip
        row = ((pid_p * batch + b) * length + t) * nheads + h  # (npb b l h) partial sums
        tl.store(ddt_ptr + row, ddt, mask=mask_t)
        tl.store(da_ptr + row, da, mask=mask_t)
        tl.store(dB_ptr + row[:, None] * dstate + offs_n[None, :], dB, mask=mask_qn)
        tl.store(dC_ptr + row[:, None] * dstate + offs_n[None, :], dC, mask=mask_qn)
        dS = dS_start
    if STORE_DH0:
        tl.store(dh0_ptr + (b * nheads + h) * headdim * dstate + pn, dS, mask=mask_pn)
