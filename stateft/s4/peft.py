"""The deep-S4 PEFT methods (the SDT paper's menu; the SDT code's ``run_s4.py`` options) applied to a ``DeepS4``.

``apply(model, cfg, selection)`` freezes the model, attaches the method's deltas (``stateft.methods.deltas``) and
returns the sorted names of the trainable parameters. ``cfg`` is the method's config (``stateft.methods.configs``: its
options and their defaults live there). Per S4 block (S4D ``ssm`` + ``output_linear`` W, b):

- ``s4_frozen``: nothing;
- ``s4_full``: every parameter (encoder, norms and decoder included);
- ``s4_lora``: with ``rank``, W + B A and b train (the SDT code's ``lp_method: lora``); with ``ssm_rank``, C,
  log_A_real and A_imag each + B A (C's factors complex) and log_dt train (its ``ssm_method: lora``);
- ``s4_sdt``, hard mode: C is zeroed outside the kept (channel, mode) entries; deltas on C, log_A_real and A_imag at
  the updated entries (4 numbers per entry: C's real and imaginary parts, Re A's log, Im A); all of log_dt; W's
  columns of the updated channels (an (out, c) delta) and b (the SDT code's ``ssm_method: ours``,
  ``lp_method: ours``);
- ``s4_sdlora``: the same SSM part with W + B A instead of the column delta (SDLoRA);
- soft mode (``mode: soft``) of both: dense deltas on every entry of C, log_A_real and A_imag (and on W for
  ``s4_sdt``), log_dt trains; ``l1_penalty`` is added to the training loss instead of a hard choice.
D trains in every method but ``s4_frozen`` unless ``train_D`` is false (the SDT code's ``D_method``). The encoder,
norms and decoder train in ``s4_full`` only. The hard modes need the selection (``stateft.s4.choose``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stateft.errors import UserError
from stateft.methods.base import trainable_names
from stateft.methods.deltas import ColumnDelta, ComplexLowRankDelta, DenseDelta, EntryDelta, LowRankDelta, add_delta
from stateft.s4.block import S4Block
from stateft.s4.model import DeepS4
from stateft.s4.s4d import S4D
from stateft.s4.selection import LayerSelection, check_counts, counts_of

METHODS = ("s4_frozen", "s4_full", "s4_lora", "s4_sdt", "s4_sdlora")
SELECTIVE = ("s4_sdt", "s4_sdlora")
SSM_TABLES = ("C", "log_A_real", "A_imag")


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def is_hard(cfg) -> bool:
    """Whether the method needs a selection of dimensions (s4_sdt / s4_sdlora in hard mode)."""
    return cfg.name in SELECTIVE and cfg.mode == "hard"


def _check_selection(model: DeepS4, selection: list | None, cfg) -> None:
    if selection is None:
        raise UserError(f"{cfg.name} needs a selection: choose the dimensions first (stateft.s4.choose)")
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
def _zero_unkept(ssm: S4D, sel: LayerSelection) -> None:
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


def _add_ssm_lora(ssm: S4D, rank: int) -> None:
    H, M, device = ssm.d_model, ssm.n_modes, ssm.C.device
    add_delta(ssm, "C", ComplexLowRankDelta(H, M, rank, device))
    for name in ("log_A_real", "A_imag"):
        add_delta(ssm, name, LowRankDelta(H, M, rank, device, normal=True))
    ssm.log_dt.requires_grad_(True)


def _add_selective(block: S4Block, sel: LayerSelection, cfg) -> None:
    ssm = block.ssm
    _zero_unkept(ssm, sel)
    rows, cols = _entries(sel, ssm.C.device)
    add_delta(ssm, "C", EntryDelta(rows, cols, (2,)))
    add_delta(ssm, "log_A_real", EntryDelta(rows.clone(), cols.clone()))
    add_delta(ssm, "A_imag", EntryDelta(rows.clone(), cols.clone()))
    ssm.log_dt.requires_grad_(True)
    if cfg.name == "s4_sdlora":
        _add_lora(block, cfg.rank)
    else:
        W = block.output_linear.weight
        columns = torch.tensor(sel.update_channels, dtype=torch.long, device=W.device)
        add_delta(block.output_linear, "weight", ColumnDelta(W.shape[0], columns))
        block.output_linear.bias.requires_grad_(True)


def _add_soft(block: S4Block, cfg) -> None:
    ssm = block.ssm
    for name in SSM_TABLES:
        add_delta(ssm, name, DenseDelta(getattr(ssm, name)))
    ssm.log_dt.requires_grad_(True)
    if cfg.name == "s4_sdlora":
        _add_lora(block, cfg.rank)
    else:
        add_delta(block.output_linear, "weight", DenseDelta(block.output_linear.weight))
        block.output_linear.bias.requires_grad_(True)


def apply(model: DeepS4, cfg, selection: list | None = None) -> list[str]:
    """Apply method ``cfg.name`` to ``model`` in place; the sorted trainable parameter names."""
    if cfg.name not in METHODS:
        raise UserError(f"{cfg.name} is not an S4 method; choose one of: {', '.join(METHODS)}")
    if is_hard(cfg):
        H, M = model.config.d_model, model.config.d_state // 2
        check_counts(H, M, counts_of(cfg))
        _check_selection(model, selection, cfg)
    model.requires_grad_(cfg.name == "s4_full")
    if cfg.name in ("s4_frozen", "s4_full"):
        return trainable_names(model)
    for i, block in enumerate(model.layers):
        if cfg.name == "s4_lora":
            if cfg.rank is not None:
                _add_lora(block, cfg.rank)
            if cfg.ssm_rank is not None:
                _add_ssm_lora(block.ssm, cfg.ssm_rank)
        elif cfg.mode == "soft":
            _add_soft(block, cfg)
        else:
            _add_selective(block, selection[i], cfg)
        block.ssm.D.requires_grad_(cfg.train_D)
    return trainable_names(model)


def l1_penalty(model: DeepS4, cfg) -> Tensor | None:
    """Soft mode's penalty, added to the training loss: ``select_penalty`` x sum |C| (complex modulus of every
    (channel, mode) entry: drives whole modes out of the output) + ``update_penalty`` x the deltas' summed |.| (C's
    real and imaginary parts, log_A_real, A_imag: few entries move). None outside soft mode or with both weights 0.
    (The SDT code's penalty multiplies C's real part by exp(log_A_real) and its imaginary part by A_imag; the plain
    moduli are used here.)"""
    if cfg.name not in SELECTIVE or cfg.mode != "soft" or not (cfg.select_penalty or cfg.update_penalty):
        return None
    total = torch.zeros((), device=model.ssms()[0].C.device)
    for ssm in model.ssms():
        if cfg.select_penalty:
            total = total + cfg.select_penalty * torch.view_as_complex(ssm.C).abs().sum()
        if cfg.update_penalty:
            deltas = [ssm.parametrizations[name][0].values for name in SSM_TABLES]
            total = total + cfg.update_penalty * sum(d.abs().sum() for d in deltas)
    return total
