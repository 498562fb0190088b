"""One decoding step recorded as a CUDA graph and replayed per token.

A recurrent step through 24-64 layers is a few hundred small kernels; launched one at a time from Python, the GPU
waits on the CPU between them (the 130m model decoded 56 tokens/s greedy on an H100, `benchmarks/generate.py`).
``GraphedStep`` records ``MambaLM.step`` once for a fixed number of rows and replays the recording per token. A graph
reads and writes fixed addresses, so the cache's tensors become fixed buffers that every step updates in place, and
the token ids go through a fixed input buffer.

Used by `stateft.generation` through ``RowStep`` (a batch whose rows are dropped as its examples finish; one prompt is
a batch of one), which falls back to the eager step off CUDA or with ``cuda_graph`` off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stateft.capture import autocast_for_capture
from stateft.models.cache import MambaCache
from stateft.ops.invariance import batch_invariant_active


class GraphedStep:
    """``step(tokens (rows,)) -> logits (rows, V)`` replaying a recorded ``model.step`` on ``cache`` (in place).

    The returned logits live in a fixed buffer: consume them before the next call. Reordering the cache's rows (beam
    search) must copy into its buffers (`MambaCache.reorder` does when the row count stays the same).
    """

    def __init__(self, model: torch.nn.Module, cache: MambaCache, rows: int) -> None:
        self.model, self.cache = model, cache
        device = cache.layers[0].ssm.device
        for layer in cache.layers:  # own, contiguous buffers (the prefill leaves views)
            layer.conv = layer.conv.clone(memory_format=torch.contiguous_format)
            layer.ssm = layer.ssm.clone(memory_format=torch.contiguous_format)
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        saved = [(layer.conv.clone(), layer.ssm.clone()) for layer in cache.layers]
        try:
            with autocast_for_capture():
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):  # warm-up outside the capture: lazy initialisation, allocator
                    self._step()
                torch.cuda.current_stream(device).wait_stream(side)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.logits = self._step()
        finally:  # the warm-up and the capture each ran a step: back to the state after the prefill
            for layer, (conv, ssm) in zip(cache.layers, saved):
                layer.conv.copy_(conv)
                layer.ssm.copy_(ssm)
        self.buffers = [(layer.conv, layer.ssm) for layer in cache.layers]

    def adopt(self, cache: MambaCache) -> None:
        """Make ``cache`` (same row count) live in this recording's buffers: copy its tensors in unless they are
        the buffers already."""
        if cache.layers[0].ssm is self.buffers[0][1]:
            return
        for layer, (conv, ssm) in zip(cache.layers, self.buffers):
            conv.copy_(layer.conv)
            ssm.copy_(layer.ssm)
            layer.conv, layer.ssm = conv, ssm
        self.cache = cache

    def _step(self) -> Tensor:
        buffers = [(layer.conv, layer.ssm) for layer in self.cache.layers]
        logits = self.model.step(self.tokens, self.cache)
        for layer, (conv, ssm) in zip(self.cache.layers, buffers):  # the step's new state into the fixed buffers
            conv.copy_(layer.conv)
            ssm.copy_(layer.ssm)
            layer.conv, layer.ssm = conv, ssm
        return logits

    def __call__(self, tokens: Tensor) -> Tensor:
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits


def kept_recordings(model: torch.nn.Module) -> dict[int, GraphedStep]:
    """The decoding-step recordings kept on ``model`` across batches (a validation pass records each bucket once,
    not once per batch), by row count. A recording reads the parameters' memory and computes under the autocast
    state it was recorded in: when a parameter has been reallocated (moved, cast, replaced), or the autocast state
    or the products' batch invariance (`stateft.ops.invariance`) differs, the kept ones are dropped and recorded
    again. In-place updates (the optimiser's, an adapter loaded into the parameters) are read by the next replay."""
    key = (
        tuple(p.data_ptr() for p in model.parameters()),
        torch.is_autocast_enabled("cuda"),
        torch.get_autocast_dtype("cuda"),
        batch_invariant_active(),
    )
    kept = model.__dict__.get("_decode_recordings")
    if kept is None or kept[0] != key:
        kept = (key, {})
        model.__dict__["_decode_recordings"] = kept
    return kept[1]


class RowStep:
    """The decoding step of a batch that shrinks: ``select(index)`` keeps (and reorders) cache rows, ``step(tokens)``
    decodes one token for each row kept.

    Eager (CPU, or ``cuda_graph`` off): the cache holds exactly the rows kept. With recordings: the rows are padded
    to a bucket (``rows_per_group`` times a power of two, at most the starting row count) by repeating the last row,
    one recording per bucket, so a batch whose examples finish one by one replays a handful of recordings of falling
    size; the recordings are kept on the model for the next batch (``kept_recordings``). The padding rows' outputs
    are dropped and their state is never selected again.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        cache: MambaCache,
        rows_per_group: int,
        cuda_graph: bool = True,
        eager_steps: int = 4,
    ) -> None:
        self.model, self.cache, self.group = model, cache, rows_per_group
        first = cache.layers[0].ssm if cache.layers else None
        self.graphs_on = bool(cuda_graph and first is not None and first.is_cuda)
        self.rows = self.capacity = first.shape[0] if first is not None else 0
        self.eager_steps, self.calls = eager_steps, 0
        self.graphs = kept_recordings(model) if self.graphs_on else {}

    def _bucket(self, rows: int) -> int:
        if not self.graphs_on:
            return rows
        groups = -(-rows // self.group)
        return min(self.group * (1 << (groups - 1).bit_length()), self.capacity)

    def select(self, index: Tensor) -> None:
        """Keep cache rows ``index`` (len r), in that order; row i of the next step continues row index[i]."""
        self.rows = len(index)
        self.capacity = max(self.capacity, self.rows)  # the first selection may repeat rows (beams)
        size = self._bucket(self.rows)
        if size > self.rows:
            index = torch.cat([index, index[-1:].expand(size - self.rows)])
        self.cache.reorder(index)

    def __call__(self, tokens: Tensor) -> Tensor:
        """tokens (r,) for the r rows selected -> logits (r, V)."""
        size = self.cache.layers[0].ssm.shape[0]
        if size > len(tokens):
            tokens = torch.cat([tokens, tokens[-1:].expand(size - len(tokens))])
        self.calls += 1
        graph = self.graphs.get(size)
        # a size recorded for an earlier batch replays at once; a new one after eager_steps calls (short answers
        # never pay for a recording)
        if not self.graphs_on or (graph is None and self.calls <= self.eager_steps):
            return self.model.step(tokens, self.cache)[: self.rows]
        if graph is None:
            graph = self.graphs[size] = GraphedStep(self.model, self.cache, size)
        graph.adopt(self.cache)
        return graph(tokens)[: self.rows]
