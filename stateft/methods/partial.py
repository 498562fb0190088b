"""Partial tuning (MambaPEFT, Yoshimura et al., ICLR 2025: its learnable_A, learnable_D, learnable_conv1d and
learnable_bias): train chosen pretrained SSM parameters of every mixer, nothing else.

``learnable`` picks among A (``A_log``), D, conv1d (the causal conv's weight and bias) and dt_bias (Mamba-1
``dt_proj.bias``, Mamba-2 ``dt_bias``). The parameters are trained in place, as MambaPEFT's first form; its ``_v2``
form trains a zero-initialised delta added to each instead, which takes the same AdamW steps unless weight decay is
on (decay then pulls the delta, not the weight, towards 0). Selects existing parameters, adds none; pretrained init.
"""

from __future__ import annotations

from torch import nn

from stateft.methods.base import MethodSpec, fold_nothing, mark_trainable
from stateft.methods.configs import PartialConfig

# each choice's parameters, by their names inside a mixer (``model.mixers()``: on Vim, each scan direction)
SUFFIXES = {
    "A": ("A_log",),
    "D": ("D",),
    "conv1d": ("conv1d.weight", "conv1d.bias"),
    "dt_bias": ("dt_proj.bias", "dt_bias"),
}


def apply(model: nn.Module, cfg: PartialConfig) -> list[str]:
    wanted = {s for choice in cfg.learnable for s in SUFFIXES[choice]}
    chosen = {id(p) for mixer in model.mixers() for name, p in mixer.named_parameters() if name in wanted}
    params = dict(model.named_parameters())
    return mark_trainable(model, lambda name: id(params[name]) in chosen)


SPEC = MethodSpec(PartialConfig, apply, fold=fold_nothing)
