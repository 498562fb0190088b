"""Reference selective scan (Mamba-1 S6) in plain PyTorch: a readable loop over the sequence, fp32 accumulation.

This is the ground truth every fast path is tested against. The recurrence, per channel d and state n:

    delta_t = softplus(delta_t + delta_bias)                         (if delta_softplus)
    h_t     = exp(delta_t A) * h_{t-1} + delta_t B_t u_t             h_0 = initial_state (or 0)
    y_t     = (C_t (h_t + h') + D u_t + y') * silu(z_t)              h' = h_offset, y' = y_offset

h' and y' are State-offset Tuning's offsets (Kang et al., 2025): they enter the output, never the recurrence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, ScanSettings
from stateft.ops.split_grad import SplitGrad


def _discretize(u: Tensor, delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _readout(
    h: Tensor,
    C_t: Tensor,
    u_t: Tensor,
    z_t: Tensor | None,
    D: Tensor | None,
    h_offset: Tensor | None,
    y_offset: Tensor | None,
) -> Tensor:
    """One step's output. h: (b d n); C_t: (b n); u_t, z_t: (b d); returns (b d) fp32."""
    if h_offset is not None:
        h = h + h_offset.float()
    y = torch.einsum("bdn,bn->bd", h, C_t)
    if D is not None:
        y = y + D.float() * u_t
    if y_offset is not None:
        y = y + y_offset.float()
    if z_t is not None:
        y = y * F.silu(z_t)
    return y


def selective_scan_ref(
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
    """Sequential selective scan (`interfaces.SelectiveScan`; no kernels: ``dz_into`` and ``settings`` unused).

    Shapes: u, delta, z (b d l); A (d n); B, C (b n l); D, delta_bias, y_offset (d,); h_offset (d n);
    initial_state (b d n). Returns y (b d l) in u's dtype and, if asked, the last state (b d n) in fp32.
    """
    in_dtype = u.dtype
    b, d, length = u.shape
    n = A.shape[1]
    u32 = u.float()
    delta32 = _discretize(u, delta, delta_bias, delta_softplus)  # (b d l)
    A32 = A.float()
    B32, C32 = B.float(), C.float()
    z32 = None if z is None else z.float()
    if initial_state is None:
        h = u32.new_zeros(b, d, n)
    else:
        h = initial_state.float().expand(b, d, n)
    ys = []
    for t in range(length):
        dA = torch.exp(delta32[:, :, t, None] * A32)  # (b d n)
        dBu = (delta32[:, :, t] * u32[:, :, t])[:, :, None] * B32[:, None, :, t]  # (b d n)
        h = dA * h + dBu
        z_t = None if z32 is None else z32[:, :, t]
        ys.append(_readout(h, C32[:, :, t], u32[:, :, t], z_t, D, h_offset, y_offset))
    y = torch.stack(ys, dim=-1) if ys else u32.new_zeros(b, d, 0)
    y = y.to(in_dtype)
    if return_last_state:
        return y, h.contiguous()
    return y


def selective_step_ref(
    *,
    state: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    h_offset: Tensor | None = None,
    y_offset: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One step of the recurrence for decoding.

    Shapes: state (b d n) fp32; u, delta, z (b d); B, C (b n). Returns y (b d) in u's dtype and the new state (b d n).
    The cached state never holds h' (it is added at read-out only).
    """
    delta32 = _discretize(u, delta[..., None], delta_bias, delta_softplus)[..., 0]  # (b d)
    u32 = u.float()
    dA = torch.exp(delta32[:, :, None] * A.float())
    h = dA * state.float() + (delta32 * u32)[:, :, None] * B.float()[:, None, :]
    z32 = None if z is None else z.float()
    y = _readout(h, C.float(), u32, z32, D, h_offset, y_offset)
    return y.to(u.dtype), h
