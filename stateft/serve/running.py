"""Continuous batching of greedy decoding: rows join a running batch between steps and leave it when they finish.

``RunningBatch`` holds the rows decoding together: one cache row, one adapter index and the next-token logits per
row. ``join`` prefills new prompts (the prompts of one adapter together: `stateft.serve.decode.prefill_by_adapter`)
and appends their cache rows, adapter indices and logits to the running ones; ``pick`` takes every row's greedy
token and lets the rows that are done leave (their EOS, or their own token limit reached), so their slots can be
filled by the next ``join``; ``advance`` runs one decoding step for the others, their adapter indices routed per
row; ``drop`` lets rows leave before their end (cancelled requests), between an ``advance`` and the next ``pick``, so
they cost no more steps. A row's tokens are what ``generation.generate`` gives for its prompt with its adapter alone
applied: greedy's choice for a row reads that row's logits only, and the cache rows of the batch never mix, whoever
joins or leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from stateft.models.cache import MambaCache
from stateft.serve.decode import RoutedRowStep, prefill_by_adapter
from stateft.serve.routing import Routing


class RunningRows:
    """Rows decoding together over ``model`` (its routed modules read ``routing``): a cache row, an adapter index and
    the next-token logits per row; rows appended by a prefill, kept or reordered by an index, stepped together.

    The cache rows and their adapter indices live in a `RoutedRowStep` (`stateft.serve.decode`, the step
    ``generate_routed`` decodes with): it selects both with one index and steps with the indices routed per row."""

    def __init__(self, model, routing: Routing) -> None:
        self.model, self.routing = model, routing
        self.vocab = model.config.vocab_size
        self.step: RoutedRowStep | None = None  # the rows' cache and (rows,) bank indices, on the model's device
        self.logits: Tensor | None = None  # (rows, V_padded): each row's next-token logits
        self._next: Tensor | None = None  # the tokens picked for the rows going on, until ``advance`` feeds them

    def __len__(self) -> int:
        """The requests in the batch."""
        raise NotImplementedError

    @torch.no_grad()
    def _append(self, prompts: list[list[int]], adapters: list[int], copies: list[int] | None = None) -> None:
        """Prefill ``prompts`` (prompt i with bank index ``adapters[i]``, ``copies[i]`` rows of it) and append their
        rows. On an error the rows are as before."""
        if self._next is not None:
            raise RuntimeError("advance the picked rows before others join")
        cache, logits = prefill_by_adapter(self.model, self.routing, prompts, adapters)
        index = torch.tensor(adapters, dtype=torch.long, device=logits.device)
        joining = RoutedRowStep(self.model, cache, 1, self.routing, index)
        if copies is not None:  # num_beams copies of every prompt's state, prompt after prompt
            repeat = torch.tensor(copies, device=logits.device)
            rows = torch.arange(len(prompts), device=logits.device).repeat_interleave(repeat)
            joining.select(rows)
            logits = logits.index_select(0, rows)
        if self.step is not None:
            cache = MambaCache.cat([self.step.cache, joining.cache])
            index = torch.cat([self.step.adapters, joining.adapters])
            joining = RoutedRowStep(self.model, cache, 1, self.routing, index)
            logits = torch.cat([self.logits, logits])
        self.step, self.logits = joining, logits

    def _keep(self, kept: list[int], tokens: list[int]) -> None:
        """Keep rows ``kept`` (in that order; none: empty the batch) and hold ``tokens``, one per kept row, for the
        next ``advance``."""
        if not kept:
            self.clear()
            return
        if kept != list(range(self.logits.shape[0])):
            self.step.select(torch.tensor(kept, device=self.logits.device))
        self._next = torch.tensor(tokens, device=self.logits.device)

    def _retain(self, kept: list[int]) -> None:
        """Keep rows ``kept`` (in that order; none: empty the batch) with their logits, between an ``advance`` and
        the next ``pick``: rows leaving before their end (cancelled requests)."""
        if self._next is not None:
            raise RuntimeError("advance the picked rows before dropping any")
        if not kept:
            self.clear()
            return
        index = torch.tensor(kept, device=self.logits.device)
        self.step.select(index)
        self.logits = self.logits.index_select(0, index)

    @torch.no_grad()
    def advance(self) -> None:
        """One decoding step for the rows kept by the last pick, each row with its adapter. If it fails, the batch is
        emptied (the caller fails what was running) and the error raised."""
        if self._next is None:
            return
        tokens, self._next = self._next, None
        try:
            self.logits = self.step(tokens)
        except BaseException:
            self.clear()
            raise

    def clear(self) -> None:
        self.step, self.logits, self._next = None, None, None


@dataclass
class Row:
    """One prompt being continued: ``key`` (the caller's: a request), its limit, its tokens so far (no EOS)."""

    key: Any
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)


class RunningBatch(RunningRows):
    """Greedy rows, decoded one step at a time."""

    def __init__(self, model, routing: Routing, eos_id: int | None) -> None:
        super().__init__(model, routing)
        self.eos_id = eos_id
        self.rows: list[Row] = []

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, keys: list[Any], prompts: list[list[int]], adapters: list[int], max_new_tokens: list[int]) -> None:
        """Prefill ``prompts`` (row i with bank index ``adapters[i]``, limit ``max_new_tokens[i]`` >= 1) and add them
        to the batch. On an error the batch is as before."""
        if prompts:
            self._append(prompts, adapters)
            self.rows += [Row(key, limit) for key, limit in zip(keys, max_new_tokens)]

    @torch.no_grad()
    def pick(self) -> tuple[list[tuple[Row, int]], list[Row]]:
        """Every row's next token: (the (row, token) pairs emitted, the rows done, which leave the batch). The rows
        that go on wait for ``advance``, which must come before the next ``join`` or ``pick``."""
        if self._next is not None:
            raise RuntimeError("advance the picked rows before picking again")
        if not self.rows:
            return [], []
        tokens = self.logits[:, : self.vocab].argmax(-1).tolist()
        emitted, finished, kept = [], [], []
        for slot, (row, token) in enumerate(zip(self.rows, tokens)):
            if token != self.eos_id:
                row.tokens.append(token)
                emitted.append((row, token))
                if len(row.tokens) < row.max_new_tokens:
                    kept.append(slot)
                    continue
            finished.append(row)
        self.rows = [self.rows[slot] for slot in kept]
        self._keep(kept, [tokens[slot] for slot in kept])
        return emitted, finished

    def drop(self, leaving: Callable[[Any], bool]) -> list[Row]:
        """Let the rows whose key ``leaving`` says leave now, before their end (between ``advance`` and ``pick``):
        they cost no more steps and their slots are free for the next ``join``. Returns them."""
        gone = [leaving(row.key) for row in self.rows]
        if not any(gone):
            return []
        dropped = [row for row, g in zip(self.rows, gone) if g]
        kept = [slot for slot, g in enumerate(gone) if not g]
        self._retain(kept)
        self.rows = [self.rows[slot] for slot in kept]
        return dropped

    def clear(self) -> None:
        super().clear()
        self.rows = []
