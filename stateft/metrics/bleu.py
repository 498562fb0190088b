"""Corpus BLEU-4 as HF ``evaluate``'s ``bleu`` defines it (the DART metric of the reference).

Definition: sacrebleu's 13a tokenisation (case kept); modified n-gram precisions p_1..p_4 over the corpus, each
n-gram's count clipped by its maximum count in any one reference of the example (all references used); no smoothing
(BLEU is 0 when any p_n is 0); brevity penalty exp(1 - r/c) when c <= r, with c the total prediction length and r the
sum over examples of the *shortest* reference length (not sacrebleu's closest). Returns a fraction in [0, 1].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence


def tokenize_13a(text: str) -> list[str]:
    """sacrebleu's 13a tokeniser (mteval-v13a), split on whitespace."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text).split()


def ngrams(tokens: list[str], n: int) -> Counter:
    """Counts of the n-grams of ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    predictions: Sequence[str], references: Sequence[Sequence[str]], max_order: int = 4
) -> dict[str, float]:
    """``bleu`` and its parts (``precisions_n``, ``brevity_penalty``, lengths) for the corpus."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    matches, possible = [0] * max_order, [0] * max_order
    pred_len = ref_len = 0
    for pred, refs in zip(predictions, references):
        if isinstance(refs, str) or not refs:
            raise ValueError("each example needs a non-empty list of references")
        pred_toks = tokenize_13a(pred)
        ref_toks = [tokenize_13a(r) for r in refs]
        pred_len += len(pred_toks)
        ref_len += min(len(r) for r in ref_toks)
        for n in range(1, max_order + 1):
            max_ref: Counter = Counter()
            for r in ref_toks:
                max_ref |= ngrams(r, n)  # | keeps the maximum count of each n-gram
            counts = ngrams(pred_toks, n)
            matches[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            possible[n - 1] += max(len(pred_toks) - n + 1, 0)
    precisions = [m / p if p else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) for p in precisions) / max_order) if min(precisions) > 0 else 0.0
    ratio = pred_len / ref_len if ref_len else 0.0
    bp = 1.0 if ratio > 1.0 else (math.exp(1 - 1 / ratio) if ratio > 0 else 0.0)
    out = {"bleu": geo_mean * bp, "brevity_penalty": bp, "length_ratio": ratio}
    out.update({f"precision_{n + 1}": p for n, p in enumerate(precisions)})
    out.update({"translation_length": float(pred_len), "reference_length": float(ref_len)})
    return out
