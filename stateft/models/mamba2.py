"""Mamba-2 mixer (SSD) with explicit adapter slots, beside the Mamba-1 one and sharing its LM shell.

    z, xBC, dt = split(in_proj(h))                 # (b l E), (b l E+2GN), (b l H)
    x, B, C = split(silu(conv1d(xBC)))             # depthwise causal conv over x, B and C together
    y = ssd(x, dt, A=-exp(A_log), B, C, D)         # heads of size P, scalar A per head, B/C shared per group
    y = RMSNorm_gated(y, z); out = out_proj(y)     # per-group RMSNorm of y * silu(z)

Slots (``None`` unless a PEFT method fills them; methods never subclass the mixer):
- ``init_state``: module with ``h0`` (H, P, N) and optionally ``conv`` (E+2GN, K-1): the starting SSM and conv state,
  passed to the chunked scan as its initial state (so dL/dh0 comes out of the scan's backward).
- ``state_offset``: module with ``h_prime() -> (H, P, N) | None`` and ``y_prime() -> (E,) | None``, added to the
  scan output before the gated norm: y[b,l,h,p] += sum_n C[b,l,g(h),n] h'[h,p,n]; y += y'. The cache never holds h'.
  They may also come one per row, (b, H, P, N) and (b, E): a batch whose rows use different adapters
  (`stateft.serve`, which gives per-row offsets to ``step`` only).
- ``extra_states``: module with ``W_B`` (G n, E) and ``W_C`` (G n, E): n more states per group. Their B and C rows
  are read from the conv output x (``W_B x``, ``W_C x``, appended to each group's B and C) and they decay with their
  head's A and dt, so the scan is SSD over N+n states and the cache holds (H, P, N+n).
- the linears (``in_proj``, ``out_proj``) are called as modules, so wrappers (LoRA) run: this model has no fused
  path that reads ``out_proj.weight`` directly (mamba_ssm's mem-efficient path does, and skips wrappers).
A prefix (Mamba-1's ``prefix``) has no Mamba-2 slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stateft.models.cache import LayerCache
from stateft.models.config import MambaConfig
from stateft.models.conv import conv_silu, conv_start, next_window, past_the_end
from stateft.models.init import dt_bias_init
from stateft.ops import ssd_scan, ssd_step
from stateft.ops.backend import Backend

A_INIT_RANGE = (1.0, 16.0)  # mamba_ssm's Mamba2 default: A_h = -uniform(1, 16) at random init


class GatedRMSNorm(nn.Module):
    """mamba_ssm's ``RMSNormGated``: RMSNorm over groups of ``group_size`` channels, gated by silu(z).

    norm_before_gate=False: weight * norm(y * silu(z)); True: weight * norm(y) * silu(z). Computed in fp32.
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5, norm_before_gate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size, self.eps, self.norm_before_gate = group_size, eps, norm_before_gate

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        dtype = y.dtype
        y32, gate = y.float(), F.silu(z.float())
        if not self.norm_before_gate:
            y32 = y32 * gate
        groups = y32.unflatten(-1, (-1, self.group_size))  # (..., G, E/G)
        y32 = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        if self.norm_before_gate:
            y32 = y32 * gate
        return self.weight * y32.to(dtype)


class Mamba2Mixer(nn.Module):
    """One Mamba-2 mixer: (b l d) -> (b l d)."""

    def __init__(self, config: MambaConfig, backend: Backend) -> None:
        super().__init__()
        d, E, N, K, P, G = config.d_model, config.d_inner, config.d_state, config.d_conv, config.headdim, config.ngroups
        if E % P or (E // P) % G:
            raise ValueError(f"d_inner {E} must split into heads of headdim {P}, and the heads into {G} groups")
        H = E // P
        self.d_model, self.d_inner, self.d_state, self.d_conv = d, E, N, K
        self.nheads, self.headdim, self.ngroups = H, P, G
        self.conv_channels = E + 2 * G * N  # the conv runs over x, B and C
        self.chunk_size, self.dt_limit = config.chunk_size, tuple(config.dt_limit)
        self.backend = backend  # which implementation each op runs (set by the model: `MambaLM.set_backend`)
        self.in_proj = nn.Linear(d, 2 * E + 2 * G * N + H, bias=config.bias)  # [z, x, B, C, dt]
        self.conv1d = nn.Conv1d(
            self.conv_channels, self.conv_channels, K, groups=self.conv_channels, bias=config.conv_bias
        )  # applied causally in forward
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.A_log = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = GatedRMSNorm(E, E // G, config.rms_norm_eps, config.norm_before_gate) if config.rmsnorm else None
        self.out_proj = nn.Linear(E, d, bias=config.bias)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        # adapter slots
        self.init_state: nn.Module | None = None
        self.state_offset: nn.Module | None = None
        self.extra_states: nn.Module | None = None
        self._config = config

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """Shape of one sequence's SSM state: (H, P, N)."""
        return (self.nheads, self.headdim, self.d_state)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba_ssm's Mamba2 random init: A_h = -uniform(1, 16), D = 1, dt log-uniform in [dt_min, dt_max]."""
        c = self._config
        for module in (self.in_proj, self.conv1d, self.out_proj):
            module.reset_parameters()
        self.dt_bias.copy_(dt_bias_init(self.nheads, c.dt_min, c.dt_max, c.dt_init_floor))
        self.A_log.copy_(torch.log(torch.empty(self.nheads).uniform_(*A_INIT_RANGE)))
        self.D.fill_(1.0)
        if self.norm is not None:
            self.norm.weight.fill_(1.0)

    # -- pieces shared by the parallel and the recurrent path -------------------------------------------------
    def _split_xbc(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., E+2GN) -> x (..., H, P), B (..., G, N), C (..., G, N)."""
        E, GN = self.d_inner, self.ngroups * self.d_state
        x, B, C = xbc.split([E, GN, GN], dim=-1)
        return (
            x.unflatten(-1, (self.nheads, self.headdim)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
        )

    def _n_states(self) -> int:
        """States per head the scan runs over: N, plus the ``extra_states`` slot's n per group."""
        extra = 0 if self.extra_states is None else self.extra_states.W_B.shape[0] // self.ngroups
        return self.d_state + extra

    def _scan_bc(self, x: Tensor, B: Tensor, C: Tensor) -> tuple[Tensor, Tensor]:
        """B, C (..., G, N) -> what the scan reads: (..., G, N+n) with the ``extra_states`` rows W_B x, W_C x
        appended to every group (x (..., H, P) is the conv output); B, C themselves without that slot."""
        extra = self.extra_states
        if extra is None:
            return B, C
        u = x.flatten(-2)  # (..., E)
        B_new = F.linear(u, extra.W_B.to(u.dtype)).unflatten(-1, (self.ngroups, -1))  # (..., G, n)
        C_new = F.linear(u, extra.W_C.to(u.dtype)).unflatten(-1, (self.ngroups, -1))
        return torch.cat([B, B_new.to(B.dtype)], dim=-1), torch.cat([C, C_new.to(C.dtype)], dim=-1)

    def _gate_out(self, y: Tensor, C: Tensor, z: Tensor) -> Tensor:
        """State offsets, then the gated norm and out_proj. y (..., H, P); C (..., G, N); z (..., E) -> (..., d)."""
        if self.state_offset is not None:
            h_prime, y_prime = self.state_offset.h_prime(), self.state_offset.y_prime()
            if h_prime is not None:  # C_t h': the offset is read out like the state, by the head's group
                G = self.ngroups
                if h_prime.dim() == 4:  # (b H P N): one h' per row
                    h_g = h_prime.float().unflatten(1, (G, self.nheads // G))  # (b G H/G P N)
                    off = torch.einsum("b...gn,bgkpn->b...gkp", C.float(), h_g).flatten(-3, -2)  # (b ..., H, P)
                else:
                    h_g = h_prime.float().unflatten(0, (G, self.nheads // G))  # (G H/G P N)
                    off = torch.einsum("...gn,gkpn->...gkp", C.float(), h_g).flatten(-3, -2)  # (..., H, P)
                y = y + off.to(y.dtype)
            if y_prime is not None:
                if y_prime.dim() == 2:  # (b E): one y' per row; y is (b H P) or (b l H P)
                    shape = (y_prime.shape[0], *[1] * (y.dim() - 3), self.nheads, self.headdim)
                else:
                    shape = (self.nheads, self.headdim)
                y = y + y_prime.to(y.dtype).view(shape)
        y = y.flatten(-2)  # (..., E)
        y = self.norm(y, z) if self.norm is not None else y * F.silu(z)
        return self.out_proj(y)

    # -- parallel path -------------------------------------------------------------------------------------
    def forward(
        self, hidden: Tensor, cache: LayerCache | None = None, fresh: bool = True, lengths: Tensor | None = None
    ) -> Tensor:
        """hidden (b l d) -> (b l d). With ``cache``, start from it (unless ``fresh``) and leave the end state in it.
        ``lengths`` (b,): right-padded rows; positions past a row's length leave its state as it was (dt 0 there:
        dA = 1, dt x = 0) and its cached conv window ends at its last real input. Their outputs mean nothing."""
        b, length, _ = hidden.shape
        z, xbc, dt = self.in_proj(hidden).split([self.d_inner, self.conv_channels, self.nheads], dim=-1)
        padded = past_the_end(lengths, length)
        if padded is not None:  # softplus(-inf + dt_bias) = 0 in every scan implementation
            dt = dt.masked_fill(padded.transpose(1, 2), float("-inf"))  # (b l H)
        xbc = xbc.transpose(1, 2)  # (b E+2GN l)
        window, h_start = conv_start(self, xbc, cache, fresh)  # (b E+2GN K-1) or None (zeros)
        if length == 0:
            if cache is not None:
                cache.conv = next_window(xbc, window, self.d_conv)
                zeros = xbc.new_zeros(b, self.nheads, self.headdim, self._n_states())  # N + extra states
                cache.ssm = (zeros if h_start is None else h_start).float()
            return hidden.new_zeros(b, 0, self.d_model)
        # (b l E+2GN) laid out contiguously so the scan reads x, B, C rows coalesced
        u = conv_silu(self, xbc, window, channels_last_out=True).transpose(1, 2)
        x, B, C = self._split_xbc(u.contiguous())  # (b l H P), (b l G N), (b l G N)
        B_scan, C_scan = self._scan_bc(x, B, C)  # (b l G N') with N' = N + extra states
        A = -torch.exp(self.A_log.float())  # (H,)
        out = ssd_scan(
            x=x,
            dt=dt,
            A=A,
            B=B_scan,
            C=C_scan,
            chunk_size=self.chunk_size,
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            dt_limit=self.dt_limit,
            initial_state=h_start,
            return_final_state=cache is not None,
            backend=self.backend,
        )
        if cache is not None:
            y, cache.ssm = out
            cache.conv = next_window(xbc, window, self.d_conv, lengths)
        else:
            y = out
        return self._gate_out(y, C, z)

    # -- recurrent path ------------------------------------------------------------------------------------
    def step(self, hidden: Tensor, cache: LayerCache) -> Tensor:
        """One token: hidden (b d) -> (b d); updates ``cache`` in place."""
        z, xbc, dt = self.in_proj(hidden).split([self.d_inner, self.conv_channels, self.nheads], dim=-1)
        window = torch.cat([cache.conv.to(xbc.dtype), xbc[:, :, None]], dim=2)  # (b E+2GN K)
        xbc = (window * self.conv1d.weight[:, 0, :].to(xbc.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            xbc = xbc + self.conv1d.bias.to(xbc.dtype)
        cache.conv = window[:, :, 1:]
        x, B, C = self._split_xbc(F.silu(xbc))  # (b H P), (b G N), (b G N)
        B_scan, C_scan = self._scan_bc(x, B, C)  # (b G N')
        A = -torch.exp(self.A_log.float())
        y, cache.ssm = ssd_step(
            state=cache.ssm, x=x, dt=dt, A=A, B=B_scan, C=C_scan, D=self.D, dt_bias=self.dt_bias, dt_softplus=True,
            dt_limit=self.dt_limit, backend=self.backend,
        )  # fmt: skip
        return self._gate_out(y, C, z)
