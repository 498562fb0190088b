"""One decoding step recorded as a CUDA graph and replayed per token.

A recurrent step through 24-64 layers is a few hundred small kernels; launched one at a time from Python, the GPU
waits on the CPU between them (the 130m model decoded 56 tokens/s greedy on an H100, `benchmarks/generate.py`).
``GraphedStep`` records ``MambaLM.step`` once for a fixed number of rows and replays the recording per token. A graph
reads and writes fixed addresses, so the cache's tensors become fixed buffers that every step updates in place, and
the token ids go through a fixed input buffer.

Used by `stateft.generation.generate` on CUDA; ``make_step`` falls back to the eager step anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from stateft.capture import autocast_for_capture
from stateft.models.cache import MambaCache

Step = Callable[[Tensor], Tensor]


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


def make_step(
    model: torch.nn.Module, cache: MambaCache, rows: int, cuda_graph: bool = True, eager_steps: int = 4
) -> Step:
    """The step function for decoding ``rows`` rows from ``cache`` (which has started).

    On CUDA with ``cuda_graph``: the first ``eager_steps`` calls run ``model.step`` (short answers never pay for the
    recording), later ones replay a `GraphedStep`. Elsewhere: ``model.step`` itself.
    """
    first = cache.layers[0].ssm if cache.layers else None
    if not (cuda_graph and first is not None and first.is_cuda):
        return lambda tokens: model.step(tokens, cache)
    calls = 0
    graphed: GraphedStep | None = None

    def step(tokens: Tensor) -> Tensor:
        nonlocal calls, graphed
        if graphed is None:
            calls += 1
            if calls <= eager_steps:
                return model.step(tokens, cache)
            graphed = GraphedStep(model, cache, rows)
        return graphed(tokens)

    return step
