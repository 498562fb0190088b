"""Reference state space dual (SSD) scan of Mamba-2 in plain PyTorch: the chunked algorithm, fp32 throughout.

Per head h (scalar A_h < 0), head channel p and state n, with B, C shared by the heads of a group g(h):

    dt_t = clamp(softplus(dt_t + dt_bias), dt_limit)                 (if dt_softplus)
    h_t  = exp(dt_t A) * h_{t-1} + dt_t * x_t B_t^T                  h_0 = initial_state (or 0)   (h p n)
    y_t  = h_t C_t + D x_t                                           (h p)

The chunked form (Dao & Gu 2024, "Transformers are SSMs", section 6) splits the sequence into chunks of Q steps:
1. inside a chunk the output is a masked "attention" y_i = sum_{j<=i} (C_i . B_j) exp(a_i - a_j) dt_j x_j,
   a = cumulative sum of dt A over the chunk;
2. each chunk's own end state S_c = sum_j exp(a_Q - a_j) dt_j x_j B_j^T;
3. the states are passed across chunks: h_start[c+1] = exp(a_Q[c]) h_start[c] + S_c;
4. each position reads its chunk's start state: y_i += exp(a_i) h_start C_i.
The result equals the recurrence above for any Q; Q only changes rounding and cost.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, SSDSettings


def discretize_dt(dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool, dt_limit: tuple[float, float]) -> Tensor:
    """dt (..., h) -> fp32 step sizes: softplus(dt + dt_bias), clamped to ``dt_limit``."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    if dt_limit != (0.0, math.inf):
        dt = dt.clamp(min=dt_limit[0], max=dt_limit[1])
    return dt


def heads_of_groups(t: Tensor, nheads: int) -> Tensor:
    """(..., g, n) -> (..., h, n): head h reads group h // (h_total / g) (mamba_ssm's grouping)."""
    return t.repeat_interleave(nheads // t.shape[-2], dim=-2)


def _segment_sum(a: Tensor) -> Tensor:
    """a (..., q) -> (..., q, q) with [i, j] = a_{j+1} + ... + a_i for i >= j, -inf above the diagonal.

    Summing the masked increments (rather than subtracting two cumulative sums) keeps exp() of it exact in fp32.
    """
    q = a.shape[-1]
    strict = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=-1)
    segsum = torch.cumsum(a[..., None].expand(*a.shape, q).masked_fill(~strict, 0.0), dim=-2)  # (..., q, q)
    causal = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device))
    return segsum.masked_fill(~causal, -math.inf)


def ssd_scan_ref(
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
    """Chunked SSD scan (`interfaces.SSDScan`; no kernels: ``settings`` unused).

    Shapes: x (b l h p); dt (b l h); A, D, dt_bias (h,); B, C (b l g n); initial_state (b h p n).
    Returns y (b l h p) in x's dtype and, if asked, the final state (b h p n) in fp32.
    """
    with torch.autocast(x.device.type, enabled=False):  # fp32 einsums also under bf16 autocast
        return _ssd_scan(
            x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, initial_state, return_final_state
        )


def _ssd_scan(x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, initial_state, return_final_state):
    b, length, nheads, headdim = x.shape
    n = B.shape[-1]
    q = chunk_size
    dt32 = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b l h)
    x32 = x.float()
    B32 = heads_of_groups(B.float(), nheads)  # (b l h n)
    C32 = heads_of_groups(C.float(), nheads)  # (b l h n)
    pad = (-length) % q  # zero padding: no input and no decay, so the final state is the last real one
    xdt = F.pad(x32 * dt32[..., None], (0, 0, 0, 0, 0, pad))  # (b L h p), L = l + pad
    a = F.pad(dt32 * A.float(), (0, 0, 0, pad))  # (b L h) log decay per step
    B32 = F.pad(B32, (0, 0, 0, 0, 0, pad))
    C32 = F.pad(C32, (0, 0, 0, 0, 0, pad))
    nchunks = xdt.shape[1] // q
    xdt = xdt.view(b, nchunks, q, nheads, headdim)  # (b c q h p)
    B32 = B32.view(b, nchunks, q, nheads, n)  # (b c q h n)
    C32 = C32.view(b, nchunks, q, nheads, n)
    a = a.view(b, nchunks, q, nheads).permute(0, 3, 1, 2)  # (b h c q)
    a_cum = torch.cumsum(a, dim=-1)  # (b h c q)

    # 1. intra-chunk output: masked attention with decay weights L[i, j] = exp(a_i - a_j)
    L = torch.exp(_segment_sum(a))  # (b h c q q)
    scores = torch.einsum("bcihn,bcjhn->bhcij", C32, B32) * L  # (b h c q q)
    y = torch.einsum("bhcij,bcjhp->bcihp", scores, xdt)  # (b c q h p)

    # 2. each chunk's end state from its own inputs
    decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b h c q)
    # two operands at a time, in a fixed order: a three-operand einsum picks its contraction order by the shapes,
    # and a batch (or a padded row's extra chunks) would round differently from a row alone
    xdt_to_end = xdt * decay_to_end.permute(0, 2, 3, 1)[..., None]  # (b c q h p)
    chunk_states = torch.einsum("bcjhn,bcjhp->bchpn", B32, xdt_to_end)  # (b c h p n)

    # 3. pass states across chunks: h_start[c+1] = exp(a_Q[c]) h_start[c] + S_c
    chunk_decay = torch.exp(a_cum[..., -1])  # (b h c)
    state = x32.new_zeros(b, nheads, headdim, n) if initial_state is None else initial_state.float()
    starts = []
    for c in range(nchunks):
        starts.append(state)
        state = chunk_decay[:, :, c, None, None] * state + chunk_states[:, c]  # (b h p n)
    start_states = torch.stack(starts, dim=1) if starts else chunk_states  # (b c h p n)

    # 4. read the start state out at every position, decayed to it: exp(a_i) h_start C_i
    C_decayed = C32 * torch.exp(a_cum).permute(0, 2, 3, 1)[..., None]  # (b c q h n)
    y = y + torch.einsum("bcihn,bchpn->bcihp", C_decayed, start_states)
    y = y.reshape(b, nchunks * q, nheads, headdim)[:, :length]  # (b l h p)
    if D is not None:
        y = y + D.float()[:, None] * x32
    y = y.to(x.dtype)
    if return_final_state:
        if initial_state is not None:
            state = state.expand(b, -1, -1, -1)
        return y, state.contiguous()
    return y


def ssd_step_ref(
    *,
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = True,
    dt_limit: tuple[float, float] = (0.0, math.inf),
) -> tuple[Tensor, Tensor]:
    """One step of the recurrence for decoding.

    Shapes: state (b h p n) fp32; x (b h p); dt (b h); B, C (b g n). Returns y (b h p) in x's dtype and the new
    state (b h p n) in fp32.
    """
    with torch.autocast(x.device.type, enabled=False):
        return _ssd_step(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit)


def _ssd_step(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit):
    nheads = x.shape[1]
    dt32 = discretize_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b h)
    x32 = x.float()
    B32 = heads_of_groups(B.float(), nheads)  # (b h n)
    C32 = heads_of_groups(C.float(), nheads)
    decay = torch.exp(dt32 * A.float())[:, :, None, None]  # (b h 1 1)
    h = decay * state.float() + (dt32[:, :, None] * x32)[..., None] * B32[:, :, None, :]  # (b h p n)
    y = torch.einsum("bhpn,bhn->bhp", h, C32)
    if D is not None:
        y = y + D.float()[:, None] * x32
    return y.to(x.dtype), h
