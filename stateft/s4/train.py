"""Tuning a deep S4 with one method: apply it through the method registry, then AdamW on its trainable parameters.

The SDT code's optimiser (``stateft.s4.adamw``), one update per batch. Soft mode (s4_sdt / s4_sdlora ``mode: soft``)
adds ``stateft.s4.peft.l1_penalty`` to the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import Tensor

from stateft.methods.registry import apply_method
from stateft.s4.adamw import adamw_steps
from stateft.s4.model import DeepS4
from stateft.s4.peft import count_trainable, l1_penalty

Batches = Iterator[tuple[Tensor, Tensor]]


def fit(
    model: DeepS4, batches: Batches, steps: int, lr: float, penalty: Callable[[DeepS4], Tensor | None] | None = None
) -> list[float]:
    """``steps`` AdamW updates of the trainable parameters, one batch of ``batches`` each; the task loss of each
    step."""
    return adamw_steps(model, lambda m: m.loss(*next(batches)), steps, lr, penalty)


def tune(model: DeepS4, method, choice_batches: Batches, train_batches: Batches, steps: int) -> tuple[int, list]:
    """Apply ``method`` (a typed s4_* config) to ``model`` in place, its choice of dimensions (if any) from
    ``choice_batches``, then train it ``steps`` steps at its lr; (trainable parameters, losses)."""
    apply_method(method.name, model, method, train_batches=choice_batches)
    losses = fit(model, train_batches, steps, method.lr, lambda m: l1_penalty(m, method))
    return count_trainable(model), losses
