"""``gold_sql``: the evaluator executes the gold as written (``original``) or lower-cased (``lowercase``, what the
State-offset reference runs); the paper experiment selects the lower-cased gold."""

from __future__ import annotations

import json
import re

import pytest

from stateft.app.checks import compose_checked
from stateft.data.spider import SpiderDataModule
from stateft.errors import UserError
from stateft.metrics.spider.__main__ import main
from stateft.metrics.spider.evaluate import SpiderEvaluator, summarize
from stateft.metrics.spider.gold import executed_gold
from stateft.metrics.spider.hardness import hardness
from stateft.metrics.spider.schema import Schema, load_schemas
from tests.data.conftest import FIXTURES
from tests.metrics.spider_db import TOWN, build_town

LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")  # Spider writes values in single or double quotes

ENTRY = TOWN
# 'Ann' and 'ann' live in different cities: the case of the literal decides the answer
GOLD = "SELECT city FROM person WHERE name  =  'Ann'"
LOWER = "select city from person where name  =  'ann'"


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    return build_town(tmp_path_factory.mktemp("db"), [(1, "Ann", "Oslo"), (2, "ann", "Rome"), (3, "Bo", "Oslo")])


def score(root, pred: str, semantics: str, gold_sql: str) -> int:
    evaluator = SpiderEvaluator(root, {"town": Schema.from_entry(ENTRY)}, semantics, timeout=5, gold_sql=gold_sql)
    return evaluator.score_one(0, pred, GOLD, "town").match


@pytest.mark.parametrize("semantics", ["original", "test-suite"])
def test_the_case_of_a_literal_in_the_executed_gold_decides(town, semantics):
    # (prediction, gold_sql) -> match: each prediction agrees with exactly one of the two golds
    assert score(town, GOLD, semantics, "original") == 1
    assert score(town, GOLD, semantics, "lowercase") == 0
    assert score(town, LOWER, semantics, "original") == 0
    assert score(town, LOWER, semantics, "lowercase") == 1


def test_executed_gold_is_the_training_target_without_eos():
    assert executed_gold("  SELECT Name FROM T WHERE a = 'X'\n", "lowercase") == "select name from t where a = 'x'"
    assert executed_gold(GOLD, "original") == GOLD
    with pytest.raises(ValueError, match="gold_sql"):
        executed_gold(GOLD, "upper")
    with pytest.raises(ValueError, match="gold_sql"):
        SpiderEvaluator(".", {}, gold_sql="Lowercase")


def test_dev_golds_with_upper_case_inside_a_literal(spider_dev):
    changed = [
        ex["query"]
        for ex in spider_dev
        if LITERAL.findall(executed_gold(ex["query"], "lowercase")) != LITERAL.findall(ex["query"])
    ]
    assert len(changed) == 282
    assert all(any(c.isupper() for lit in LITERAL.findall(q) for c in lit) for q in changed)


def test_lowercase_golds_keep_their_hardness_and_run(spider_dev, spider_tables_path, spider_db_dir):
    # the gold is graded after lower-casing, as the reference grades the gold it executes; lower-casing changes no
    # level, and every lower-cased gold parses, resolves and runs (it matches itself)
    golds = [ex["query"] for ex in spider_dev]
    assert [hardness(executed_gold(q, "lowercase")) for q in golds] == [hardness(q) for q in golds]
    lowered = [executed_gold(q, "lowercase") for q in golds]
    evaluator = SpiderEvaluator(spider_db_dir, load_schemas(spider_tables_path), "original", 10, gold_sql="lowercase")
    results = evaluator.evaluate(lowered, golds, [ex["db_id"] for ex in spider_dev])
    summary = summarize(results)
    assert summary["exec_acc"]["all"] == 1.0, [r for r in results if not r.match][:3]
    assert summary["counts"] == {"easy": 248, "medium": 446, "hard": 174, "extra": 166, "all": 1034}


def test_reference_decoding_changes_no_literal_of_a_dev_gold(spider_dev):
    # the reference decodes its labels with transformers' clean_up_tokenization (" ," -> ",", " 's" -> "'s", ...);
    # on Spider dev that touches spacing only, never a string literal, so executing query.lower().strip() runs the
    # same SQL values
    rules = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]  # fmt: skip
    touched = 0
    for ex in spider_dev:
        lowered = cleaned = executed_gold(ex["query"], "lowercase")
        for old, new in rules:
            cleaned = cleaned.replace(old, new)
        touched += cleaned != lowered
        assert [s.strip() for s in LITERAL.findall(cleaned)] == [s.strip() for s in LITERAL.findall(lowered)]
    assert touched > 100  # the rules do apply (to the spaces around commas)


def test_paper_experiment_executes_the_lowercase_gold():
    base = ["method=state_offset_h", "output_dir=/tmp/x"]
    assert compose_checked("train", ["experiment=paper/spider", *base]).dataset.gold_sql == "lowercase"
    assert compose_checked("train", ["dataset=spider", *base]).dataset.gold_sql == "original"


def test_datamodule_scores_with_its_gold_sql(tmp_path):
    fixture = FIXTURES / "spider"
    scores = {}
    for gold_sql in ("original", "lowercase"):
        dm = SpiderDataModule(name="spider", metric="exec_acc", path=str(fixture), gold_sql=gold_sql,
                              cache_dir=str(tmp_path / "cache"))  # fmt: skip
        examples = [it["example"] for it in dm.split_items("test")]
        for preds in ("original", "lowercase"):
            predictions = [executed_gold(ex["query"], preds) for ex in examples]
            scores[gold_sql, preds] = dm.task.score(predictions, examples)["exec_acc"]
    # the fixture stores values capitalised, so a lower-cased literal finds other rows
    upper = sum(any(c.isupper() for lit in LITERAL.findall(ex["query"]) for c in lit) for ex in examples)
    assert 0 < upper < len(examples)
    assert scores["original", "original"] == scores["lowercase", "lowercase"] == 1.0
    mixed = pytest.approx(1 - upper / len(examples))
    assert scores["original", "lowercase"] == scores["lowercase", "original"] == mixed
    with pytest.raises(UserError, match="gold_sql"):
        SpiderDataModule(name="spider", metric="exec_acc", path=str(fixture), gold_sql="lower")


def test_cli_gold_sql_flag(tmp_path, town, capsys):
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps([ENTRY]))
    gold, pred = tmp_path / "gold.sql", tmp_path / "pred.sql"
    gold.write_text(f"{GOLD}\ttown\n{GOLD}\ttown\n")
    pred.write_text(f"{GOLD}\n{LOWER}\n")
    args = ["--gold", str(gold), "--pred", str(pred), "--db", str(town), "--tables", str(tables)]
    outcomes = {}
    for gold_sql in ("original", "lowercase"):
        assert main([*args, "--gold-sql", gold_sql, "--per-example", str(tmp_path / f"{gold_sql}.jsonl")]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["gold_sql"] == gold_sql
        records = (tmp_path / f"{gold_sql}.jsonl").read_text().splitlines()
        outcomes[gold_sql] = [json.loads(line)["match"] for line in records]
    assert outcomes == {"original": [1, 0], "lowercase": [0, 1]}
    with pytest.raises(SystemExit):  # argparse refuses an unknown choice
        main([*args, "--gold-sql", "upper"])
