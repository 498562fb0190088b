"""The ops the models run, each dispatched to the implementation a `backend.Backend` names.

Which implementation runs is decided once, in `backend.Backend` (from ``model.scan_impl`` and the device); the model
holds that backend and passes it to every op here (``backend=``; a ``scan_impl`` name instead is resolved for the
input's device with the default kernel settings). Each op's interface is defined once (`interfaces`): keyword-only
arguments, shared by its reference, Triton (Gluon inside) and mamba_ssm implementations; the entry points here take
the same arguments, with ``backend`` in place of ``settings`` (the backend's kernel settings for the op are passed on).

- `selective_scan` / `selective_step`: Mamba-1's S6 scan and its decoding step (`scan_ref`, `scan_triton`,
  `scan_mamba_ssm`).
- `ssd_scan` / `ssd_step`: Mamba-2's state space dual scan and step (`ssd_ref`, `ssd_triton`).
- `conv_silu`: the mixers' causal depthwise conv + SiLU (`conv_ref`, `conv_triton`).
- `add_rms_norm`: the residual add + RMSNorm between blocks (`norm_ref`, `norm_triton`).
- `chunked_cross_entropy`: the LM head and token loss in chunks (`cross_entropy`, `cross_entropy_triton`).
"""

from __future__ import annotations

import math

from torch import Tensor

from stateft.ops.backend import HAS_MAMBA_SSM, HAS_TRITON, IMPLS, Backend, backend_for
from stateft.ops.cross_entropy import chunked_cross_entropy
from stateft.ops.interfaces import implementation
from stateft.ops.settings import DEFAULT_SETTINGS, KernelSettings
from stateft.ops.split_grad import SplitGrad


def selective_scan(
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
    backend: Backend | str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """`interfaces.SelectiveScan` on ``backend.scan``. u, delta, z (b d l); A (d n); B, C (b n l); D, delta_bias,
    y_offset (d,); h_offset (d n); initial_state (b d n). Returns y (b d l) and, if asked, the last state (b d n)."""
    backend = backend_for(backend, u)
    return implementation("scan", backend.scan)(
        u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        initial_state=initial_state, h_offset=h_offset, y_offset=y_offset, return_last_state=return_last_state,
        dz_into=dz_into, settings=backend.settings.scan,
    )  # fmt: skip


def selective_step(
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
    backend: Backend | str = "auto",
) -> tuple[Tensor, Tensor]:
    """`interfaces.SelectiveStep` on ``backend.scan_step``. state (b d n); u, delta, z (b d); B, C (b n). Returns
    y (b d), the new state (b d n)."""
    backend = backend_for(backend, u)
    return implementation("scan_step", backend.scan_step)(
        state=state, u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
        h_offset=h_offset, y_offset=y_offset,
    )  # fmt: skip


def ssd_scan(
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
    backend: Backend | str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """`interfaces.SSDScan` on ``backend.ssd``. x (b l h p); dt (b l h); A, D, dt_bias (h,); B, C (b l g n);
    initial_state (b h p n). Returns y (b l h p) and, if asked, the final state (b h p n) fp32."""
    backend = backend_for(backend, x)
    if backend.ssd is None:
        raise NotImplementedError(f"scan impl {backend.impl!r} is Mamba-1 only; use 'triton' or 'ref' for Mamba-2")
    return implementation("ssd", backend.ssd)(
        x=x, dt=dt, A=A, B=B, C=C, chunk_size=chunk_size, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus,
        dt_limit=dt_limit, initial_state=initial_state, return_final_state=return_final_state,
        settings=backend.settings.ssd,
    )  # fmt: skip


def ssd_step(
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
    backend: Backend | str = "auto",
) -> tuple[Tensor, Tensor]:
    """`interfaces.SSDStep` on ``backend.ssd_step``. state (b h p n); x (b h p); dt (b h); B, C (b g n). Returns
    y (b h p), the new state."""
    backend = backend_for(backend, x)
    return implementation("ssd_step", backend.ssd_step)(
        state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus, dt_limit=dt_limit
    )


def conv_silu(
    *,
    x: Tensor,
    window: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    channels_last_out: bool = False,
    dx_into: SplitGrad | None = None,
    two: bool = False,
    backend: Backend | str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """`interfaces.ConvSiLU` on ``backend.conv``: silu(causal depthwise conv of [window, x]), x (b c l) -> (b c l)."""
    backend = backend_for(backend, x)
    return implementation("conv", backend.conv)(
        x=x, window=window, weight=weight, bias=bias, channels_last_out=channels_last_out, dx_into=dx_into, two=two,
        settings=backend.settings.conv,
    )  # fmt: skip


def add_rms_norm(
    *,
    h: Tensor,
    y: Tensor | None,
    weight: Tensor,
    eps: float,
    backend: Backend | str = "auto",
) -> tuple[Tensor, Tensor]:
    """`interfaces.AddRMSNorm` on ``backend.norm``: (h + y, RMSNorm(h + y)), or (h, RMSNorm(h)) when ``y`` is None."""
    backend = backend_for(backend, h)
    return implementation("norm", backend.norm)(h=h, y=y, weight=weight, eps=eps, settings=backend.settings.norm)


__all__ = [
    "DEFAULT_SETTINGS",
    "HAS_MAMBA_SSM",
    "HAS_TRITON",
    "IMPLS",
    "Backend",
    "KernelSettings",
    "add_rms_norm",
    "chunked_cross_entropy",
    "conv_silu",
    "selective_scan",
    "selective_step",
    "ssd_scan",
    "ssd_step",
]
