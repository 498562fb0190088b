"""Continuous batching of beam search: examples join a running batch between steps and leave it when they are done.

``RunningBeams`` holds the examples searching together, each ``num_beams`` rows of the cache (its own width), its
bookkeeping a ``generation.Beams`` (the one ``generation.generate`` and ``beam_batch`` advance) and its own limit and
step count. ``join`` prefills new prompts and appends ``num_beams`` copies of each one's state; ``pick`` scores every
example's candidates (its sum log-probs plus each row's next-token log-probs, the top 2k, one ``topk`` per beam
width), advances its search, lets the examples that are done (``Beams`` says so, or their limit is reached) leave and
reorders the others' rows as their beams say; ``advance`` steps those rows, each with its adapter; ``drop`` lets
examples leave before their end (cancelled requests), their rows with them. An example's answer is what
``generation.generate`` gives for its prompt with its adapter alone applied: its candidates read its own rows only,
whoever joins or leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from stateft.generation import Beams, log_probs
from stateft.serve.routing import Routing
from stateft.serve.running import RunningRows


@dataclass
class Example:
    """One prompt's beam search: ``key`` (the caller's: a request), its search, its limit, the steps it has run."""

    key: Any
    search: Beams
    max_new_tokens: int
    steps: int = 0


class RunningBeams(RunningRows):
    """Beam-search examples, decoded one step at a time."""

    def __init__(self, model, routing: Routing, eos_id: int | None, length_penalty: float) -> None:
        super().__init__(model, routing)
        self.eos_id, self.length_penalty = eos_id, length_penalty
        self.examples: list[Example] = []

    def __len__(self) -> int:
        return len(self.examples)

    def join(
        self,
        keys: list[Any],
        prompts: list[list[int]],
        adapters: list[int],
        num_beams: list[int],
        max_new_tokens: list[int],
    ) -> None:
        """Prefill ``prompts`` (example i with bank index ``adapters[i]``, ``num_beams[i]`` >= 2 beams, limit
        ``max_new_tokens[i]`` >= 1) and add them to the batch. On an error the batch is as before."""
        if prompts:
            self._append(prompts, adapters, copies=num_beams)
            self.examples += [
                Example(key, Beams(k, self.eos_id, self.length_penalty), limit)
                for key, k, limit in zip(keys, num_beams, max_new_tokens)
            ]

    @torch.no_grad()
    def pick(self) -> list[Example]:
        """Advance every example's search by one step: the examples done, which leave the batch (their answer is
        ``search.best()``). The others' rows wait for ``advance``, which must come before the next ``join`` or
        ``pick``."""
        if self._next is not None:
            raise RuntimeError("advance the picked rows before picking again")
        if not self.examples:
            return []
        logprobs = log_probs(self.logits, self.vocab)  # (rows V)
        first_row, row = [], 0
        for example in self.examples:
            first_row.append(row)
            row += example.search.k
        widths: dict[int, list[int]] = {}
        for e, example in enumerate(self.examples):
            widths.setdefault(example.search.k, []).append(e)
        candidates: dict[int, tuple[list[float], list[int]]] = {}
        for k, members in widths.items():  # the examples of one beam width: one topk
            rows = torch.tensor([first_row[e] + r for e in members for r in range(k)], device=logprobs.device)
            scores = torch.tensor([self.examples[e].search.scores for e in members], device=logprobs.device)
            scored = (scores[:, :, None] + logprobs.index_select(0, rows).view(len(members), k, -1)).flatten(1)
            top_scores, top_index = (t.tolist() for t in scored.topk(2 * k, dim=1))
            candidates.update(zip(members, zip(top_scores, top_index)))
        finished, going_on, kept, tokens = [], [], [], []
        for e, example in enumerate(self.examples):
            example.steps += 1
            done = example.search.advance(*candidates[e], self.vocab, example.steps)
            if done or example.steps == example.max_new_tokens:
                finished.append(example)
                continue
            going_on.append(example)
            kept += [first_row[e] + r for r in example.search.rows]
            tokens += example.search.tokens
        self.examples = going_on
        self._keep(kept, tokens)
        return finished

    def drop(self, leaving: Callable[[Any], bool]) -> list[Example]:
        """Let the examples whose key ``leaving`` says leave now, before their end (between ``advance`` and
        ``pick``): their rows cost no more steps. Returns them."""
        gone = [leaving(example.key) for example in self.examples]
        if not any(gone):
            return []
        kept, first = [], 0
        for example, g in zip(self.examples, gone):
            if not g:
                kept += range(first, first + example.search.k)
            first += example.search.k
        dropped = [example for example, g in zip(self.examples, gone) if g]
        self._retain(kept)
        self.examples = [example for example, g in zip(self.examples, gone) if not g]
        return dropped

    def clear(self) -> None:
        super().clear()
        self.examples = []
