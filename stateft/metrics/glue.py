"""GLUE classification metrics on decoded one-step predictions.

A prediction is the argmax over the whole vocabulary at the prompt's last position, decoded. It is class ``i``
only if it is exactly the digit ``str(i)`` with ``i < num_labels``, not stripped: in GPT-NeoX-20B only the bare
digit tokens decode so (``" 0"`` is another token), which is the reference's rule (a table from token id to class
holding only the digit tokens). Anything else is out of class: by default counted wrong and its rate reported
(``out_of_class_rate``); ``drop_out_of_class=True`` reproduces the reference, which scored only the predictions in
class (``out_of_class_rate`` is still over all predictions; ``num_examples`` counts the ones scored). All values
are fractions in [0, 1] (MCC in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def to_class(prediction: str, num_labels: int) -> int | None:
    """The class of a decoded prediction, or None when it is not exactly one of the label digits."""
    digits = {str(i): i for i in range(num_labels)}
    return digits.get(prediction)


def accuracy(pred: Sequence[int | None], gold: Sequence[int]) -> float:
    """Fraction of exact matches (None, out of class, never matches)."""
    return sum(p == g for p, g in zip(pred, gold)) / len(gold) if gold else 0.0


def binary_f1(pred: Sequence[int | None], gold: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class; an out-of-class prediction is a negative prediction (it can only cost recall)."""
    tp = sum(p == positive and g == positive for p, g in zip(pred, gold))
    fp = sum(p == positive and g != positive for p, g in zip(pred, gold))
    fn = sum(p != positive and g == positive for p, g in zip(pred, gold))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews_corrcoef(pred: Sequence[int | None], gold: Sequence[int]) -> float:
    """Binary Matthews correlation with class 1 as positive; an out-of-class prediction counts as wrong (it is
    mapped to the class opposite to the gold). 0.0 when a marginal is empty (the sklearn convention)."""
    mapped = [p if p is not None else 1 - g for p, g in zip(pred, gold)]
    tp = sum(p == 1 and g == 1 for p, g in zip(mapped, gold))
    tn = sum(p == 0 and g == 0 for p, g in zip(mapped, gold))
    fp = sum(p == 1 and g == 0 for p, g in zip(mapped, gold))
    fn = sum(p == 0 and g == 1 for p, g in zip(mapped, gold))
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / denom if denom else 0.0


def score(
    predictions: Sequence[str],
    labels: Sequence[int],
    num_labels: int,
    metrics: Sequence[str] = ("accuracy",),
    drop_out_of_class: bool = False,
) -> dict[str, float]:
    """``accuracy`` and any of ``f1`` / ``mcc``, plus ``out_of_class_rate`` and ``num_examples``."""
    classes = [to_class(p, num_labels) for p in predictions]
    out_rate = sum(c is None for c in classes) / len(classes) if classes else 0.0
    gold = list(labels)
    if drop_out_of_class:
        kept = [(c, g) for c, g in zip(classes, gold) if c is not None]
        classes, gold = [c for c, _ in kept], [g for _, g in kept]
    result = {"accuracy": accuracy(classes, gold)}
    if "f1" in metrics:
        result["f1"] = binary_f1(classes, gold)
    if "mcc" in metrics:
        result["mcc"] = matthews_corrcoef(classes, gold)
    result["out_of_class_rate"] = out_rate
    result["num_examples"] = float(len(gold))
    return result
