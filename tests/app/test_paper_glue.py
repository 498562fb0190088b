"""experiment=paper/glue formats and scores GLUE as SST does: instruction + sentences tokenised as one string,
out-of-class predictions dropped from the metric with their rate reported. Plain runs keep the honest defaults."""

from __future__ import annotations

import json

import hydra
import pytest

from stateft.data.glue import GLUE_TASKS
from stateft.tokenizer import load_tokenizer
from tests.app.conftest import DATASETS, FIXTURES

GLUE = [d for d in DATASETS if d.startswith("glue_")]
BASE = ["method=state_offset_h", "output_dir=/tmp/x"]


@pytest.mark.parametrize("dataset", GLUE)
def test_paper_glue_sets_the_references_tokenisation_and_scoring(compose, dataset):
    paper = compose("train", ["experiment=paper/glue", f"dataset={dataset}", *BASE]).dataset
    assert (paper.prefix_tokenization, paper.drop_out_of_class) == ("joint", True)
    plain = compose("train", [f"dataset={dataset}", *BASE]).dataset
    assert (plain.prefix_tokenization, plain.drop_out_of_class) == ("separate", False)


def test_paper_glue_datamodule_tokenises_jointly_and_drops_out_of_class(compose, tmp_path):
    overrides = ["experiment=paper/glue", "dataset=glue_rte", f"dataset.path={FIXTURES / 'glue_rte'}"]
    cfg = compose("train", [*overrides, f"dataset.cache_dir={tmp_path}", *BASE])
    dm = hydra.utils.instantiate(cfg.dataset)
    items = dm.split_items("validation")  # the paper protocol evaluates on the hub validation split
    rows = [json.loads(line) for line in (FIXTURES / "glue_rte" / "validation.jsonl").read_text().splitlines()]
    tok = load_tokenizer()
    instruction = GLUE_TASKS["rte"].instruction
    for item, row in zip(items, rows, strict=True):
        text = instruction + row["sentence1"] + "###" + row["sentence2"] + "###"
        assert item["prompt_ids"] == tok.encode(text)
    n = len(tok.encode(instruction))
    assert [tok.decode([i]) for i in items[0]["prompt_ids"][n - 2 : n]] == [":", " The"]

    labels = [row["label"] for row in rows]
    # right, wrong, then two out of class (the spaced digit is not a class token), the rest right
    predictions = [str(labels[0]), str(1 - labels[1]), " " + str(labels[2]), "yes"] + [str(g) for g in labels[4:]]
    result = dm.task.score(predictions, [it["example"] for it in items])
    assert result["out_of_class_rate"] == pytest.approx(2 / len(labels))
    assert result["num_examples"] == len(labels) - 2
    assert result["accuracy"] == pytest.approx((len(labels) - 3) / (len(labels) - 2))
