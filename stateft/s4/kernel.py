"""The S4D convolution kernel: ZOH discretisation of a diagonal complex SSM and the Vandermonde product.

Per channel h and complex mode n (state-spaces' ``s4d.py``; the state size N is real, the M = N/2 complex modes
stand for conjugate pairs, hence the factor 2 Re):
    x'(t) = A x(t) + B u(t),  y(t) = 2 Re(C x(t)) + D u(t),  A = -exp(log_A_real) + i A_imag,  B = 1,
    ZOH with step dt = exp(log_dt):  Abar = exp(dt A),  Bbar = (exp(dt A) - 1) / A,
    K[h, l] = 2 Re( sum_n C[h, n] Bbar[h, n] Abar[h, n]^l ),  l = 0 .. L-1.
``vandermonde_kernel`` evaluates Abar^l as exp(dt A l) for all l at once (the Vandermonde matrix); its twin
``vandermonde_kernel_ref`` multiplies by Abar step by step, as the recurrence does.
"""

from __future__ import annotations

import torch
from torch import Tensor


def complex_A(log_A_real: Tensor, A_imag: Tensor) -> Tensor:
    """A = -exp(log_A_real) + i A_imag (H, M): the real part is negative by construction, so the SSM is stable."""
    return torch.complex(-torch.exp(log_A_real), A_imag)


def discretize_zoh(log_dt: Tensor, log_A_real: Tensor, A_imag: Tensor) -> tuple[Tensor, Tensor]:
    """(dt A, Bbar) of the zero-order hold, both (H, M) complex: dt A = exp(log_dt) A, Bbar = (exp(dt A) - 1) / A."""
    A = complex_A(log_A_real, A_imag)
    dtA = A * torch.exp(log_dt).unsqueeze(-1)
    return dtA, torch.expm1(dtA) / A


def vandermonde_kernel(C: Tensor, dtA: Tensor, Bbar: Tensor, L: int) -> Tensor:
    """K (H, L) real: 2 Re(sum_n C Bbar exp(dtA l)), the Vandermonde matrix exp(dtA l) built for all l at once."""
    steps = torch.arange(L, device=dtA.device, dtype=dtA.real.dtype)
    vandermonde = torch.exp(dtA.unsqueeze(-1) * steps)  # (H, M, L)
    return 2 * torch.einsum("hn,hnl->hl", C * Bbar, vandermonde).real


def vandermonde_kernel_ref(C: Tensor, dtA: Tensor, Bbar: Tensor, L: int) -> Tensor:
    """The twin of ``vandermonde_kernel``: Abar^l by repeated multiplication (the recurrence's powers), one l at a
    time."""
    Abar = torch.exp(dtA)
    power = torch.ones_like(Abar)
    columns = []
    for _ in range(L):
        columns.append(2 * (C * Bbar * power).sum(-1).real)
        power = power * Abar
    return torch.stack(columns, dim=-1)
