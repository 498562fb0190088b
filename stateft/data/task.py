"""What the training loop needs to know about a benchmark: how to decode and how to score."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Scorer = Callable[[list[str], list[dict[str, Any]]], dict[str, float]]


@dataclass(frozen=True)
class Example:
    """One formatted example. ``target`` is tokenised on its own; ``prefix`` either on its own or together with
    ``input`` (the DataModule's ``prefix_tokenization``). ``meta`` (JSON-serialisable) is what the metric needs."""

    prefix: str
    input: str
    target: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class Task:
    """Decoding settings and the scorer of one benchmark.

    ``generative`` False (GLUE): one decoding step, argmax over the whole vocabulary, decoded to a string.
    True (SAMSum, DART, Spider): beam search with ``num_beams`` up to ``max_new_tokens``. ``metric`` is the primary
    metric name (logged as ``val/<metric>``, higher is better). ``batch_invariant``: decoding's products computed
    the same way whatever the number of rows, so ``eval_batch_size`` never changes a prediction (a GPU's own products
    round by shape).
    """

    name: str
    metric: str
    generative: bool
    scorer: Scorer
    num_beams: int = 1
    max_new_tokens: int = 1
    # decode with batch-invariant products (`stateft.ops.invariance`): the same tokens whatever the batch
    batch_invariant: bool = False

    def score(self, predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
        """All metric values for decoded predictions (EOS stripped) aligned with the batch ``examples`` dicts."""
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        return self.scorer(list(predictions), list(examples))
