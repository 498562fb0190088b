"""METEOR with nltk's ``meteor_score`` (WordNet synonyms): mean over examples, max over each example's references.

Tokenisation is ``nltk.word_tokenize`` as HF ``evaluate``'s METEOR (the reference's) calls it: sentences first, with
nltk's English punkt model (``stateft.metrics.punkt``, offline), then nltk's Treebank word tokenizer per sentence.
Values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

from stateft.metrics.punkt import sentences
from stateft.metrics.wordnet import require_wordnet


def tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: punkt sentences, then Treebank word tokens of each."""
    from nltk.tokenize import NLTKWordTokenizer

    words = NLTKWordTokenizer()
    return [token for sentence in sentences(text) for token in words.tokenize(sentence)]


def score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``{"meteor": mean}``; raises a one-line UserError when WordNet is missing (never a silent 0)."""
    require_wordnet()
    from nltk.translate.meteor_score import meteor_score

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    total = 0.0
    for pred, refs in zip(predictions, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        # meteor_score(references, hypothesis) already takes the max over references
        total += meteor_score([tokenize(r) for r in refs], tokenize(pred))
    return {"meteor": total / max(len(predictions), 1)}
