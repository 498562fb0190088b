"""Selective dimension tuning on S6 (Galim et al., 2024, arXiv:2410.09016): the machinery `sdt` and `sdlora` share.

Per Mamba-1 layer, with E channels (d_inner) and N states (d_state):
- warm-up (phase 1, on a throw-away copy of the model): a dense additive delta on A_log (E, N), zero-initialised,
  optionally with a LoRA on out_proj, trained for ``num_warmup_it + 1`` optimizer updates (the count of the SDT
  paper's code: its switch fires once an update counter passes num_warmup_it) with AdamW (weight decay 0, grad-norm
  clip 1.0) at the run's learning rate under the run's linear decay: the scheduler spans the whole run
  (``warmup_schedule_epochs`` x batches per epoch), so the warm-up sees only its first steps.
- selection: channel e scores sum_n delta[e, n]^2; the top ``E - round(freeze_channels E)`` channels are kept, and in
  each kept channel the top ``N - round(freeze_states N)`` states by delta[e, n]^2.
- training (phase 2, on the pretrained weights): sparse additive deltas, zero-initialised, on A_log at (kept channel,
  kept state) and on all N rows of W_B and W_C (x_proj's B and C row blocks) at the kept channels' columns.
The deltas are parametrisations of the frozen weights (``torch.nn.utils.parametrize``), so the model is unchanged at
init and the deltas train as ordinary parameters. The selection (per layer: [kept channels, kept states per channel])
is written into the method config, and so into ``adapter_config.json``: loading re-applies it with no warm-up.
"""

from __future__ import annotations

import copy
import operator
import os
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from stateft.errors import UserError
from stateft.methods.base import freeze_all, init_generator
from stateft.methods.configs import LoraConfig, SDTConfig
from stateft.methods.deltas import DenseDelta, EntryDelta
from stateft.methods.lora import wrap_targets
from stateft.models.backbone import device_of

GRAD_CLIP = 1.0  # the papers' grad-norm clip, as in the run itself


def kept(total: int, freeze: float) -> int:
    """How many of ``total`` dimensions stay trainable when the fraction ``freeze`` is frozen: the SDT code's
    ``total - round(freeze * total)`` (Python's round, half to even), at least one (a tiny model's 1% of channels)."""
    return max(1, total - round(freeze * total))


def select_dimensions(delta: Tensor, n_channels: int, n_states: int) -> list:
    """delta (E, N) -> [channels, states per channel]: the top channels by sum_n delta^2, then in each the top states
    by delta^2; indices sorted ascending."""
    sq = delta.detach().float().pow(2)
    channels = sq.sum(1).topk(n_channels).indices.sort().values
    states = sq[channels].topk(n_states, dim=1).indices.sort(dim=1).values
    return [channels.tolist(), states.tolist()]


def _check_selection(selection: list, model: nn.Module, n_channels: int, n_states: int, name: str) -> None:
    """A stored selection must fit this model and the configured counts (it comes from a file or the command line)."""
    E, N, L = model.config.d_inner, model.config.d_state, model.config.n_layer
    if not isinstance(selection, list) or len(selection) != L:
        size = len(selection) if isinstance(selection, list) else "no"
        raise UserError(f"{name} selection has {size} layers; the model has {L} (re-run the warm-up: selection=null)")
    for layer, entry in enumerate(selection):
        channels, states = entry if isinstance(entry, list | tuple) and len(entry) == 2 else (None, None)
        ok = isinstance(channels, list) and len(channels) == n_channels == len(set(channels))
        ok = ok and all(isinstance(c, int) and 0 <= c < E for c in channels)
        ok = ok and isinstance(states, list) and len(states) == n_channels
        ok = ok and all(isinstance(s, list) and len(s) == n_states == len(set(s)) for s in states)
        ok = ok and all(isinstance(n, int) and 0 <= n < N for s in states for n in s)
        if not ok:
            raise UserError(
                f"{name} selection of layer {layer} is not {n_channels} distinct channels < {E} with {n_states} "
                f"distinct states < {N} each (the freeze ratios changed?); re-run the warm-up: selection=null"
            )


def _warmup_device(model: nn.Module) -> torch.device:
    """The warm-up runs before Lightning moves the model: on this process's GPU when there is one."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device_of(model)


def warmup_deltas(
    model: nn.Module, cfg: SDTConfig, train_batches: Iterable, lora: LoraConfig | None = None
) -> list[Tensor]:
    """Phase 1 on a copy of ``model``: the dense A_log delta (E, N) of every layer after the warm-up."""
    from stateft.loss import lm_loss

    lr = cfg.warmup_lr if cfg.warmup_lr is not None else cfg.lr
    if lr is None:
        raise UserError(f"{cfg.name}'s warm-up needs a learning rate: set method.lr=... (or method.warmup_lr=...)")
    device = _warmup_device(model)
    work = copy.deepcopy(model).to(device)
    freeze_all(work)
    generator = init_generator(2)
    deltas = []
    for mixer in work.mixers():
        delta = DenseDelta(mixer.A_log.float())  # an fp32 delta whatever A_log's dtype, as every adapter parameter
        parametrize.register_parametrization(mixer, "A_log", delta)
        deltas.append(delta.values)
        if lora is not None:
            wrap_targets(mixer, ["out_proj"], lora, generator)
    params = [p for p in work.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    batches = iter(train_batches)
    per_epoch = operator.length_hint(batches)
    if per_epoch <= 0:
        raise ValueError(f"{cfg.name}'s warm-up needs training batches with a known number per epoch")
    total = max(1, cfg.warmup_schedule_epochs * per_epoch)  # the run's linear decay to 0, no warm-up ramp
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, (total - step) / total))
    work.train()
    for _ in range(cfg.num_warmup_it + 1):
        batch = next(batches, None)
        if batch is None:  # a warm-up longer than an epoch goes on into the next one
            batches = iter(train_batches)
            batch = next(batches)
        loss = lm_loss(work, batch["input_ids"].to(device), batch["labels"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        optimizer.step()
        scheduler.step()
    result = [d.detach().cpu() for d in deltas]
    del work, optimizer, deltas
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def resolve_selection(
    model: nn.Module, cfg: SDTConfig, train_batches: Iterable | None, lora: LoraConfig | None = None
) -> list:
    """``cfg.selection``: the stored one (checked), the warm-up's, or on the meta device (a dry run) the first
    channels and states, since a count does not depend on which dimensions the warm-up would pick."""
    n_channels = kept(model.config.d_inner, cfg.freeze_channels)
    n_states = kept(model.config.d_state, cfg.freeze_states)
    if cfg.selection is None and device_of(model).type == "meta":
        cfg.selection = [[list(range(n_channels)), [list(range(n_states))] * n_channels]] * model.config.n_layer
    if cfg.selection is None:
        if train_batches is None:
            raise UserError(f"{cfg.name} needs training batches for its warm-up run (or a stored method.selection)")
        deltas = warmup_deltas(model, cfg, train_batches, lora)
        cfg.selection = [select_dimensions(d, n_channels, n_states) for d in deltas]
    _check_selection(cfg.selection, model, n_channels, n_states, cfg.name)
    return cfg.selection


def add_sparse_deltas(mixer: nn.Module, channels: list[int], states: list[list[int]]) -> None:
    """Sparse trainable deltas on A_log (kept channel x kept state) and on W_B, W_C (all N rows x kept channels)."""
    device = device_of(mixer)
    ch = torch.tensor(channels, dtype=torch.long, device=device)  # (c,)
    st = torch.tensor(states, dtype=torch.long, device=device)  # (c, s)
    a_rows = ch[:, None].expand_as(st).reshape(-1)
    parametrize.register_parametrization(mixer, "A_log", EntryDelta(a_rows, st.reshape(-1)))
    R, N = mixer.dt_rank, mixer.d_state
    bc_rows = torch.arange(R, R + 2 * N, device=device)  # the W_B and W_C row blocks of x_proj (R + 2N, E)
    rows = bc_rows[:, None].expand(-1, ch.numel()).reshape(-1)
    cols = ch[None, :].expand(2 * N, -1).reshape(-1)
    parametrize.register_parametrization(mixer.x_proj, "weight", EntryDelta(rows, cols))


def fold_selective(model: nn.Module) -> None:
    """Add the sparse deltas into A_log and x_proj's weight and remove the parametrisations (the mixer and x_proj
    get their own classes back): W + delta exactly, as the forward computes it."""
    for mixer in model.mixers():
        parametrize.remove_parametrizations(mixer, "A_log", leave_parametrized=True)
        parametrize.remove_parametrizations(mixer.x_proj, "weight", leave_parametrized=True)


def apply_selective(
    model: nn.Module, cfg: SDTConfig, train_batches: Iterable | None, lora: LoraConfig | None = None
) -> None:
    """Resolve the selection (warm-up with ``lora`` on out_proj if given), freeze the model, add the sparse deltas."""
    selection = resolve_selection(model, cfg, train_batches, lora)
    freeze_all(model)
    for mixer, (channels, states) in zip(model.mixers(), selection):
        add_sparse_deltas(mixer, channels, states)
