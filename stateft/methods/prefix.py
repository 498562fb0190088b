"""Prefix-tuning for Mamba, in the "affix" form of MambaPEFT (Yoshimura et al., 2024, arXiv:2411.03855).

P learned vectors per layer are prepended to the in_proj output xz (both halves) before the causal conv; the first P
outputs of the mixer are dropped, so later layers never see them: the prefix only shapes the conv window and SSM
state the real tokens start from. Attaches to: ``mixer.prefix``. Trainable per layer: xz (P, 2E). Init: N(0, 1).
In cached generation the prefix runs once, in the prefill.
"""

from __future__ import annotations

import torch
from torch import nn

from stateft.methods.base import MethodSpec, freeze_all, init_generator, new_parameter, trainable_names
from stateft.methods.configs import PrefixConfig
from stateft.models.backbone import device_of


class Prefix(nn.Module):
    def __init__(self, num_virtual_tokens: int, width: int, generator: torch.Generator) -> None:
        super().__init__()
        self.xz = new_parameter(torch.randn(num_virtual_tokens, width, generator=generator))  # (P 2E)


def apply(model: nn.Module, cfg: PrefixConfig) -> list[str]:
    freeze_all(model)
    generator, device = init_generator(), device_of(model)
    for mixer in model.mixers():
        mixer.prefix = Prefix(cfg.num_virtual_tokens, 2 * mixer.d_inner, generator).to(device)
    return trainable_names(model)


SPEC = MethodSpec(PrefixConfig, apply)
