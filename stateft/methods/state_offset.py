"""State-offset Tuning (Kang et al., ACL 2025, arXiv:2503.03499).

(h): y_t = silu(z_t) * (C_t (h_t + h') + D u_t)      (y): y_t = silu(z_t) * (C_t h_t + D u_t + y')
The offsets sit inside the gate (as in the reference code) and never enter the recurrence: the cached state in
decoding does not hold h'. Attaches to: ``mixer.state_offset``. Trainable per layer: h' (state_shape: Mamba-1 (E, N),
Mamba-2 (H, P, N)), or its low-rank form h' = U V with U (E, r) zeros and V (r, N) U(-1/sqrt N, 1/sqrt N)
(Kaiming-uniform with a=sqrt 5, drawn from the run's `init_generator`), or
y' (E,). Init: zeros, so the model is unchanged at init.
"""

from __future__ import annotations

from math import prod

import torch
from torch import Tensor, nn

from stateft.methods.base import (
    MethodSpec,
    fan_in_uniform,
    freeze_all,
    init_generator,
    new_parameter,
    trainable_names,
)
from stateft.methods.configs import StateOffsetHConfig, StateOffsetYConfig
from stateft.models.backbone import device_of


class StateOffset(nn.Module):
    """h' (full or low-rank) or y' for one mixer."""

    def __init__(
        self,
        state_shape: tuple[int, ...],
        d_inner: int,
        target: str,
        rank: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.target, self.state_shape = target, tuple(state_shape)
        if target == "y":
            self.y = new_parameter(torch.zeros(d_inner))
        elif rank is None:
            self.h = new_parameter(torch.zeros(self.state_shape))
        else:
            rows, n = prod(self.state_shape[:-1]), self.state_shape[-1]
            self.U = new_parameter(torch.zeros(rows, rank))
            self.V = new_parameter(fan_in_uniform((rank, n), n, generator or init_generator(), device))

    def h_prime(self) -> Tensor | None:
        if self.target != "h":
            return None
        return self.h if hasattr(self, "h") else (self.U @ self.V).view(self.state_shape)

    def y_prime(self) -> Tensor | None:
        return self.y if self.target == "y" else None


def _apply(model: nn.Module, target: str, rank: int | None) -> list[str]:
    freeze_all(model)
    device, generator = device_of(model), init_generator()  # one stream over the layers: each its own V
    for mixer in model.mixers():
        mixer.state_offset = StateOffset(mixer.state_shape, mixer.d_inner, target, rank, generator, device).to(device)
    return trainable_names(model)


def apply_h(model: nn.Module, cfg: StateOffsetHConfig) -> list[str]:
    return _apply(model, "h", cfg.rank)


def apply_y(model: nn.Module, cfg: StateOffsetYConfig) -> list[str]:
    return _apply(model, "y", None)


SPEC_H = MethodSpec(StateOffsetHConfig, apply_h)
SPEC_Y = MethodSpec(StateOffsetYConfig, apply_y)
