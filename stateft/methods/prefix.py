"""Prefix-tuning for Mamba, in the "affix" form of MambaPEFT (Yoshimura et al., 2024, arXiv:2411.03855).

P learned vectors per layer are prepended to the in_proj output xz (both halves) before the causal conv; the first P
outputs of the mixer are dropped, so later layers never see them: the prefix only shapes the conv window and SSM
state the real tokens start from. Attaches to: ``mixer.prefix``. Trainable per layer: xz (P, 2E). Init: N(0, 1).
In cached generation the prefix runs once, in the prefill.

``position`` is MambaPEFT's ``prefix_type``: ``inner`` (inner_single_prefix, the above: its Affix-tuning) or
``outer`` (outer_single_prefix): P vectors h (P, d) prepended to the mixer's input, so xz = in_proj(h), through the
mixer's current in_proj (a LoRA on it included, as in MambaPEFT). Trainable per layer: h (P, d). Init: N(0, 1).
Not on Vim, whose scan directions share one in_proj (``PrefixConfig.option_refusal``).
MambaPEFT's ``prefix_projection`` (an MLP producing every layer's prefix) is not offered: its language Affix-tuning
runs without it.
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


class OuterPrefix(nn.Module):
    """h (P, d) at the mixer's input; the mixer reads in_proj(h) as ``xz``. The mixer is held as a plain attribute,
    not a submodule (its parameters stay the mixer's; a deep copy of the model points the copy at the copied mixer)."""

    def __init__(self, num_virtual_tokens: int, mixer: nn.Module, generator: torch.Generator) -> None:
        super().__init__()
        self.h = new_parameter(torch.randn(num_virtual_tokens, mixer.d_model, generator=generator))  # (P d)
        object.__setattr__(self, "mixer", mixer)

    @property
    def xz(self) -> torch.Tensor:
        in_proj = self.mixer.in_proj
        return in_proj(self.h.to(in_proj.weight.dtype))  # (P 2E)


def apply(model: nn.Module, cfg: PrefixConfig) -> list[str]:
    freeze_all(model)
    generator, device = init_generator(), device_of(model)
    for mixer in model.mixers():
        if cfg.position == "outer":
            mixer.prefix = OuterPrefix(cfg.num_virtual_tokens, mixer, generator).to(device)
        else:
            mixer.prefix = Prefix(cfg.num_virtual_tokens, 2 * mixer.d_inner, generator).to(device)
    return trainable_names(model)


SPEC = MethodSpec(PrefixConfig, apply)
