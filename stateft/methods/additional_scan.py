"""Additional-scan (MambaPEFT, Yoshimura et al. 2024, arXiv:2411.03855): n extra state dimensions per channel.

A_log' = [A_log, A_log_new] (E, N+n); B' and C' get n extra rows computed from the conv output u by W_B_new (n, E)
and W_C_new (n, E). Attaches to: ``mixer.extra_states``. Trainable per layer: A_log_new (E, n), W_B (n, E), W_C (n, E).
Init: W_B Kaiming-uniform, W_C zeros (the output is unchanged at init). A_log_new: by default
``log(N + 1 + j)``, continuing the S4D-real init (A = -(1..N) -> -(N+1..N+n)); ``A_init: copy`` copies the pretrained
column ``copy_column`` instead (one reference run did that; another used the raw value 16.0 instead of log(16), which
makes the new states memory-less and their gradient ~0, a bug we do not reproduce).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from stateft.methods.base import MethodSpec, freeze_all, init_generator, new_parameter, trainable_names
from stateft.methods.configs import AdditionalScanConfig


class ExtraStates(nn.Module):
    def __init__(self, A_log: torch.Tensor, d_inner: int, generator: torch.Generator) -> None:
        super().__init__()
        n = A_log.shape[1]
        self.A_log = new_parameter(A_log, no_weight_decay=True)  # (E n)
        W_B = torch.empty(n, d_inner)
        nn.init.kaiming_uniform_(W_B, a=math.sqrt(5), generator=generator)
        self.W_B = new_parameter(W_B)  # (n E)
        self.W_C = new_parameter(torch.zeros(n, d_inner))  # (n E)


def apply(model: nn.Module, cfg: AdditionalScanConfig) -> list[str]:
    if model.config.arch != "mamba1":
        raise NotImplementedError(
            "additional_scan needs per-channel state dims (Mamba-1); Mamba-2's A is one "
            "scalar per head, so extra dims would change every head's state size"
        )
    freeze_all(model)
    generator = init_generator()
    for mixer in model.mixers():
        E, N = mixer.d_inner, mixer.d_state
        if cfg.A_init == "continue":
            A_log = torch.log(torch.arange(N + 1, N + cfg.n + 1, dtype=torch.float32)).repeat(E, 1)
        elif cfg.A_init == "copy":
            A_log = mixer.A_log.detach().float().cpu()[:, cfg.copy_column : cfg.copy_column + 1].repeat(1, cfg.n)
        else:
            raise NotImplementedError(f"additional_scan A_init {cfg.A_init!r}: use continue or copy")
        mixer.extra_states = ExtraStates(A_log, E, generator).to(mixer.D.device)
    return trainable_names(model)


SPEC = MethodSpec(AdditionalScanConfig, apply)
