"""GLUE metrics: out-of-class handling and agreement with independent formulas."""

from __future__ import annotations

import numpy as np
import pytest

from stateft.metrics import glue


def test_out_of_class_counts_wrong_by_default_and_is_dropped_on_request():
    preds, labels = ["0", "1", " 1", "yes", "1"], [0, 1, 1, 0, 0]
    honest = glue.score(preds, labels, 2)
    assert honest["accuracy"] == pytest.approx(2 / 5)
    assert honest["out_of_class_rate"] == pytest.approx(2 / 5)
    dropped = glue.score(preds, labels, 2, drop_out_of_class=True)
    assert dropped["accuracy"] == pytest.approx(2 / 3)
    assert dropped["num_examples"] == 3
    assert dropped["out_of_class_rate"] == pytest.approx(2 / 5)


def test_three_classes_for_mnli():
    assert glue.to_class("2", 3) == 2
    assert glue.to_class("2", 2) is None
    assert glue.score(["2", "1", "0"], [2, 1, 1], 3)["accuracy"] == pytest.approx(2 / 3)


def test_f1_against_its_definition():
    preds, labels = ["1", "1", "0", "1", "0", "x"], [1, 0, 0, 1, 1, 1]
    tp, fp, fn = 2, 1, 2  # the out-of-class prediction on a positive is a missed positive
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert glue.score(preds, labels, 2, ("accuracy", "f1"))["f1"] == pytest.approx(
        2 * precision * recall / (precision + recall)
    )


def test_mcc_is_the_pearson_correlation_of_binary_vectors():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    preds = np.where(rng.random(200) < 0.7, labels, 1 - labels)
    expected = np.corrcoef(preds, labels)[0, 1]
    got = glue.score([str(p) for p in preds], labels.tolist(), 2, ("accuracy", "mcc"))["mcc"]
    assert got == pytest.approx(expected)
    assert glue.matthews_corrcoef([0, 1, 0], [0, 1, 0]) == pytest.approx(1.0)
    assert glue.matthews_corrcoef([1, 0, 1], [0, 1, 0]) == pytest.approx(-1.0)
    assert glue.matthews_corrcoef([1, 1, 1], [0, 1, 0]) == 0.0


def test_out_of_class_is_wrong_for_mcc():
    labels = [0, 1, 0, 1]
    assert glue.score(["0", "1", "0", "?"], labels, 2, ("mcc",))["mcc"] < 1.0


def test_only_the_bare_digit_tokens_are_classes():
    """Decoded-string matching equals the reference's token-id table (only the digit tokens map to a class)."""
    from stateft.tokenizer import load_tokenizer

    tok = load_tokenizer()
    vocab = tok.backend.get_vocab()
    in_class = {i: glue.to_class(tok.decode([i]), 3) for i in range(tok.vocab_size)}
    assert {i: c for i, c in in_class.items() if c is not None} == {vocab["0"]: 0, vocab["1"]: 1, vocab["2"]: 2}
    assert glue.to_class(tok.decode(tok.encode(" 0")), 2) is None  # the spaced digit is another token


def test_dropping_scores_only_the_in_class_predictions():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    preds = np.where(rng.random(300) < 0.7, labels, 1 - labels).astype(str).astype(object)
    out = rng.random(300) < 0.2
    preds[out] = rng.choice([" 0", " 1", "2", "", "yes"], int(out.sum()))
    got = glue.score(preds.tolist(), labels.tolist(), 2, ("accuracy", "f1", "mcc"), drop_out_of_class=True)
    kept_p, kept_g = preds[~out].astype(int), labels[~out]
    tp = int(((kept_p == 1) & (kept_g == 1)).sum())
    assert got["accuracy"] == pytest.approx((kept_p == kept_g).mean())
    assert got["f1"] == pytest.approx(2 * tp / ((kept_p == 1).sum() + (kept_g == 1).sum()))
    assert got["mcc"] == pytest.approx(np.corrcoef(kept_p, kept_g)[0, 1])
    assert got["num_examples"] == (~out).sum()
    assert got["out_of_class_rate"] == pytest.approx(out.mean())  # over all predictions, dropped ones included
    honest = glue.score(preds.tolist(), labels.tolist(), 2, ("accuracy",))
    assert honest["accuracy"] == pytest.approx(((preds == labels.astype(str)) & ~out).mean())
    assert honest["num_examples"] == 300
