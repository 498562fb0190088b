"""Batched greedy and beam decoding where every row carries its own adapter index (`stateft.serve.routing`).

The same decoding as `stateft.generation.generate_batch`, with two changes, so that each row's tokens are what
``generation.generate`` gives for it on the base model with its adapter alone applied:

- prefill: the prompts of one adapter go through the parallel forward together (``generation.prefill``), the routing
  set to that adapter: the forward reads one unbatched offset or initial state per call, as every scan implementation
  takes it, that adapter's own LoRA factors, and its prompt or prefix modules in their slots. The rows' caches are
  then put back in request order.
- steps: ``RoutedRowStep`` keeps each row's adapter index beside its cache row: whenever rows are kept, dropped or
  reordered (an example finishing, beams reordered, k beams made from one prompt) the index is selected with the same
  index tensor, so the beams of an example always carry that example's adapter; every step runs with the index set,
  and the routed modules gather each row's offsets and LoRA factors.

The steps run eagerly: a recorded CUDA graph (`stateft.decode_graph`) would have to read the row index from a fixed
buffer as well, which these recordings do not.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stateft.decode_graph import RowStep
from stateft.generation import beam_batch, cat_in_order, greedy_batch, prefill
from stateft.models.cache import MambaCache
from stateft.serve.routing import Routing


class RoutedRowStep(RowStep):
    """``RowStep`` (eager) whose rows carry their adapter index ``adapters`` (rows,): ``select`` keeps the cache rows
    and their indices with one index, a call steps with the indices routed per row. The step of ``generate_routed``
    and of the running batches (`stateft.serve.running`)."""

    def __init__(self, model, cache: MambaCache, rows_per_group: int, routing: Routing, adapters: Tensor) -> None:
        super().__init__(model, cache, rows_per_group, cuda_graph=False)
        self.routing, self.adapters = routing, adapters

    def select(self, index: Tensor) -> None:
        super().select(index)
        self.adapters = self.adapters.index_select(0, index)

    def __call__(self, tokens: Tensor) -> Tensor:
        with self.routing.use(self.adapters):
            return super().__call__(tokens)


def prefill_by_adapter(
    model, routing: Routing, prompts: list[list[int]], adapters: list[int]
) -> tuple[MambaCache, Tensor]:
    """Every prompt through the parallel forward, the prompts of one adapter together: (cache with a row per prompt
    in the given order, last-position logits (b V))."""
    groups: dict[int, list[int]] = {}
    for row, adapter in enumerate(adapters):
        groups.setdefault(adapter, []).append(row)
    caches, logits, order = [], [], []
    for adapter, rows in groups.items():
        with routing.use(adapter):
            cache, group_logits = prefill(model, [prompts[r] for r in rows])
        caches.append(cache)
        logits.append(group_logits)
        order += rows
    return cat_in_order(caches, logits, order)


@torch.no_grad()
def generate_routed(
    model,
    routing: Routing,
    prompts: list[list[int]],
    adapters: list[int],
    max_new_tokens: int,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """Continue every prompt, row i with bank index ``adapters[i]`` (-1: none); returns the new tokens per row
    without the EOS token, as ``generation.generate_batch`` does."""
    if not prompts:
        return []
    if max_new_tokens < 1:
        return [[] for _ in prompts]
    cache, logits = prefill_by_adapter(model, routing, prompts, adapters)
    vocab = model.config.vocab_size
    rows = torch.tensor(adapters, dtype=torch.long, device=logits.device)
    if num_beams == 1:
        return greedy_batch(RoutedRowStep(model, cache, 1, routing, rows), logits, max_new_tokens, eos_id, vocab)
    step = RoutedRowStep(model, cache, num_beams, routing, rows)
    return beam_batch(step, logits, max_new_tokens, num_beams, eos_id, length_penalty, vocab)
