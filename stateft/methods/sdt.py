"""Selective Dimension Tuning (SDT; Galim et al., 2024, arXiv:2410.09016), two phases.

Phase 1 (warm-up, on a throw-away copy of the model): a dense additive delta on A_log (E, N) per layer plus LoRA on
out_proj, trained for ``warmup_steps``. Each channel e is scored by sum_n delta[e, n]^2; the top ``channel_ratio`` of
channels are kept, and within each kept channel the top (1 - rho_s) states by delta^2.
Phase 2 (on the given pretrained model): sparse deltas on A_log (kept channel x kept state) and on all N rows of W_B
and W_C (x_proj's B and C row blocks) for the kept channels, plus a fresh LoRA on out_proj.
The deltas are parametrisations of the frozen weights (``torch.nn.utils.parametrize``), zero-initialised, so the model
is unchanged at init. The selection is stored in the method config (and so in ``adapter_config.json``); loading an
adapter re-applies it without a warm-up. Mamba-1 only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from stateft.errors import UserError
from stateft.methods.base import MethodSpec, batches_cycle, freeze_all, init_generator, new_parameter, trainable_names
from stateft.methods.configs import LoraConfig, SDTConfig
from stateft.methods.lora import wrap_targets


class DenseDelta(nn.Module):
    """W + delta, delta dense and zero-initialised (phase 1)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        super().__init__()
        self.delta = new_parameter(torch.zeros(shape, device=device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.delta.to(weight.dtype)


class SparseDelta(nn.Module):
    """W + delta on the entries (rows[i], cols[i]) only; ``values`` holds one trainable number per entry."""

    def __init__(self, rows: Tensor, cols: Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.values = new_parameter(torch.zeros(rows.numel(), device=rows.device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight.index_put((self.rows, self.cols), self.values.to(weight.dtype), accumulate=True)


def _out_proj_lora(mixer: nn.Module, cfg: SDTConfig, generator: torch.Generator) -> None:
    lora_cfg = LoraConfig(name="lora", r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout)
    wrap_targets(mixer, ["out_proj"], lora_cfg, generator)


def warmup_selection(model: nn.Module, cfg: SDTConfig, train_batches: Iterable) -> list:
    """Phase 1 on a copy of ``model``: returns per layer [kept channels, kept states per channel]."""
    from stateft.loss import lm_loss

    work = copy.deepcopy(model)
    freeze_all(work)
    generator = init_generator()
    deltas = []
    for mixer in work.mixers():
        delta = DenseDelta(tuple(mixer.A_log.shape), mixer.A_log.device)
        parametrize.register_parametrization(mixer, "A_log", delta)
        deltas.append(delta)
        _out_proj_lora(mixer, cfg, generator)
    params = [p for p in work.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.warmup_lr or cfg.lr, weight_decay=0.0)
    device = deltas[0].delta.device
    work.train()
    batches = iter(batches_cycle(train_batches))
    for _ in range(cfg.warmup_steps):
        batch = next(batches)
        loss = lm_loss(work, batch["input_ids"].to(device), batch["labels"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    return [select_dimensions(d.delta.detach(), cfg) for d in deltas]


def select_dimensions(delta: Tensor, cfg: SDTConfig) -> list:
    """delta (E, N) -> [channels, states per channel]: top channels by sum_n delta^2, then top states by delta^2."""
    E, N = delta.shape
    n_channels = max(1, int(E * cfg.channel_ratio))
    n_states = max(1, round((1 - cfg.rho_s) * N))
    sq = delta.float().pow(2)
    channels = sq.sum(1).topk(n_channels).indices.sort().values
    states = sq[channels].topk(n_states, dim=1).indices.sort(dim=1).values
    return [channels.tolist(), states.tolist()]


def apply(model: nn.Module, cfg: SDTConfig, train_batches: Iterable | None = None) -> list[str]:
    if model.config.arch != "mamba1":
        raise NotImplementedError("sdt is implemented for Mamba-1 (its selection is over S6 channels and states)")
    if cfg.selection is None and model.lm_head.weight.is_meta:
        # shapes only (dry run): the count does not depend on which dimensions the warm-up would pick
        zeros = torch.zeros(model.config.d_inner, model.config.d_state)
        cfg.selection = [select_dimensions(zeros, cfg) for _ in range(model.config.n_layer)]
    if cfg.selection is None:
        if train_batches is None:
            raise UserError("sdt needs training batches for its warm-up run (or a stored method.selection)")
        cfg.selection = warmup_selection(model, cfg, train_batches)
    if len(cfg.selection) != model.config.n_layer:
        raise UserError(f"sdt selection has {len(cfg.selection)} layers; the model has {model.config.n_layer}")
    freeze_all(model)
    generator = init_generator(1)
    for mixer, (channels, states) in zip(model.mixers(), cfg.selection):
        device = mixer.D.device
        ch = torch.tensor(channels, dtype=torch.long, device=device)  # (k,)
        st = torch.tensor(states, dtype=torch.long, device=device)  # (k, s)
        rows = ch[:, None].expand_as(st).reshape(-1)
        parametrize.register_parametrization(mixer, "A_log", SparseDelta(rows, st.reshape(-1)))
        R, N = mixer.dt_rank, mixer.d_state
        bc_rows = torch.arange(R, R + 2 * N, device=device)  # W_B and W_C rows of x_proj
        x_rows = bc_rows[:, None].expand(-1, ch.numel()).reshape(-1)
        x_cols = ch[None, :].expand(2 * N, -1).reshape(-1)
        parametrize.register_parametrization(mixer.x_proj, "weight", SparseDelta(x_rows, x_cols))
        _out_proj_lora(mixer, cfg, generator)
    return trainable_names(model)


SPEC = MethodSpec(SDTConfig, apply, needs_data=True)
