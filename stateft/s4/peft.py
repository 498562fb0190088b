"""PEFT methods on a ``DeepS4`` (the SDT paper's deep-S4 experiments; the SDT code's ``run_s4.py`` options).

``apply(model, cfg, selection)`` freezes the model, attaches the method's deltas (``stateft.s4.deltas``) and returns
the sorted names of the trainable parameters. Per S4 block (S4D ``ssm`` + ``output_linear`` W, b):
- ``frozen``: nothing (the pretrained model as it is);
- ``full``: every parameter (encoder, norms and decoder included);
- ``lora``: W + B A (rank ``lora_rank``) and b; the SSM frozen except D (``train_D``, the SDT code's
  ``D_method: full``);
- ``sdt``: SDT, the SDT code's ``ssm_method: ours`` with ``lp_method: ours``: C is zeroed outside the kept
  channels and modes; deltas on C, log_A_real and A_imag at the updated (channel, mode) entries (4 numbers per
  entry: C's real and imaginary parts, Re A's log, Im A); all of log_dt; D; W's columns of the updated channels
  (an (H_out, c) delta) and b;
- ``sdlora``: the same SSM part with W + B A instead of the column delta (SDLoRA).
The encoder, norms and decoder train in ``full`` only. ``sdt`` and ``sdlora`` need the selection
(``stateft.s4.selection``), from ``select`` (warm-up, then the choice) or stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from stateft.errors import UserError
from stateft.s4.block import S4Block
from stateft.s4.deltas import ColumnDelta, EntryDelta, LowRankDelta, add_delta
from stateft.s4.model import DeepS4
from stateft.s4.selection import LayerSelection, check_counts, select_dimensions
from stateft.s4.warmup import WARMUP_PARAMS, warm_up

METHODS = ("frozen", "full", "lora", "sdt", "sdlora")
SELECTIVE = ("sdt", "sdlora")


@dataclass
class S4PeftConfig:
    method: str = "sdt"
    select_channels: int = 16  # channels kept per layer (C zeroed on the others)
    update_channels: int = 16  # of those, channels updated
    select_states: int = 8  # complex modes kept per kept channel
    update_states: int = 8  # of those, modes updated per updated channel
    lora_rank: int = 16  # lora, sdlora: rank of W's update (the SDT code's lp_lora_rank)
    train_D: bool = True  # lora, sdt, sdlora: D trains (the SDT code's D_method: full)
    warmup_steps: int = 20  # sdt, sdlora: AdamW updates of the warm-up
    warmup_lr: float = 0.01
    warmup_params: str = "all"  # all | ssm

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown S4 method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.warmup_params not in WARMUP_PARAMS:
            raise UserError(f"unknown warm-up params {self.warmup_params!r}; choose one of: all, ssm")
        if self.lora_rank < 1:
            raise UserError(f"lora_rank must be >= 1, got {self.lora_rank}")

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("select_channels", "update_channels", "select_states", "update_states")}

    def as_dict(self) -> dict:
        return asdict(self)


def trainable_names(model: nn.Module) -> list[str]:
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def select(model: DeepS4, cfg: S4PeftConfig, loss_fn: Callable[[nn.Module], Tensor], seq_len: int) -> list:
    """Warm up a copy of ``model`` on ``loss_fn`` and choose every layer's dimensions (``model`` is unchanged)."""
    check_counts(model.config.d_model, model.config.d_state // 2, cfg.counts())
    warmed = warm_up(model, loss_fn, cfg.warmup_steps, cfg.warmup_lr, cfg.warmup_params)
    return select_dimensions(model.ssms(), warmed.ssms(), seq_len, cfg.counts())


def _check_selection(model: DeepS4, selection: list, cfg: S4PeftConfig) -> None:
    if selection is None:
        raise UserError(f"{cfg.method} needs a selection: run stateft.s4.peft.select (the warm-up) first")
    if len(selection) != model.config.n_layers:
        raise UserError(f"the selection has {len(selection)} layers; the model has {model.config.n_layers}")
    H, M = model.config.d_model, model.config.d_state // 2
    for i, sel in enumerate(selection):
        chans = set(sel.keep_channels)
        ok = all(0 <= h < H for h in chans) and set(sel.update_channels) <= chans
        ok = ok and len(sel.keep_states) == len(sel.keep_channels) == len(chans)
        ok = ok and len(sel.update_states) == len(sel.update_channels) == len(set(sel.update_channels))
        kept = dict(zip(sel.keep_channels, sel.keep_states))
        ok = ok and all(0 <= n < M for states in sel.keep_states for n in states)
        ok = ok and all(set(s) <= set(kept.get(h, ())) for h, s in zip(sel.update_channels, sel.update_states))
        if not ok:
            raise UserError(f"selection of layer {i} does not fit a model of {H} channels and {M} complex modes")


@torch.no_grad()
def _zero_unkept(ssm: nn.Module, sel: LayerSelection) -> None:
    """C = 0 outside the kept (channel, mode) entries: those modes no longer reach the output."""
    keep = torch.zeros(ssm.C.shape[:2], dtype=torch.bool, device=ssm.C.device)
    for h, states in zip(sel.keep_channels, sel.keep_states):
        keep[h, states] = True
    ssm.C.mul_(keep.unsqueeze(-1).to(ssm.C.dtype))


def _entries(sel: LayerSelection, device: torch.device) -> tuple[Tensor, Tensor]:
    rows = [h for h, states in zip(sel.update_channels, sel.update_states) for _ in states]
    cols = [n for states in sel.update_states for n in states]
    return torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device)


def _add_lora(block: S4Block, rank: int) -> None:
    W = block.output_linear.weight
    add_delta(block.output_linear, "weight", LowRankDelta(W.shape[0], W.shape[1], rank, W.device))
    block.output_linear.bias.requires_grad_(True)


def _add_selective(block: S4Block, sel: LayerSelection, cfg: S4PeftConfig) -> None:
    ssm = block.ssm
    _zero_unkept(ssm, sel)
    rows, cols = _entries(sel, ssm.C.device)
    add_delta(ssm, "C", EntryDelta(rows, cols, (2,)))
    add_delta(ssm, "log_A_real", EntryDelta(rows.clone(), cols.clone()))
    add_delta(ssm, "A_imag", EntryDelta(rows.clone(), cols.clone()))
    ssm.log_dt.requires_grad_(True)
    if cfg.method == "sdlora":
        _add_lora(block, cfg.lora_rank)
    else:
        W = block.output_linear.weight
        columns = torch.tensor(sel.update_channels, dtype=torch.long, device=W.device)
        add_delta(block.output_linear, "weight", ColumnDelta(W.shape[0], columns))
        block.output_linear.bias.requires_grad_(True)


def apply(model: DeepS4, cfg: S4PeftConfig, selection: list | None = None) -> list[str]:
    """Apply ``cfg.method`` to ``model`` in place; the sorted trainable parameter names."""
    if cfg.method in SELECTIVE:
        check_counts(model.config.d_model, model.config.d_state // 2, cfg.counts())
        _check_selection(model, selection, cfg)
    model.requires_grad_(cfg.method == "full")
    if cfg.method in ("frozen", "full"):
        return trainable_names(model)
    for i, block in enumerate(model.layers):
        if cfg.method == "lora":
            _add_lora(block, cfg.lora_rank)
        else:
            _add_selective(block, selection[i], cfg)
        block.ssm.D.requires_grad_(cfg.train_D)
    return trainable_names(model)
