"""Selective Dimension Tuning (SDT) as the State-offset paper ran it (Kang et al., 2025, arXiv:2503.03499, its SDT
appendix and Table 6; the method of Galim et al., 2024, arXiv:2410.09016).

S6 only, no LoRA on any linear layer: 50% of the channels and 75% of the states are frozen. Per Mamba-1 layer, sparse
additive deltas (zero-initialised) on A_log at the c = E - round(0.5 E) kept channels x 4 kept states, and on all N
rows of W_B and W_C at the kept channels' columns: 4c + 2Nc parameters (130m: 663,552; 1.4b: 3,538,944).

How the dimensions are picked: neither paper states it for this variant and the State-offset code has no SDT (it
keeps only the SDT code's warm-up hook in its trainer), so this follows the SDT code's sd_lora warm-up with its
projection LoRA left out, as the configuration without ``proj_lora_r`` runs it there: a dense delta on A_log alone,
trained for num_warmup_it + 1 updates at the run's learning rate and schedule, scores the channels (sum_n delta^2)
and the states (delta^2). The shared machinery is in ``stateft/methods/selective_dims.py``. Mamba-1 only.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from stateft.methods.base import MethodSpec, trainable_names
from stateft.methods.configs import SDTConfig
from stateft.methods.selective_dims import apply_selective, fold_selective


def apply(model: nn.Module, cfg: SDTConfig, train_batches: Iterable | None = None) -> list[str]:
    apply_selective(model, cfg, train_batches, lora=None)
    return trainable_names(model)


SPEC = MethodSpec(SDTConfig, apply, needs_data=True, fold=fold_selective)
