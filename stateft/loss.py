"""Label-only language-modelling loss: token-level mean cross-entropy over the target tokens of a batch."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100


def lm_loss(model: nn.Module, input_ids: Tensor, labels: Tensor) -> Tensor:
    """input_ids, labels (b l), labels aligned with input_ids (-100 = no loss); position t predicts token t+1.

    Only the positions that predict a target token go through the LM head, so full-vocabulary logits are never
    built for prompt tokens (most of a GLUE or Spider example).
    """
    hidden = model.hidden_states(input_ids)[:, :-1]  # (b l-1 d)
    targets = labels[:, 1:]  # (b l-1)
    keep = targets != IGNORE_INDEX
    if not bool(keep.any()):
        return hidden.sum() * 0.0
    logits = model.lm_head(hidden[keep])  # (T V)
    return F.cross_entropy(logits.float(), targets[keep])


def count_target_tokens(labels: Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


__all__ = ["IGNORE_INDEX", "count_target_tokens", "lm_loss"]
