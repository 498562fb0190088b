"""ROUGE, BLEU and METEOR agree with the reference packages (rouge_score, sacrebleu's definition pieces, nltk)."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from stateft.errors import UserError
from stateft.metrics import bleu, meteor, rouge

PREDS = [
    "Ben will come to the party at 8 and bring snacks.",
    "Liz picks Tom up, he missed the bus.",
    "The cat is fed now by Joe.",
    "Meeting at 3 pm.",
]
REFS = [
    "Ben will come to Anna's party around 8 and bring snacks.",
    "Liz will pick Tom up because he missed the bus.",
    "Joe is going to feed the cat now.",
    "The meeting was moved to 3 pm. Sara told Dan.",
]


def test_rouge_is_the_mean_of_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    per_example = [scorer.score(r, p) for p, r in zip(PREDS, REFS)]
    got = rouge.score(PREDS, REFS)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert got[name] == pytest.approx(sum(s[name].fmeasure for s in per_example) / len(PREDS))
    assert got == rouge.score(PREDS, REFS)  # deterministic (no bootstrap)
    assert rouge.score(REFS, REFS)["rougeL"] == pytest.approx(1.0)


def test_bleu_equals_sacrebleu_when_shortest_and_closest_reference_agree():
    # one reference per example: sacrebleu's closest-reference length is the shortest one
    ours = bleu.corpus_bleu(PREDS, [[r] for r in REFS])["bleu"]
    theirs = sacrebleu.corpus_bleu(PREDS, [REFS], tokenize="13a", smooth_method="none", force=True).score / 100
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_bleu_uses_all_references_and_the_shortest_length():
    pred = "the cat sat on the mat today"
    refs = ["the cat sat on the mat today in the sun", "a cat sat on the mat today", "the cat was on a mat"]
    out = bleu.corpus_bleu([pred], [refs])
    # clipped n-gram matches against the union (max count) of all references, computed by hand
    assert [out[f"precision_{n}"] for n in (1, 2, 3, 4)] == pytest.approx([7 / 7, 6 / 6, 5 / 5, 4 / 4])
    shortest = 6
    assert out["reference_length"] == shortest
    assert out["brevity_penalty"] == 1.0  # 7 tokens > 6: sacrebleu's closest (7) would give the same; see below
    short = bleu.corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat", "the cat sat on the mat here"]])
    assert short["bleu"] == pytest.approx(1.0)
    long_only = bleu.corpus_bleu(["the cat sat on"], [["the cat sat on the mat today", "the cat sat on the mat"]])
    assert long_only["brevity_penalty"] == pytest.approx(math.exp(1 - 6 / 4))


def test_bleu_has_no_smoothing_and_13a_tokens():
    assert bleu.corpus_bleu(["a b c"], [["a b d e"]])["bleu"] == 0.0  # no 4-gram match: 0, not smoothed
    assert bleu.tokenize_13a("Hello, world!") == ["Hello", ",", "world", "!"]


def test_meteor_equals_nltk_with_max_over_references():
    from nltk.translate.meteor_score import meteor_score, single_meteor_score

    refs = [[r, "completely different words here"] for r in REFS]
    got = meteor.score(PREDS, refs)["meteor"]
    expected = []
    for p, rs in zip(PREDS, refs):
        tok_refs = [meteor.tokenize(r) for r in rs]
        expected.append(meteor_score(tok_refs, meteor.tokenize(p)))
        assert expected[-1] == max(single_meteor_score(r, meteor.tokenize(p)) for r in tok_refs)
    assert got == pytest.approx(sum(expected) / len(expected))
    assert got == meteor.score(PREDS, refs)["meteor"]


def test_meteor_uses_wordnet_synonyms():
    from nltk.translate.meteor_score import single_meteor_score

    class NoWordNet:
        def synsets(self, *args, **kwargs):
            return []

    # "car" and "auto" are lemmas of one synset (nltk matches synonyms after stemming, so both must stem to themselves)
    ref, hyp = "he sold the auto", "he sold the car"
    with_synonyms = meteor.score([hyp], [[ref]])["meteor"]
    assert with_synonyms > single_meteor_score(ref.split(), hyp.split(), wordnet=NoWordNet())
    assert with_synonyms == pytest.approx(single_meteor_score(ref.split(), hyp.split()))


def test_meteor_without_wordnet_is_a_clear_error(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(UserError, match="WordNet"):
        meteor.score(["a"], [["a"]])
