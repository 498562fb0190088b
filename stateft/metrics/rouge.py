"""ROUGE-1/2/L F1 with the ``rouge_score`` package (no stemmer: the reference's setting).

HF ``evaluate``'s rouge wraps the same scorer and aggregates by a bootstrap median; the plain mean used here is its
deterministic equivalent. Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def score(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Mean F1 of ROUGE-1, -2 and -L; with several references per example, the best one (``score_multi``)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred) if isinstance(ref, str) else scorer.score_multi(list(ref), pred)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    n = max(len(predictions), 1)
    return {name: total / n for name, total in totals.items()}
