"""SDLoRA: LoRA with Selective Dimension tuning (Galim et al., 2024, arXiv:2410.09016; its code's ``sd_lora``).

Phase 1 (warm-up, on a copy): a dense additive delta on A_log plus LoRA (r 8, alpha 8, dropout 0.1) on out_proj,
trained for num_warmup_it + 1 optimizer updates at the run's learning rate and linear schedule. Each channel scores
sum_n delta^2; E - round(0.99 E) channels are kept (130m: 15, 1.4b: 41), in each the top N - round(rho_s N) states
(rho_s = freeze_states, 0.75 -> 4 of 16).
Phase 2 (from the pretrained weights): sparse deltas on A_log (kept channel x kept state) and on all N rows of W_B,
W_C at the kept channels, plus a fresh LoRA (same settings) on out_proj. Per layer 4c + 2Nc + r (E + d): 130m
455,328; 1.4b 2,430,144. Zero deltas and LoRA's zero B leave the model unchanged at init. The shared machinery
(warm-up, selection, sparse deltas, stored selection) is in ``stateft/methods/selective_dims.py``. Mamba-1 only.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from stateft.methods.base import MethodSpec, init_generator, trainable_names
from stateft.methods.configs import LoraConfig, SDLoraConfig
from stateft.methods.lora import fold as fold_lora
from stateft.methods.lora import wrap_targets
from stateft.methods.selective_dims import apply_selective, fold_selective


def out_proj_lora(cfg: SDLoraConfig) -> LoraConfig:
    return LoraConfig(name="lora", r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)


def apply(model: nn.Module, cfg: SDLoraConfig, train_batches: Iterable | None = None) -> list[str]:
    lora = out_proj_lora(cfg)
    apply_selective(model, cfg, train_batches, lora=lora)
    generator = init_generator(1)
    for mixer in model.mixers():
        wrap_targets(mixer, ["out_proj"], lora, generator)
    return trainable_names(model)


def fold(model: nn.Module) -> None:
    """The sparse deltas and the out_proj LoRA, both added into the weights they update (``MethodSpec.fold``)."""
    fold_selective(model)
    fold_lora(model)


SPEC = MethodSpec(SDLoraConfig, apply, needs_data=True, fold=fold)
