"""BitFit (Ben Zaken et al., 2022) on Mamba: train the existing biases of the causal conv and of dt.

Mamba-1: ``conv1d.bias`` and ``dt_proj.bias``; Mamba-2: ``conv1d.bias`` and ``dt_bias``. 2E (+ H) per layer,
pretrained init. Selects existing parameters, adds none.
"""

from __future__ import annotations

from torch import nn

from stateft.methods.base import MethodSpec, fold_nothing, mark_trainable
from stateft.methods.configs import BitFitConfig

_BIASES = (".mixer.conv1d.bias", ".mixer.dt_proj.bias", ".mixer.dt_bias")


def apply(model: nn.Module, cfg: BitFitConfig) -> list[str]:
    return mark_trainable(model, lambda name: name.endswith(_BIASES))


SPEC = MethodSpec(BitFitConfig, apply, fold=fold_nothing)
