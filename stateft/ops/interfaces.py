"""Each op's interface, defined once, and its implementations by name.

An op is a `typing.Protocol` whose ``__call__`` is the signature every implementation has, parameter for parameter:
keyword-only (a reordered parameter cannot route a value to the wrong name), the same names, defaults and types.
``settings`` is the op's part of `settings.KernelSettings`; an implementation without kernels takes it and ignores it
(and ``dz_into`` / ``dx_into``: a path that cannot write into the shared gradient returns its own, which
`split_grad` copies into place). tests/ops/test_interfaces.py compares every implementation's signature with its op's.

`IMPLEMENTATIONS` maps each `backend.Backend` field to its op and its implementations ("module:function", imported
when first used: the Triton modules need triton); `implementation` gives the function a backend names.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Protocol

from torch import Tensor

from stateft.ops.settings import (
    DEFAULT_SETTINGS,
    ConvSettings,
    CrossEntropySettings,
    NormSettings,
    ScanSettings,
    SSDSettings,
)
from stateft.ops.split_grad import SplitGrad


class SelectiveScan(Protocol):
    """Mamba-1's selective scan. u, delta, z (b d l); A (d n); B, C (b n l); D, delta_bias, y_offset (d,); h_offset
    (d n); initial_state (b d n). Returns y (b d l) in u's dtype and, if ``return_last_state``, the last state (b d n)
    fp32. ``dz_into``: z is half 1 of a `split_grad.split_halves`, its gradient may be written there."""

    def __call__(
        self,
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
    ) -> Tensor | tuple[Tensor, Tensor]: ...


class SelectiveStep(Protocol):
    """One decoding step of the selective scan. state (b d n) fp32; u, delta, z (b d); B, C (b n). Returns y (b d) in
    u's dtype and the new state (b d n) fp32 (without h', which enters the read-out only)."""

    def __call__(
        self,
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
    ) -> tuple[Tensor, Tensor]: ...


class SSDScan(Protocol):
    """Mamba-2's SSD scan. x (b l h p); dt (b l h); A, D, dt_bias (h,); B, C (b l g n); initial_state (b h p n).
    Returns y (b l h p) in x's dtype and, if ``return_final_state``, the final state (b h p n) fp32. ``chunk_size``
    changes rounding only."""

    def __call__(
        self,
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
    ) -> Tensor | tuple[Tensor, Tensor]: ...


class SSDStep(Protocol):
    """One Mamba-2 decoding step. state (b h p n) fp32; x (b h p); dt (b h); B, C (b g n). Returns y (b h p) in x's
    dtype and the new state (b h p n) fp32."""

    def __call__(
        self,
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
    ) -> tuple[Tensor, Tensor]: ...


class ConvSiLU(Protocol):
    """silu(causal depthwise conv1d of [window, x]): x (b c l), window (b c K-1) or None (zeros), weight (c, 1, K) or
    (c, K), bias (c,) or None -> u (b c l) in x's dtype, laid out (b l c)-major if ``channels_last_out``. ``dx_into``:
    x is half 0 of a `split_grad.split_halves`, its gradient may be written there. ``two``: u twice (two consumers)."""

    def __call__(
        self,
        *,
        x: Tensor,
        window: Tensor | None,
        weight: Tensor,
        bias: Tensor | None,
        channels_last_out: bool = False,
        dx_into: SplitGrad | None = None,
        two: bool = False,
        settings: ConvSettings = DEFAULT_SETTINGS.conv,
    ) -> Tensor | tuple[Tensor, Tensor]: ...


class AddRMSNorm(Protocol):
    """The residual stream between blocks: (h + y, RMSNorm(h + y)), or (h, RMSNorm(h)) when ``y`` is None. h fp32
    (... d); the normalised output in ``weight``'s dtype (the normalised row cast to it before the weight
    multiplies)."""

    def __call__(
        self,
        *,
        h: Tensor,
        y: Tensor | None,
        weight: Tensor,
        eps: float,
        settings: NormSettings = DEFAULT_SETTINGS.norm,
    ) -> tuple[Tensor, Tensor]: ...


class ChunkLoss(Protocol):
    """One chunk of the LM loss (`cross_entropy.chunked_cross_entropy`): h (t d), weight (V d), labels (t,) -> the
    summed loss over the tokens whose label is not ``ignore_index`` (fp32), and with ``want_grad`` d(sum)/dh (t d) and
    d(sum)/dweight (V d; None if the weight is frozen), else None, None."""

    def __call__(
        self,
        *,
        h: Tensor,
        weight: Tensor,
        labels: Tensor,
        ignore_index: int,
        want_grad: bool,
        settings: CrossEntropySettings = DEFAULT_SETTINGS.cross_entropy,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]: ...


# Backend field -> (its op, {implementation name: "module:function"})
IMPLEMENTATIONS: dict[str, tuple[type, dict[str, str]]] = {
    "scan": (
        SelectiveScan,
        {
            "ref": "stateft.ops.scan_ref:selective_scan_ref",
            "triton": "stateft.ops.scan_triton:selective_scan_triton",
            "mamba_ssm": "stateft.ops.scan_mamba_ssm:selective_scan_mamba_ssm",
        },
    ),
    "scan_step": (SelectiveStep, {"ref": "stateft.ops.scan_ref:selective_step_ref"}),
    "ssd": (
        SSDScan,
        {"ref": "stateft.ops.ssd_ref:ssd_scan_ref", "triton": "stateft.ops.ssd_triton:ssd_scan_triton"},
    ),
    "ssd_step": (SSDStep, {"ref": "stateft.ops.ssd_ref:ssd_step_ref"}),
    "conv": (
        ConvSiLU,
        {"ref": "stateft.ops.conv_ref:conv_silu_ref", "triton": "stateft.ops.conv_triton:conv_silu_triton"},
    ),
    "norm": (
        AddRMSNorm,
        {"ref": "stateft.ops.norm_ref:add_rms_norm_ref", "triton": "stateft.ops.norm_triton:add_rms_norm_triton"},
    ),
    "cross_entropy": (
        ChunkLoss,
        {
            "ref": "stateft.ops.cross_entropy:chunk_loss_ref",
            "triton": "stateft.ops.cross_entropy_triton:chunk_loss_triton",
        },
    ),
}


def implementation(op: str, name: str) -> Callable:
    """The function implementing ``op`` (a `Backend` field) as ``name`` (what the backend names for it)."""
    path = IMPLEMENTATIONS[op][1].get(name)
    if path is None:
        raise ValueError(f"no {name!r} implementation of {op}; there are: {', '.join(IMPLEMENTATIONS[op][1])}")
    module, function = path.split(":")
    return getattr(importlib.import_module(module), function)
