"""The one place a selective-scan implementation is chosen.

Implementations share one signature (see `scan_ref.selective_scan_ref`):
- ``ref``: the sequential PyTorch reference (any device, fp32 accumulation).
- ``triton``: fused Triton forward/backward (CUDA; on CPU only under ``TRITON_INTERPRET=1``).
- ``mamba_ssm``: mamba_ssm's CUDA kernel, when that package is installed (optional, never a dependency).
- ``auto``: ``triton`` on CUDA tensors when available, else ``ref``.

Mamba-2's state space dual scan has the same convention: `ssd_scan` / `ssd_step` (``ref``: `ssd_ref`, chunked,
with initial state in and final state out; ``triton``: `ssd_triton`).

Model code calls `selective_scan` / `selective_step` (`ssd_scan` / `ssd_step`) and never looks at which
implementation ran; `resolve_impl` tells (it is logged at start-up).
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from typing import Literal

from torch import Tensor

from stateft.ops.scan_ref import selective_scan_ref, selective_step_ref
from stateft.ops.split_grad import SplitGrad
from stateft.ops.ssd_ref import ssd_scan_ref, ssd_step_ref

Impl = Literal["auto", "ref", "triton", "mamba_ssm"]
IMPLS: tuple[str, ...] = ("auto", "ref", "triton", "mamba_ssm")

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_MAMBA_SSM = importlib.util.find_spec("selective_scan_cuda") is not None

_override_impl: str | None = None  # tests set this to force an implementation everywhere
_warned: set[str] = set()


def _triton_usable(u: Tensor) -> bool:
    return HAS_TRITON and (u.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def resolve_impl(impl: str, u: Tensor) -> str:
    """Which implementation `selective_scan(..., impl=impl)` runs for tensors like ``u``."""
    impl = _override_impl or impl
    if impl not in IMPLS:
        raise ValueError(f"unknown scan impl {impl!r}; choose one of {', '.join(IMPLS)}")
    if impl == "auto":
        if u.is_cuda and HAS_TRITON:
            return "triton"
        if u.is_cuda and "auto" not in _warned:
            _warned.add("auto")
            warnings.warn("triton is not installed: using the slow reference scan (pip install triton)", stacklevel=3)
        return "ref"
    if impl == "triton" and not _triton_usable(u):
        raise RuntimeError(
            "scan impl 'triton' needs triton and a CUDA tensor (or TRITON_INTERPRET=1 on CPU): "
            "pip install triton, or set model.scan_impl=ref"
        )
    if impl == "mamba_ssm" and not (HAS_MAMBA_SSM and u.is_cuda):
        raise RuntimeError(
            "scan impl 'mamba_ssm' needs mamba-ssm's CUDA build and a CUDA tensor: "
            "pip install mamba-ssm --no-build-isolation, or set model.scan_impl=auto"
        )
    return impl


def selective_scan(
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
    impl: Impl = "auto",
    dz_into: SplitGrad | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan. u, delta, z: (b d l); A: (d n); B, C: (b n l); D, delta_bias, y_offset: (d,);
    h_offset: (d n); initial_state: (b d n). Returns y (b d l) and, if asked, the last state (b d n).
    ``dz_into``: z is half 1 of a `split_grad.split_halves`; the Triton scan writes z's gradient there (the others
    return their own, which the split copies into place)."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, h_offset, y_offset, return_last_state)
    chosen = resolve_impl(impl, u)
    if chosen == "triton":
        from stateft.ops.scan_triton import selective_scan_triton

        return selective_scan_triton(*args, dz_into=dz_into)
    if chosen == "mamba_ssm":
        from stateft.ops.scan_mamba_ssm import selective_scan_mamba_ssm

        return selective_scan_mamba_ssm(*args)
    return selective_scan_ref(*args)


def selective_step(
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
    """One decoding step. state (b d n); u, delta, z (b d); B, C (b n). Returns y (b d), new state (b d n)."""
    return selective_step_ref(state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, h_offset, y_offset)


# -- Mamba-2: the state space dual (SSD) scan -------------------------------------------------------------------
def ssd_scan(
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
    impl: Impl = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-2 SSD scan. x (b l h p); dt (b l h); A, D, dt_bias (h,); B, C (b l g n); initial_state (b h p n).
    Returns y (b l h p) and, if asked, the final state (b h p n) fp32. ``chunk_size`` only changes rounding."""
    args = (x, dt, A, B, C, chunk_size, D, dt_bias, dt_softplus, dt_limit, initial_state, return_final_state)
    chosen = resolve_impl(impl, x)
    if chosen == "triton":
        from stateft.ops.ssd_triton import ssd_scan_triton

        return ssd_scan_triton(*args)
    if chosen == "mamba_ssm":
        raise NotImplementedError("scan impl 'mamba_ssm' is Mamba-1 only; use impl 'triton' or 'ref' for Mamba-2")
    return ssd_scan_ref(*args)


def ssd_step(
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
    """One Mamba-2 decoding step. state (b h p n); x (b h p); dt (b h); B, C (b g n). Returns y (b h p), new state."""
    return ssd_step_ref(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit)


__all__ = ["IMPLS", "Impl", "resolve_impl", "selective_scan", "selective_step", "ssd_scan", "ssd_step"]
