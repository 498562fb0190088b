"""The S4 layer with a diagonal plus low-rank (DPLR) state matrix (Gu et al., 2022, "Efficiently Modeling Long
Sequences with Structured State Spaces"; state-spaces' ``models/s4/s4.py``, kernel ``dplr``, rank 1).

Per channel, M complex modes standing for conjugate pairs (output 2 Re, as ``stateft.s4.s4d``):
    x'(t) = A x(t) + B u(t),  y(t) = 2 Re(C x(t)) + D u(t),  A = diag(Lambda) - P P^*,
    Lambda = -exp(log_A_real) + i A_imag,  bilinear discretisation with step dt = exp(log_dt):
    Abar = (I - dt/2 A)^-1 (I + dt/2 A),  Bbar = (I - dt/2 A)^-1 dt B,  K[l] = 2 Re(C Abar^l Bbar).
Init: HiPPO-LegS in its normal plus low-rank form (state-spaces' ``nplr('legs')``): A_legs + P P^T is normal with
eigenvalues -1/2 + i w; its eigenvectors V turn P and B into V^* P, V^* B; the half of the spectrum with w > 0 is
kept. C is complex standard normal, D standard normal, log_dt ~ U(log dt_min, log dt_max).

Two kernels (``kernel``; ``kernel_dense`` is its twin):
- the training path (S4's Algorithm 1): the truncated generating function at the L-th roots of unity w,
  Khat(w) = C~ (I - Abar w)^-1 Bbar with C~ = C (I - Abar^L), is 2/(1+w) [k00 - k01 (1 + k11)^-1 k10] with the
  Cauchy sums k_ab = sum_n a_n b_n / (g(w) - Lambda_n), g(w) = 2/dt (1-w)/(1+w) (Woodbury for the rank-1 term),
  and dt/2 C~ B at w = -1; an inverse FFT gives the kernel;
- the twin: the dense Abar and Bbar, Abar^l by repeated multiplication, as the recurrence runs.
``step`` is the recurrence with the dense Abar and Bbar. Abar^L (for C~) is a dense matrix power per channel: the
layer is meant for small state sizes (state-spaces stores C~ instead and avoids it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stateft.s4.fftconv import causal_conv_fft
from stateft.s4.s4d import check_sizes


def legs_nplr(N: int) -> tuple[Tensor, Tensor, Tensor]:
    """(Lambda, P, B) (M,) complex each, M = N/2: HiPPO-LegS diagonalised in its normal part, half the spectrum."""
    q = torch.arange(N, dtype=torch.float64)
    r = (2 * q + 1).sqrt()
    A = -(r[:, None] * r[None, :]) * (q[:, None] > q[None, :])  # -sqrt(2n+1) sqrt(2k+1) below the diagonal
    A = A - torch.diag(q + 1)
    P = (q + 0.5).sqrt()
    B = r.clone()
    S = A + P[:, None] * P[None, :]  # normal: -1/2 I + a skew-symmetric matrix
    w, V = torch.linalg.eig(S)
    half = torch.argsort(w.imag, descending=True)[: N // 2]  # the modes with Im > 0 (conjugate pairs dropped)
    V = V[:, half]
    Vh = V.conj().T
    return w[half], Vh @ P.to(V.dtype), Vh @ B.to(V.dtype)


def dense_A(Lambda: Tensor, P: Tensor) -> Tensor:
    """A = diag(Lambda) - P P^* (H, M, M) from Lambda and P (H, M)."""
    return torch.diag_embed(Lambda) - P.unsqueeze(-1) * P.conj().unsqueeze(-2)


def bilinear(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """(Abar (H, M, M), Bbar (H, M)) of the bilinear (Tustin) discretisation."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    half = (dt / 2).to(A.dtype)[:, None, None]
    left = eye - half * A
    Abar = torch.linalg.solve(left, eye + half * A)
    Bbar = torch.linalg.solve(left, (dt.to(A.dtype)[:, None] * B).unsqueeze(-1)).squeeze(-1)
    return Abar, Bbar


def kernel_cauchy(Lambda: Tensor, P: Tensor, B: Tensor, C_tilde: Tensor, dt: Tensor, L: int) -> Tensor:
    """K (H, L) real from the generating function at the L-th roots of unity (module docstring)."""
    k = torch.arange(L, device=Lambda.device, dtype=dt.dtype)
    omega = torch.exp(torch.complex(torch.zeros_like(k), -2 * math.pi * k / L))  # (L,)
    at_minus_one = (omega + 1).abs() < 1e-6
    safe = torch.where(at_minus_one, torch.zeros_like(omega), omega)  # keeps 1/(1+w) finite where it is masked
    g = (2 / dt)[:, None] * (1 - safe) / (1 + safe)  # (H, L)
    R = 1 / (g.unsqueeze(-1) - Lambda.unsqueeze(1))  # (H, L, M)

    def cauchy(a: Tensor, b: Tensor) -> Tensor:
        return torch.einsum("hn,hln->hl", a * b, R)

    k00, k01 = cauchy(C_tilde, B), cauchy(C_tilde, P)
    k10, k11 = cauchy(P.conj(), B), cauchy(P.conj(), P)
    Khat = 2 / (1 + safe) * (k00 - k01 * k10 / (1 + k11))
    Khat = torch.where(at_minus_one, (dt[:, None] / 2) * (C_tilde * B).sum(-1, keepdim=True), Khat)
    return 2 * torch.fft.ifft(Khat, n=L, dim=-1).real


def kernel_dense(C: Tensor, Abar: Tensor, Bbar: Tensor, L: int) -> Tensor:
    """The twin: K[l] = 2 Re(C Abar^l Bbar), Abar^l Bbar by repeated multiplication."""
    x, columns = Bbar, []
    for _ in range(L):
        columns.append(2 * (C * x).sum(-1).real)
        x = (Abar @ x.unsqueeze(-1)).squeeze(-1)
    return torch.stack(columns, dim=-1)


class S4DPLR(nn.Module):
    """DPLR S4 SSM over H channels: (B, H, L) -> (B, H, L), or one step with a state (B, H, M) complex."""

    def __init__(self, d_model: int, d_state: int = 64, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__()
        check_sizes(d_model, d_state)
        H, M = d_model, d_state // 2
        self.d_model, self.d_state = H, d_state
        Lambda, P, B = legs_nplr(d_state)
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_A_real = nn.Parameter(torch.log(-Lambda.real).float().expand(H, M).clone())
        self.A_imag = nn.Parameter(Lambda.imag.float().expand(H, M).clone())
        self.P = nn.Parameter(torch.view_as_real(P.to(torch.cfloat).expand(H, M).clone()).clone())
        self.B = nn.Parameter(torch.view_as_real(B.to(torch.cfloat).expand(H, M).clone()).clone())
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, M, dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(H))

    @property
    def n_modes(self) -> int:
        return self.d_state // 2

    def tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(Lambda, P, B, C) (H, M) complex and dt (H,), from the current parameters (deltas included)."""
        Lambda = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        as_complex = [torch.view_as_complex(t.contiguous()) for t in (self.P, self.B, self.C)]
        return Lambda, *as_complex, torch.exp(self.log_dt)

    def discretized(self) -> tuple[Tensor, Tensor, Tensor]:
        """(Abar (H, M, M), Bbar (H, M), C (H, M))."""
        Lambda, P, B, C, dt = self.tables()
        Abar, Bbar = bilinear(dense_A(Lambda, P), B, dt)
        return Abar, Bbar, C

    def kernel(self, L: int) -> Tensor:
        """K (H, L) by the Cauchy / generating-function path."""
        Lambda, P, B, C, dt = self.tables()
        Abar, _ = bilinear(dense_A(Lambda, P), B, dt)
        C_tilde = C - (C.unsqueeze(-2) @ torch.linalg.matrix_power(Abar, L)).squeeze(-2)
        return kernel_cauchy(Lambda, P, B, C_tilde, dt, L)

    def kernel_dense(self, L: int) -> Tensor:
        Abar, Bbar, C = self.discretized()
        return kernel_dense(C, Abar, Bbar, L)

    def forward(self, u: Tensor) -> Tensor:
        if u.dim() != 3 or u.shape[1] != self.d_model:
            raise ValueError(f"S4DPLR expects input (batch, {self.d_model}, length), got {tuple(u.shape)}")
        return causal_conv_fft(u, self.kernel(u.shape[-1])) + u * self.D.unsqueeze(-1)

    def initial_state(self, batch: int) -> Tensor:
        dtype = torch.complex128 if self.log_dt.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.n_modes, dtype=dtype, device=self.log_dt.device)

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re(C x_t) + D u_t."""
        Abar, Bbar, C = self.discretized()
        state = torch.einsum("hmn,bhn->bhm", Abar, state) + Bbar * u_t.unsqueeze(-1)
        return 2 * (C * state).sum(-1).real + self.D * u_t, state
