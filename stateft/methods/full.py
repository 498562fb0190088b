"""Full fine-tuning and its SSM-only variants (SDT paper, Galim et al. 2024, arXiv:2410.09016).

- ``full``: every parameter.
- ``full_s6`` (Mamba-1): the S6 parameters A_log, D, x_proj, dt_proj and conv1d.
- ``full_ssd`` (Mamba-2): the SSD parameters A_log, D, dt_bias and conv1d.
"""

from __future__ import annotations

from torch import nn

from stateft.methods.base import MethodSpec, fold_nothing, mark_trainable
from stateft.methods.configs import FullConfig, FullS6Config, FullSSDConfig

_S6 = (
    ".mixer.A_log",
    ".mixer.D",
    ".mixer.x_proj.weight",
    ".mixer.dt_proj.weight",
    ".mixer.dt_proj.bias",
    ".mixer.conv1d.weight",
    ".mixer.conv1d.bias",
)
_SSD = (".mixer.A_log", ".mixer.D", ".mixer.dt_bias", ".mixer.conv1d.weight", ".mixer.conv1d.bias")


def apply_full(model: nn.Module, cfg: FullConfig) -> list[str]:
    return mark_trainable(model, lambda name: True)


def apply_s6(model: nn.Module, cfg: FullS6Config) -> list[str]:
    return mark_trainable(model, lambda name: name.endswith(_S6))


def apply_ssd(model: nn.Module, cfg: FullSSDConfig) -> list[str]:
    return mark_trainable(model, lambda name: name.endswith(_SSD))


SPEC = MethodSpec(FullConfig, apply_full, fold=fold_nothing)
SPEC_S6 = MethodSpec(FullS6Config, apply_s6, fold=fold_nothing)
SPEC_SSD = MethodSpec(FullSSDConfig, apply_ssd, fold=fold_nothing)
