"""Optional backend: mamba_ssm's CUDA selective-scan kernel (``scan_impl: mamba_ssm``), for users who have it.

The kernel knows neither an initial state nor the state/output offsets, so they are added around it in PyTorch, the
way the State-offset reference code did (differentiable through autograd):

    y  += silu(z) * (einsum(C, h') + y')                             offsets, outside the recurrence
    y  += silu(z) * sum_n C_t[n] exp(A[n] cumsum(delta)_t) h_0[n]     initial state: materialises (b d n l)
    h_L += exp(A sum(delta)) h_0

The initial-state term holds a (b d n l) fp32 tensor per layer; use the Triton path for init_state training.
mamba_ssm's kernel gives no gradient through the returned last state (it is for prefill), so neither does this path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stateft.ops.settings import DEFAULT_SETTINGS, ScanSettings
from stateft.ops.split_grad import SplitGrad


def selective_scan_mamba_ssm(
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
    """Selective scan on mamba_ssm's kernel (`interfaces.SelectiveScan`; ``dz_into`` and ``settings`` unused)."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    A32 = A.float()
    D32 = None if D is None else D.float()
    bias32 = None if delta_bias is None else delta_bias.float()
    out = selective_scan_fn(
        u, delta, A32, B, C, D32, z=z, delta_bias=bias32, delta_softplus=delta_softplus,
        return_last_state=return_last_state,
    )  # fmt: skip
    y, last = out if return_last_state else (out, None)
    if initial_state is None and h_offset is None and y_offset is None:
        return out
    extra = torch.zeros((), device=u.device, dtype=torch.float32)
    if h_offset is not None:
        extra = extra + torch.einsum("bnl,dn->bdl", C.float(), h_offset.float())
    if y_offset is not None:
        extra = extra + y_offset.float()[:, None]
    if initial_state is not None:
        dt = delta.float() + (0.0 if bias32 is None else bias32[:, None])
        dt = F.softplus(dt) if delta_softplus else dt
        decay = torch.exp(A32[None, :, :, None] * dt.cumsum(-1)[:, :, None, :])  # (b d n l)
        h0 = initial_state.float()
        extra = extra + torch.einsum("bnl,bdnl,bdn->bdl", C.float(), decay, h0)
        if last is not None:
            last = last + decay[..., -1] * h0
    if z is not None:
        extra = extra * F.silu(z.float())
    y = (y.float() + extra).to(y.dtype)
    return (y, last) if return_last_state else y
