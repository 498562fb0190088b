"""Predictions JSONL: written from batches, scored without a model, for every benchmark."""

from __future__ import annotations

import json

import pytest

from stateft.data import read_predictions, score_predictions_file, write_predictions
from stateft.data.dart import DartDataModule
from stateft.data.glue import GlueDataModule
from stateft.data.samsum import SamsumDataModule
from stateft.data.spider import SpiderDataModule
from stateft.errors import UserError
from tests.data.conftest import FIXTURES


def gold_answer(ex: dict) -> str:
    if "label" in ex:
        return str(ex["label"])
    if "query" in ex:
        return ex["query"]
    return ex["references"][0]


BENCHMARKS = {
    "glue_cola": (GlueDataModule, {"task": "cola", "metric": "mcc"}, "mcc"),
    "samsum": (SamsumDataModule, {"metric": "rougeL"}, "rougeL"),
    "dart": (DartDataModule, {"metric": "bleu"}, "bleu"),
    "spider": (SpiderDataModule, {"metric": "exec_acc"}, "exec_acc"),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_gold_predictions_score_perfectly(make_dm, tmp_path, name):
    cls, kwargs, metric = BENCHMARKS[name]
    dm = make_dm(cls, name=name, path=str(FIXTURES / name), **kwargs)
    examples = [it["example"] for it in dm.split_items("test")]
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, [{"example": ex, "prediction": gold_answer(ex)} for ex in examples])
    record = json.loads(path.read_text().splitlines()[0])
    assert set(record) == {"index", "prediction", "references"}
    scores = score_predictions_file(dm, path)
    assert scores[metric] == pytest.approx(1.0, abs=2e-3)  # METEOR's fragmentation penalty keeps it just below 1
    assert scores["missing"] == 0
    assert scores["num_scored"] == len(examples)
    assert dm.task.metric == metric


def test_spider_scores_wrong_and_hostile_predictions(make_dm, tmp_path):
    dm = make_dm(SpiderDataModule, name="spider", metric="exec_acc", path=str(FIXTURES / "spider"), timeout=1.0)
    examples = [it["example"] for it in dm.split_items("test")]
    preds = [ex["query"] for ex in examples]
    preds[0] = "DROP TABLE author"
    preds[1] = "SELECT name FROM author WHERE 0"
    scores = dm.task.score(preds, examples)
    assert scores["exec_acc"] == pytest.approx((len(examples) - 2) / len(examples))
    assert sum(scores[f"count_{level}"] for level in ("easy", "medium", "hard", "extra")) == len(examples)
    assert dm.task.generative
    assert (dm.task.num_beams, dm.task.max_new_tokens) == (1, 1)  # constructor defaults; the yaml sets 5 / 1024


def test_missing_and_unknown_indices(make_dm, tmp_path):
    dm = make_dm(GlueDataModule, task="rte", name="glue_rte", metric="accuracy", path=str(FIXTURES / "glue_rte"))
    examples = [it["example"] for it in dm.split_items("test")]
    path = tmp_path / "p.jsonl"
    write_predictions(path, [{"example": ex, "prediction": str(ex["label"])} for ex in examples[:4]])
    scores = score_predictions_file(dm, path)
    assert scores["missing"] == len(examples) - 4
    assert scores["accuracy"] == pytest.approx(4 / len(examples))  # a missing prediction is wrong
    path.write_text(json.dumps({"index": 999, "prediction": "0"}) + "\n")
    with pytest.raises(UserError, match="not in the test split"):
        score_predictions_file(dm, path)
    path.write_text('{"index": 0}\n')
    with pytest.raises(UserError, match="expected"):
        read_predictions(path)
    path.write_text('{"index": 0, "prediction": "0"}\n{"index": 0, "prediction": "1"}\n')
    with pytest.raises(UserError, match="duplicate"):
        read_predictions(path)


class _JoinIds:
    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def test_prompts_are_decoded_and_a_failed_write_keeps_the_file(tmp_path):
    path = tmp_path / "p.jsonl"
    write_predictions(
        path, [{"example": {"index": 3, "label": 1}, "prediction": "1", "prompt_ids": [5, 6]}], _JoinIds()
    )
    assert json.loads(path.read_text()) == {"index": 3, "prediction": "1", "prompt": "5 6", "references": ["1"]}
    with pytest.raises(KeyError):  # a record without prompt_ids, half-way through the file
        write_predictions(path, [{"example": {"index": 4}, "prediction": "x", "prompt_ids": [1]}, {}], _JoinIds())
    assert read_predictions(path) == {3: "1"}
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]
