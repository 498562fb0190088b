"""All 1034 Spider dev gold queries scored against themselves on databases built from tables.json."""

from __future__ import annotations

import pytest

from stateft.metrics.spider.evaluate import SpiderEvaluator, flat_scores, summarize
from stateft.metrics.spider.schema import load_schemas


@pytest.mark.parametrize("semantics", ["original", "test-suite"])
def test_every_dev_gold_matches_itself(spider_dev, spider_tables_path, spider_db_dir, semantics):
    golds = [ex["query"] for ex in spider_dev]
    db_ids = [ex["db_id"] for ex in spider_dev]
    evaluator = SpiderEvaluator(spider_db_dir, load_schemas(spider_tables_path), semantics, timeout=10)
    results = evaluator.evaluate(golds, golds, db_ids)
    failed = [(r.index, golds[r.index], r.gold_error or r.pred_error) for r in results if not r.match]
    assert not failed, f"{len(failed)} golds do not match themselves: {failed[:5]}"
    summary = summarize(results)
    assert summary["counts"] == {"easy": 248, "medium": 446, "hard": 174, "extra": 166, "all": 1034}
    assert summary["exec_acc"]["all"] == 1.0
    # the metric dict (metrics.json) carries the official table: a count beside each accuracy
    flat = flat_scores(summary)
    for level, count in summary["counts"].items():
        assert flat[f"count_{level}"] == count
        assert flat["exec_acc" if level == "all" else f"exec_acc_{level}"] == 1.0
    assert flat["gold_errors"] == 0


def test_a_wrong_prediction_per_gold_scores_below_one(spider_dev, spider_tables_path, spider_db_dir):
    # the same databases tell predictions apart: answering every question with the first column of the first
    # table is wrong far more often than not
    schemas = load_schemas(spider_tables_path)
    sample = spider_dev[::10]
    preds = [f'SELECT "{schemas[ex["db_id"]].columns[1][1]}" FROM "{schemas[ex["db_id"]].tables[0]}"' for ex in sample]
    results = SpiderEvaluator(spider_db_dir, schemas, "test-suite", timeout=10).evaluate(
        preds, [ex["query"] for ex in sample], [ex["db_id"] for ex in sample]
    )
    assert summarize(results)["exec_acc"]["all"] < 0.5
