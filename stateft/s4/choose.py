"""SDT's choice of dimensions on a ``DeepS4``, by each ``select_by`` of the SDT code (``run_s4.py``'s
``ssm_warmup_mode``) plus a random baseline. Every mode returns one ``LayerSelection`` per layer; the model passed
in is left unchanged (the searches work on copies).

- ``magnitude`` (the paper's): warm up a copy, keep by the contribution |Cbar Abar^(L/2)|, update by how far the
  warm-up moved A (``stateft.s4.selection``).
- ``loss``: no warm-up. Layer by layer, each channel's C is zeroed in turn and the loss on one batch measured; the
  ``select_channels`` channels whose removal costs the most are kept, the others stay zeroed for the rest of the
  search; then the same over each kept channel's modes. The updated channels and modes are the kept ones whose
  removal cost the most. (The SDT code ranks the updated ones by the loss with a zero delta on each candidate,
  which equals the loss without it, so its ranking there is by batch noise; the removal cost is used instead.)
  The SDT code draws a fresh batch for every candidate; here every candidate of a search sees the same batch.
- ``grad``: no warm-up, every channel and mode kept (``select_*`` unused, as the SDT code); one batch's gradient
  picks the updated ones: per channel the norm of the gradients of its C, log_A_real and A_imag rows and of its
  column of the output linear, per mode the norm of its C, log_A_real and A_imag entries. (The SDT code takes
  exp() of the log_A_real gradient in the channel score; the plain gradient is used here.)
- ``hybrid``: ``magnitude`` keeps, ``loss``'s removal cost picks the updated among the kept.
- ``random``: uniformly random kept and updated dimensions from ``seed`` (not in the SDT code: a baseline).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from stateft.s4.model import DeepS4
from stateft.s4.selection import LayerSelection, check_counts, counts_of, select_dimensions
from stateft.s4.warmup import warm_up

Batches = Iterator[tuple[Tensor, Tensor]]


def choose(model: DeepS4, cfg, batches: Batches, seq_len: int) -> list[LayerSelection]:
    """The selection of ``cfg.select_by`` (``cfg``: an s4_sdt / s4_sdlora config) from training ``batches``."""
    H, M = model.config.d_model, model.config.d_state // 2
    counts = counts_of(cfg)
    check_counts(H, M, counts)
    if cfg.select_by == "random":
        return _random(model, counts, cfg.seed)
    if cfg.select_by == "grad":
        return _by_gradient(model, counts, next(batches))
    if cfg.select_by == "loss":
        return _by_removal(model, counts, next(batches))
    warmed = warm_up(model, _loss_fn(batches), cfg.warmup_steps, cfg.warmup_lr or cfg.lr, cfg.warmup_params)
    chosen = select_dimensions(model.ssms(), warmed.ssms(), seq_len, counts)
    if cfg.select_by == "hybrid":
        return _by_removal(model, counts, next(batches), keep=chosen)
    return chosen


def _loss_fn(batches: Batches) -> Callable[[DeepS4], Tensor]:
    def loss_fn(model: DeepS4) -> Tensor:
        x, y = next(batches)
        return model.loss(x, y)

    return loss_fn


def _top(scores: dict[int, float], k: int) -> list[int]:
    """The k keys with the largest scores, ascending (ties by index)."""
    ranked = sorted(scores, key=lambda i: (-scores[i], i))
    return sorted(ranked[:k])


def _random(model: DeepS4, counts: dict[str, int], seed: int) -> list[LayerSelection]:
    g = torch.Generator().manual_seed(seed)
    H, M = model.config.d_model, model.config.d_state // 2

    def pick(among: list[int], k: int) -> list[int]:
        return sorted(among[i] for i in torch.randperm(len(among), generator=g)[:k].tolist())

    out = []
    for _ in model.layers:
        keep = pick(list(range(H)), counts["select_channels"])
        keep_states = [pick(list(range(M)), counts["select_states"]) for _ in keep]
        kept = dict(zip(keep, keep_states))
        update = pick(keep, counts["update_channels"])
        out.append(LayerSelection(keep, keep_states, update, [pick(kept[h], counts["update_states"]) for h in update]))
    return out


def _by_gradient(model: DeepS4, counts: dict[str, int], batch: tuple[Tensor, Tensor]) -> list[LayerSelection]:
    work = copy.deepcopy(model).train()
    work.requires_grad_(True)
    work.zero_grad(set_to_none=True)
    work.loss(*batch).backward()
    H, M = model.config.d_model, model.config.d_state // 2
    out = []
    for block in work.layers:
        ssm = block.ssm
        gC, gR, gI = ssm.C.grad.detach(), ssm.log_A_real.grad.detach(), ssm.A_imag.grad.detach()
        gW = block.output_linear.weight.grad.detach()
        per_channel = {h: torch.cat([gC[h].flatten(), gR[h], gI[h], gW[:, h]]).norm().item() for h in range(H)}
        update = _top(per_channel, counts["update_channels"])
        states = []
        for h in update:
            per_mode = {n: torch.cat([gC[h, n], gR[h, n : n + 1], gI[h, n : n + 1]]).norm().item() for n in range(M)}
            states.append(_top(per_mode, counts["update_states"]))
        everything = list(range(M))
        out.append(LayerSelection(list(range(H)), [everything for _ in range(H)], update, states))
    return out


@torch.no_grad()
def _removal_cost(model: DeepS4, batch: tuple[Tensor, Tensor], C: Tensor, entries: list) -> dict:
    """The loss with each entry of ``entries`` (an index into C) zeroed alone (C restored after each)."""
    costs = {}
    for key, index in entries:
        saved = C[index].clone()
        C[index] = 0
        costs[key] = model.loss(*batch).item()
        C[index] = saved
    return costs


@torch.no_grad()
def _by_removal(
    model: DeepS4, counts: dict[str, int], batch: tuple[Tensor, Tensor], keep: list[LayerSelection] | None = None
) -> list[LayerSelection]:
    """``loss`` (``keep`` None) or ``hybrid`` (``keep``: the kept dimensions already chosen)."""
    work = copy.deepcopy(model).eval()
    H, M = model.config.d_model, model.config.d_state // 2
    out = []
    for i, ssm in enumerate(work.ssms()):
        C = ssm.C.data
        channel_cost = _removal_cost(work, batch, C, [(h, h) for h in range(H)])
        kept = keep[i].keep_channels if keep else _top(channel_cost, counts["select_channels"])
        C[[h for h in range(H) if h not in kept]] = 0
        keep_states, state_cost = [], {}
        for j, h in enumerate(kept):
            state_cost[h] = _removal_cost(work, batch, C, [(n, (h, n)) for n in range(M)])
            states = keep[i].keep_states[j] if keep else _top(state_cost[h], counts["select_states"])
            C[h, [n for n in range(M) if n not in states]] = 0
            keep_states.append(states)
        update = _top({h: channel_cost[h] for h in kept}, counts["update_channels"])
        kept_states = dict(zip(kept, keep_states))
        update_states = [_top({n: state_cost[h][n] for n in kept_states[h]}, counts["update_states"]) for h in update]
        out.append(LayerSelection(list(kept), keep_states, update, update_states))
    return out
