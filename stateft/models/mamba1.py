"""Mamba-1 mixer (S6) with explicit adapter slots.

    xz = in_proj(h); x, z = split(xz)                       # (b 2E l)
    u = silu(conv1d(x))                                     # depthwise causal conv
    dt_r, B, C = split(x_proj(u)); delta = dt_proj(dt_r)    # bias + softplus inside the scan (fp32)
    y = scan(u, delta, A=-exp(A_log), B, C, D, z); out = out_proj(y)

Slots (``None`` unless a PEFT method fills them; methods never subclass the mixer):
- ``init_state``: module with ``h0`` (E, N) and optionally ``conv`` (E, K-1): the starting SSM and conv state.
- ``state_offset``: module with ``h_prime() -> (E, N) | None`` and ``y_prime() -> (E,) | None`` (read-out offsets);
  in ``step`` also one per row, (b, E, N) and (b, E) (the reference step broadcasts them): a batch whose rows use
  different adapters (`stateft.serve`).
- ``prefix``: module with ``xz`` (P, 2E): vectors prepended to the in_proj output at the start; their outputs dropped.
- ``extra_states``: module with ``A_log`` (E, n), ``W_B`` (n, E), ``W_C`` (n, E): n more state dimensions.
- the linears (``in_proj``, ``x_proj``, ``dt_proj``, ``out_proj``) may be replaced by any module that maps like a
  linear layer; the mixer calls them as modules and asks x_proj and dt_proj, ``Projection``s, for the views its fast
  paths use (``Projection`` lists them). A module in their place that lacks a view runs as itself on that path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stateft.models.cache import LayerCache
from stateft.models.config import MambaConfig
from stateft.models.conv import conv_silu, conv_start, next_window, past_the_end
from stateft.models.init import dt_bias_init
from stateft.ops import selective_scan, selective_step
from stateft.ops.backend import Backend
from stateft.ops.layout import matmul_channels_first
from stateft.ops.recompute import recompute_saved
from stateft.ops.split_grad import split_halves


class Projection(nn.Linear):
    """x_proj and dt_proj: a linear layer offering the views the mixer's fast paths ask for. The mixer asks the module
    in the slot, never its type, so a module that takes a projection's place (a method's wrapper around it) joins a
    fast path by offering the same members:

    - ``channels_first(x)``: the map without the bias for x (b in l) -> (b out l), as W @ x with no transposes.
    - ``without_bias(x)``: the map without the bias for x (..., in), where ``forward(x)`` = ``without_bias(x) + bias``:
      the mixer then hands dt_proj's bias to the scan, which adds it in fp32 (added in bf16 it would be rounded by
      ~0.03 at its -4..-7). A module without it runs its own ``forward``, bias included.
    - ``remakeable``: True when running it again on the same input gives the same output (no random draw), so the
      backward may remake its output rather than keep it (`stateft.ops.recompute`). Absent: kept.
    """

    remakeable = True

    def without_bias(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype))

    def channels_first(self, x: Tensor) -> Tensor:
        return matmul_channels_first(self.weight.to(x.dtype), x)


class Mamba1Mixer(nn.Module):
    """One Mamba-1 mixer: (b l d) -> (b l d)."""

    def __init__(self, config: MambaConfig, backend: Backend) -> None:
        super().__init__()
        d, E, N, K, R = config.d_model, config.d_inner, config.d_state, config.d_conv, config.dt_rank_value
        self.d_model, self.d_inner, self.d_state, self.d_conv, self.dt_rank = d, E, N, K, R
        self.conv_channels = E
        self.state_shape = (E, N)  # per-sequence SSM state (slots init_state / state_offset use this shape)
        # which implementation each op runs (set by the model: `MambaLM.set_backend`). With ``backend.recomputes``
        # (training on the Triton scan) u and delta are not kept for the backward but remade from what is (the conv
        # from in_proj's output, delta from x_proj's dt rows): -2 (b E l) tensors per layer (`stateft.ops.recompute`)
        self.backend = backend
        self.in_proj = nn.Linear(d, 2 * E, bias=config.bias)
        self.conv1d = nn.Conv1d(E, E, K, groups=E, bias=config.conv_bias)  # applied causally in forward
        self.x_proj = Projection(E, R + 2 * N, bias=False)
        self.dt_proj = Projection(R, E, bias=True)
        self.A_log = nn.Parameter(torch.empty(E, N))
        self.D = nn.Parameter(torch.empty(E))
        self.out_proj = nn.Linear(E, d, bias=config.bias)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        # adapter slots
        self.init_state: nn.Module | None = None
        self.state_offset: nn.Module | None = None
        self.prefix: nn.Module | None = None
        self.extra_states: nn.Module | None = None
        self._config = config

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mamba_ssm's random init: S4D-real A, D = 1, dt log-uniform in [dt_min, dt_max] through the bias."""
        c = self._config
        for lin in (self.in_proj, self.x_proj, self.out_proj):
            lin.reset_parameters()
        self.conv1d.reset_parameters()
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(dt_bias_init(self.d_inner, c.dt_min, c.dt_max, c.dt_init_floor))
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    # -- pieces shared by the parallel and the recurrent path -------------------------------------------------
    def _ssm_params(self, u_t: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
        """u_t: (..., E) -> delta (..., E), delta_bias (E,) | None, A (E, N'), B (..., N'), C (..., N');
        N' = N + extra states."""
        R, N = self.dt_rank, self.d_state
        dt_r, B, C = self.x_proj(u_t).split([R, N, N], dim=-1)
        if hasattr(self.dt_proj, "without_bias"):  # the bias goes to the scan in fp32 (`Projection`)
            delta, delta_bias = self.dt_proj.without_bias(dt_r), self.dt_proj.bias
        else:  # its own forward adds the bias
            delta, delta_bias = self.dt_proj(dt_r), None
        A = -torch.exp(self.A_log.float())
        if self.extra_states is not None:
            es = self.extra_states
            A = torch.cat([A, -torch.exp(es.A_log.float())], dim=1)
            B = torch.cat([B, F.linear(u_t, es.W_B.to(u_t.dtype))], dim=-1)
            C = torch.cat([C, F.linear(u_t, es.W_C.to(u_t.dtype))], dim=-1)
        return delta, delta_bias, A, B, C

    def _projections_channels_first(self) -> bool:
        ok = [hasattr(m, "channels_first") for m in (self.x_proj, self.dt_proj)]
        return all(ok) and self.x_proj.bias is None and self.extra_states is None

    def _ssm_params_channels_first(self, u: Tensor) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        """`_ssm_params` for u (b E l), as W @ u: delta (b E l), B and C (b N l) come out with the sequence
        contiguous, as the scan reads them, and u is not transposed for x_proj (no copies). Also returns dt_proj's
        input (delta's recipe)."""
        R, N = self.dt_rank, self.d_state
        dt_r, B, C = self.x_proj.channels_first(u).split([R, N, N], dim=1)
        delta = self.dt_proj.channels_first(dt_r)  # its bias (fp32) is added inside the scan
        return delta, self.dt_proj.bias, -torch.exp(self.A_log.float()), B, C, dt_r

    def _recomputes(self) -> bool:
        return self.backend.recomputes and torch.is_grad_enabled()

    def _n_states(self) -> int:
        extra = 0 if self.extra_states is None else self.extra_states.A_log.shape[1]
        return self.d_state + extra

    def _offsets(self) -> tuple[Tensor | None, Tensor | None]:
        if self.state_offset is None:
            return None, None
        return self.state_offset.h_prime(), self.state_offset.y_prime()

    # -- parallel path -------------------------------------------------------------------------------------
    def forward(
        self, hidden: Tensor, cache: LayerCache | None = None, fresh: bool = True, lengths: Tensor | None = None
    ) -> Tensor:
        """hidden (b l d) -> (b l d). With ``cache``, start from it (unless ``fresh``) and leave the end state in it.
        ``lengths`` (b,): right-padded rows; positions past a row's length leave its state as it was (delta 0 there:
        dA = 1, dB u = 0) and its cached conv window ends at its last real input. Their outputs mean nothing."""
        b = hidden.shape[0]
        xz = self.in_proj(hidden)  # (b l 2E)
        n_prefix = 0
        if fresh and self.prefix is not None:
            pre = self.prefix.xz.to(xz.dtype)[None].expand(b, -1, -1)  # (b P 2E)
            xz = torch.cat([pre, xz], dim=1)
            n_prefix = pre.shape[1]
        # split along the features, then view channels-first (b E l') each: xz's gradient is assembled (b l 2E)-major
        # as in_proj's backward reads it, the fused conv and scan writing straight into its halves (`split_grad`)
        x, z, xz_grad = split_halves(xz)
        ends = None if lengths is None else lengths + n_prefix  # a padded row's end, counted with the prefix
        window, h_start = conv_start(self, x, cache, fresh)  # (b E K-1) or None (zeros)
        if x.shape[2] == 0:
            if cache is not None:
                cache.conv = next_window(x, window, self.d_conv)
                cache.ssm = (x.new_zeros(b, self.d_inner, self._n_states()) if h_start is None else h_start).float()
            return hidden.new_zeros(b, 0, self.d_model)
        # (b E l') twice: u_p for the projections, u for the scan (the conv's backward adds their gradients as it reads
        # them: no pass of autograd's own over (b E l') to add them)
        u_p, u = conv_silu(self, x, window, dx_into=xz_grad, two=True)
        # training on Triton: what the projections and the scan keep of u (and of what is made from it inside: LoRA's
        # dropout output) and delta is remade in the backward (`stateft.ops.recompute`)
        with recompute_saved([(u, lambda: conv_silu(self, x, window))], enabled=self._recomputes()) as recipes:
            if self._projections_channels_first():
                delta, delta_bias, A, B, C, dt_r = self._ssm_params_channels_first(u_p)
                if getattr(self.dt_proj, "remakeable", False):  # `Projection`
                    recipes.add(delta, lambda: self.dt_proj.channels_first(dt_r))
            else:
                delta, delta_bias, A, B, C = self._ssm_params(u_p.transpose(1, 2))
                delta, B, C = delta.transpose(1, 2), B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()
            padded = past_the_end(ends, delta.shape[2])
            if padded is not None:  # softplus(-inf + bias) = 0 in every scan implementation
                delta = delta.masked_fill(padded, float("-inf"))
            h_off, y_off = self._offsets()
            out = selective_scan(
                u=u,
                delta=delta,
                A=A,
                B=B,
                C=C,
                D=self.D,
                z=z,
                delta_bias=delta_bias,
                delta_softplus=True,
                initial_state=h_start,
                h_offset=h_off,
                y_offset=y_off,
                return_last_state=cache is not None,
                dz_into=xz_grad,
                backend=self.backend,
            )
        if cache is not None:
            y, cache.ssm = out
            cache.conv = next_window(x, window, self.d_conv, ends)
        else:
            y = out
        y = y[:, :, n_prefix:]  # drop the prefix positions
        return self.out_proj(y.transpose(1, 2))

    # -- recurrent path ------------------------------------------------------------------------------------
    def step(self, hidden: Tensor, cache: LayerCache) -> Tensor:
        """One token: hidden (b d) -> (b d); updates ``cache`` in place."""
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (b E)
        window = torch.cat([cache.conv.to(x.dtype), x[:, :, None]], dim=2)  # (b E K)
        x_conv = (window * self.conv1d.weight[:, 0, :].to(x.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            x_conv = x_conv + self.conv1d.bias.to(x.dtype)
        cache.conv = window[:, :, 1:]
        u = F.silu(x_conv)
        delta, delta_bias, A, B, C = self._ssm_params(u)
        h_off, y_off = self._offsets()
        y, cache.ssm = selective_step(
            state=cache.ssm, u=u, delta=delta, A=A, B=B, C=C, D=self.D, z=z, delta_bias=delta_bias,
            delta_softplus=True, h_offset=h_off, y_offset=y_off, backend=self.backend,
        )  # fmt: skip
        return self.out_proj(y)
