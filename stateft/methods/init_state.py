"""Initial State Tuning (State-offset paper, Kang et al. 2025): a learned starting state H0 shared over the batch.

h_0 = H0 instead of 0 (and, optionally, the causal conv starts from a learned window P (E, K-1) instead of zero
padding). Only the prefill changes: in decoding H0 is already inside the cached state. The scan takes H0 as its
initial state directly and returns dL/dH0, so no per-state materialisation is needed. Attaches to:
``mixer.init_state``. Trainable per layer: H0 (state_shape) [+ P (conv_channels, K-1)]. Init: zeros (identity).
"""

from __future__ import annotations

import torch
from torch import nn

from stateft.methods.base import MethodSpec, freeze_all, new_parameter, trainable_names
from stateft.methods.configs import InitStateConfig
from stateft.models.backbone import device_of


class InitialState(nn.Module):
    """H0 (state_shape) and optionally the conv window (conv_channels, K-1)."""

    def __init__(self, state_shape: tuple[int, ...], conv_shape: tuple[int, int] | None) -> None:
        super().__init__()
        self.h0 = new_parameter(torch.zeros(state_shape))
        self.conv = None if conv_shape is None else new_parameter(torch.zeros(conv_shape))


def apply(model: nn.Module, cfg: InitStateConfig) -> list[str]:
    freeze_all(model)
    device = device_of(model)
    for mixer in model.mixers():
        conv_shape = (mixer.conv_channels, mixer.d_conv - 1) if cfg.conv_state else None
        mixer.init_state = InitialState(mixer.state_shape, conv_shape).to(device)
    return trainable_names(model)


SPEC = MethodSpec(InitStateConfig, apply)
