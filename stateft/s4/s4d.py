"""The S4D layer (Gu et al., 2022, "On the Parameterization and Initialization of Diagonal State Space Models"), as
state-spaces' ``models/s4/s4d.py`` and the SDT code's ``load_s4.py`` write it.

Parameters per layer with H channels and state size N (M = N/2 complex modes, conjugate pairs):
``log_dt`` (H,), ``log_A_real`` (H, M) and ``A_imag`` (H, M) for A = -exp(log_A_real) + i A_imag, ``C`` (H, M, 2)
(real view of a complex (H, M)), ``D`` (H,). B is fixed to 1 (S4D folds it into C).

Two modes compute the same map u -> y (``stateft.s4.kernel`` has the math):
- ``forward``: convolution mode, y = K * u + D u with K from the Vandermonde product and the convolution by FFT
  (training, whole sequences);
- ``step``: recurrent mode, x_t = Abar x_{t-1} + Bbar u_t, y_t = 2 Re(C x_t) + D u_t, with the state x (B, H, M)
  complex (one complex state per channel and mode).

Init (``A_init``): ``s4d_lin`` (state-spaces' S4D-Lin: Re A = -1/2, Im A = pi n) or ``random`` (the SDT code's
synthetic models: Re A = -U(0, 1), Im A = pi * an integer in [0, M)); log_dt ~ U(log dt_min, log dt_max), C complex
standard normal, D standard normal. The SDT code's kernel holds N complex modes for ``d_state`` N where state-spaces
holds N/2; here d_state is always the real size N.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stateft.errors import UserError
from stateft.s4.fftconv import causal_conv_fft
from stateft.s4.kernel import discretize_zoh, vandermonde_kernel

A_INITS = ("s4d_lin", "random")


def check_sizes(d_model: int, d_state: int) -> None:
    """One-line errors for sizes the layer cannot take (d_state counts real states: an even number)."""
    if not isinstance(d_model, int) or d_model < 1:
        raise UserError(f"S4D d_model must be an integer >= 1, got {d_model!r}")
    if not isinstance(d_state, int) or d_state < 2 or d_state % 2:
        raise UserError(f"S4D d_state must be an even integer >= 2 (N/2 complex modes), got {d_state!r}")


class S4D(nn.Module):
    """Diagonal S4 SSM over H channels: (B, H, L) -> (B, H, L), or one step (B, H) -> (B, H) with a state."""

    def __init__(
        self, d_model: int, d_state: int = 64, dt_min: float = 0.001, dt_max: float = 0.1, A_init: str = "s4d_lin"
    ) -> None:
        super().__init__()
        check_sizes(d_model, d_state)
        if A_init not in A_INITS:
            raise UserError(f"unknown S4D A_init {A_init!r}; choose one of: {', '.join(A_INITS)}")
        if not 0 < dt_min <= dt_max:
            raise UserError(f"S4D needs 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        H, M = d_model, d_state // 2
        self.d_model, self.d_state = H, d_state
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        if A_init == "s4d_lin":
            log_A_real = torch.full((H, M), math.log(0.5))
            A_imag = math.pi * torch.arange(M, dtype=torch.float32).expand(H, M).clone()
        else:
            log_A_real = torch.log(torch.rand(H, M))
            A_imag = math.pi * torch.randint(0, M, (H, M)).float()
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(log_A_real)
        self.A_imag = nn.Parameter(A_imag)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(H, M, dtype=torch.cfloat)).clone())
        self.D = nn.Parameter(torch.randn(H))

    @property
    def n_modes(self) -> int:
        """M = N/2, the complex modes per channel."""
        return self.d_state // 2

    def discretized(self) -> tuple[Tensor, Tensor, Tensor]:
        """(dt A, Bbar, C) (H, M) complex, from the current parameters (deltas included)."""
        dtA, Bbar = discretize_zoh(self.log_dt, self.log_A_real, self.A_imag)
        return dtA, Bbar, torch.view_as_complex(self.C)

    def kernel(self, L: int) -> Tensor:
        """K (H, L): 2 Re(sum_n C Bbar Abar^l)."""
        dtA, Bbar, C = self.discretized()
        return vandermonde_kernel(C, dtA, Bbar, L)

    def forward(self, u: Tensor) -> Tensor:
        """Convolution mode: u (B, H, L) -> y = K * u + D u (B, H, L)."""
        if u.dim() != 3 or u.shape[1] != self.d_model:
            raise ValueError(f"S4D expects input (batch, {self.d_model}, length), got {tuple(u.shape)}")
        return causal_conv_fft(u, self.kernel(u.shape[-1])) + u * self.D.unsqueeze(-1)

    def initial_state(self, batch: int) -> Tensor:
        """x_0 = 0, (B, H, M) complex in the parameters' dtype."""
        dtype = torch.complex128 if self.log_dt.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.n_modes, dtype=dtype, device=self.log_dt.device)

    def step(self, u_t: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Recurrent mode, one position: u_t (B, H), state (B, H, M) -> (y_t (B, H), next state)."""
        dtA, Bbar, C = self.discretized()
        state = torch.exp(dtA) * state + Bbar * u_t.unsqueeze(-1)
        y = 2 * (C * state).sum(-1).real + self.D * u_t
        return y, state
