"""Label-only language-modelling loss: token-level mean cross-entropy over the target tokens of a batch."""

from __future__ import annotations

from torch import Tensor, nn

from stateft.ops.cross_entropy import chunked_cross_entropy

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


def lm_loss(model: nn.Module, input_ids: Tensor, labels: Tensor, chunk_size: int = 1024) -> Tensor:
    """input_ids, labels (b l), labels aligned with input_ids (-100 = no loss); position t predicts token t+1.

    Only the positions that predict a target token reach the LM head (prompt tokens, most of a GLUE or Spider example,
    never do), and those go through it ``chunk_size`` at a time, so full-vocabulary fp32 logits never exist at once.
    """
    hidden = model.hidden_states(input_ids)[:, :-1]  # (b l-1 d)
    targets = labels[:, 1:]  # (b l-1)
    keep = targets != IGNORE_INDEX
    return chunked_cross_entropy(
        hidden=hidden[keep],
        weight=model.lm_head.weight,
        labels=targets[keep],
        ignore_index=IGNORE_INDEX,
        chunk_size=chunk_size,
        backend=model.backend,
    )


def count_target_tokens(labels: Tensor) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
