"""Test-suite semantics run only the first statement (the official script's sqlparse pass); the original semantics
score a multi-statement prediction 0, as the original script's ``cursor.execute`` refuses it."""

from __future__ import annotations

import hashlib

import pytest

from stateft.metrics.spider.evaluate import SpiderEvaluator
from stateft.metrics.spider.executor import SafeExecutor
from stateft.metrics.spider.schema import Schema
from stateft.metrics.spider.statement import first_statement, remove_distinct
from tests.metrics.spider_db import TOWN, build_town

ENTRY = TOWN
GOLD = "SELECT name FROM person"
SEMI = "SELECT name FROM person WHERE city  =  'x;y'"  # a ';' inside a literal, matching one row


@pytest.fixture(scope="module")
def town(tmp_path_factory):
    return build_town(tmp_path_factory.mktemp("db"), [(1, "Ann", "x;y"), (2, "Bo", "Oslo"), (3, "Cy", "x")])


def scores(root, pred: str, gold: str = GOLD) -> tuple[int, int]:
    """(original, test-suite) match."""
    schemas = {"town": Schema.from_entry(ENTRY)}
    return tuple(
        SpiderEvaluator(root, schemas, s, timeout=5).score_one(0, pred, gold, "town").match
        for s in ("original", "test-suite")
    )


# prediction -> (original, test-suite)
CASES = {
    "trailing_clause": (GOLD + "; ORDER BY name DESC", (0, 1)),
    "second_statement": (GOLD + " ; SELECT city FROM person", (0, 1)),
    "write_after": (GOLD + "; DROP TABLE person", (0, 1)),
    "junk_after": (GOLD + ";  <junk> ' unbalanced", (0, 1)),
    "one_trailing_semicolon": (GOLD + ";", (1, 1)),
    "semicolon_in_comment": (GOLD + " -- a; b\n; junk", (0, 1)),
    "semicolon_in_block_comment": ("SELECT name /* ; */ FROM person; junk", (0, 1)),
    # the first statement is the wrong one: the rest is never read
    "wrong_first": ("SELECT city FROM person; " + GOLD, (0, 0)),
    # nothing before the first ';': scores 0 (the original parser wants SELECT first)
    "empty_first": ("; " + GOLD, (0, 0)),
    "empty": ("", (0, 0)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_first_statement_under_test_suite_only(town, name):
    pred, expected = CASES[name]
    assert scores(town, pred) == expected


def test_semicolon_inside_a_literal_does_not_split(town):
    assert first_statement(SEMI + "; junk") == SEMI + "; "
    assert scores(town, SEMI, SEMI) == (1, 1)
    assert scores(town, SEMI + "; junk", SEMI) == (0, 1)
    assert scores(town, 'SELECT name FROM person WHERE city = "x;y"; junk', SEMI) == (0, 1)
    # a split inside the literal would leave an unterminated string and find no row
    assert scores(town, "SELECT name FROM person WHERE city = 'x'", SEMI) == (0, 0)


def test_an_empty_prediction_does_not_match_an_empty_gold(town):
    empty_gold = "SELECT name FROM person WHERE city = 'nowhere'"
    assert scores(town, "SELECT name FROM person WHERE city = 'Rome'", empty_gold) == (1, 1)  # both results empty
    for pred in ("", "  ", ";", "-- nothing;\n;"):
        assert scores(town, pred, empty_gold) == (0, 0)


def test_only_the_first_statement_reaches_the_executor(town, monkeypatch):
    executed = []
    run = SafeExecutor.run
    monkeypatch.setattr(SafeExecutor, "run", lambda self, db, sql: executed.append(sql) or run(self, db, sql))
    db = town / "town" / "town.sqlite"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    evaluator = SpiderEvaluator(town, {"town": Schema.from_entry(ENTRY)}, "test-suite", timeout=5)
    assert evaluator.score_one(0, GOLD + "; DROP TABLE person; ATTACH 'x' AS y", GOLD, "town").match == 1
    assert len(executed) == 2  # the gold and the prediction, once each
    assert not any("DROP" in sql or "ATTACH" in sql for sql in executed)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_every_dev_gold_is_its_own_first_statement(spider_dev):
    # a dev gold is one statement; a second statement after it is cut off, with or without DISTINCT removal
    for ex in spider_dev:
        query = ex["query"]
        assert first_statement(query) == query
        body = query.removesuffix(";")  # a few golds end with ';'
        assert first_statement(body + "; ORDER BY x") == body + "; "
        assert remove_distinct(body + "; DROP TABLE t") == remove_distinct(body) + "; "


def test_remove_distinct_matches_a_token_level_restatement():
    # the script drops every token whose text is "distinct", whatever its case; string literals stay
    assert remove_distinct("SELECT DISTINCT a FROM t WHERE b = 'distinct'; DROP TABLE t") == (
        "SELECT  a FROM t WHERE b = 'distinct'; "
    )
    assert remove_distinct("select count(Distinct a) from t") == "select count( a) from t"
    with pytest.raises(ValueError, match="no SQL"):
        remove_distinct(" ; SELECT 1")
