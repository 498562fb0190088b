"""The SDT code's optimisation loop for deep S4: AdamW with torch's default weight decay (0.01) on a model's trainable
parameters, one update per step, no schedule, no gradient clipping. The warm-up (``stateft.s4.warmup``), pretraining
and tuning (``stateft.s4.train``) all run it.

This module imports no other part of stateft: the warm-up runs inside the method registry's ``apply``, and tuning
applies methods through that registry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def adamw_steps(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], Tensor],
    steps: int,
    lr: float,
    penalty: Callable[[nn.Module], Tensor | None] | None = None,
) -> list[float]:
    """``steps`` AdamW updates of ``model``'s trainable parameters, each minimising ``loss_fn(model)`` (plus
    ``penalty(model)`` when that is not None) in train mode; the value of ``loss_fn`` at each step. The model is left
    in eval mode; one with no trainable parameters is left as it is (and the list is empty)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = loss_fn(model)
        extra = penalty(model) if penalty is not None else None
        optimizer.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        losses.append(loss.detach())
    model.eval()
    return torch.stack(losses).tolist() if losses else []  # read back once, not a sync per step
