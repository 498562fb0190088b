"""Tuning a deep S4 with one method: apply it through the method registry, then AdamW on its trainable parameters.

The SDT code's optimiser: AdamW with torch's default weight decay (0.01), one update per batch, no schedule. Soft
mode (s4_sdt / s4_sdlora ``mode: soft``) adds ``stateft.s4.peft.l1_penalty`` to the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from stateft.methods.registry import apply_method
from stateft.s4.model import DeepS4
from stateft.s4.peft import count_trainable, l1_penalty

Batches = Iterator[tuple[Tensor, Tensor]]


def fit(
    model: DeepS4, batches: Batches, steps: int, lr: float, penalty: Callable[[DeepS4], Tensor | None] | None = None
) -> list[float]:
    """``steps`` AdamW updates of the trainable parameters on ``batches``; the task loss of each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return []
    optimizer = torch.optim.AdamW(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        x, y = next(batches)
        loss = model.loss(x, y)
        extra = penalty(model) if penalty is not None else None
        optimizer.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def tune(model: DeepS4, method, choice_batches: Batches, train_batches: Batches, steps: int) -> tuple[int, list]:
    """Apply ``method`` (a typed s4_* config) to ``model`` in place, its choice of dimensions (if any) from
    ``choice_batches``, then train it ``steps`` steps at its lr; (trainable parameters, losses)."""
    apply_method(method.name, model, method, train_batches=choice_batches)
    losses = fit(model, train_batches, steps, method.lr, lambda m: l1_penalty(m, method))
    return count_trainable(model), losses
