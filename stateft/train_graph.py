"""The training forward and backward recorded as CUDA graphs (``cuda_graph=true`` in `train.py`).

A small model on short batches is launch-bound: a 130m step is several hundred small kernels, and the GPU waits on
Python between them (benchmarks/NOTES.md: the same 130m step takes 67 ms eager, 53 ms replayed; LoRA 107 -> 64 ms).
``GraphedLoss`` records the loss's forward and backward once (``torch.cuda.make_graphed_callables``) and replays them
every step; the optimiser step, gradient clipping and logging stay eager.

A graph replays fixed shapes, so every batch is padded to one of a few: (batch size, its length rounded up to a
multiple of ``bucket``, at most ``length``), or (batch size, ``length``) with ``bucket`` 0. Each shape is recorded
the first time it comes; all share one memory pool (one step's forward and backward replay before the next step's,
so a shape's intermediates may reuse another's). Extra rows and positions are padding with ignored labels, which the
token-mean loss does not see. The loss goes through the LM head at every position (selecting the target positions
would make the shape depend on the data).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stateft.capture import autocast_for_capture
from stateft.errors import UserError
from stateft.loss import IGNORE_INDEX
from stateft.ops.cross_entropy import chunked_cross_entropy


class _Loss(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, labels: Tensor) -> Tensor:
        hidden = self.model.hidden_states(input_ids)[:, :-1]
        return chunked_cross_entropy(
            hidden=hidden,
            weight=self.model.lm_head.weight,
            labels=labels[:, 1:],
            ignore_index=IGNORE_INDEX,
            backend=self.model.backend,
        )


class GraphedLoss:
    """``loss(input_ids, labels)``, the same value and gradients as `stateft.loss.lm_loss`, from replayed graphs.

    Batches of at most ``batch_size`` rows and ``length`` tokens are padded to ``batch_size`` rows and their length
    rounded up to a multiple of ``bucket`` (``length`` itself with ``bucket`` 0); each padded shape's graphs are
    recorded at its first call (under the autocast state of that call, `autocast_for_capture`).
    """

    def __init__(self, model: nn.Module, batch_size: int, length: int, pad_id: int = 0, bucket: int = 0) -> None:
        if bucket < 0:
            raise UserError(f"cuda_graph_bucket={bucket} must be >= 0 (0: every batch padded to dataset.max_length)")
        self.model, self.batch_size, self.length, self.pad_id, self.bucket = model, batch_size, length, pad_id, bucket
        self._graphed: dict[int, Any] = {}  # padded length -> graphed loss
        self._pool = None

    def padded_length(self, n: int) -> int:
        if not self.bucket:
            return self.length
        return min(self.length, max(-(-n // self.bucket), 1) * self.bucket)

    def pad(self, input_ids: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        b, n = input_ids.shape
        if b > self.batch_size or n > self.length:
            raise UserError(
                f"cuda_graph: a batch of {b} x {n} tokens does not fit the recorded {self.batch_size} x {self.length}; "
                "raise dataset.max_length (batches are padded up to it) or set cuda_graph=false"
            )
        grow = (0, self.padded_length(n) - n, 0, self.batch_size - b)
        return F.pad(input_ids, grow, value=self.pad_id), F.pad(labels, grow, value=IGNORE_INDEX)

    @property
    def recorded_lengths(self) -> list[int]:
        return sorted(self._graphed)

    def __call__(self, input_ids: Tensor, labels: Tensor) -> Tensor:
        input_ids, labels = self.pad(input_ids, labels)
        n = input_ids.shape[1]
        with autocast_for_capture():
            if n not in self._graphed:
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                self._graphed[n] = _record(_Loss(self.model), input_ids, labels, self._pool)
            return self._graphed[n](input_ids, labels)


def _record(loss_fn: nn.Module, input_ids: Tensor, labels: Tensor, pool: Any = None):
    """``make_graphed_callables``, after releasing the pinned host blocks that earlier eager work left behind.

    On an H100, an eager `lm_loss` earlier in the process (its boolean-mask selection copies through pinned memory)
    made the first recording fail ("operation would make the legacy stream depend on a capturing blocking stream");
    with the pinned blocks released first it records (2026-11-23; tests/test_train_graph.py covers both orders).
    """
    torch.cuda.synchronize()
    if hasattr(torch._C, "_host_emptyCache"):
        torch._C._host_emptyCache()
    try:
        return torch.cuda.make_graphed_callables(loss_fn, (input_ids, labels), pool=pool)
    except RuntimeError as err:
        if "captur" not in str(err):
            raise
        raise UserError(
            f"cuda_graph=true: recording the training step failed ({str(err).splitlines()[0]}); set cuda_graph=false"
        ) from None
