"""Execution match: hand-built cases where the original and the test-suite semantics differ."""

from __future__ import annotations

import sqlite3

import pytest

from stateft.metrics.spider.evaluate import SpiderEvaluator
from stateft.metrics.spider.match import test_suite_match
from stateft.metrics.spider.schema import Schema
from stateft.metrics.spider.statement import remove_distinct

ENTRY = {
    "db_id": "pets",
    "table_names_original": ["owner", "pet"],
    "column_names_original": [[-1, "*"], [0, "owner_id"], [0, "name"], [0, "city"], [1, "pet_id"], [1, "owner_id"],
                              [1, "kind"], [1, "weight"]],
    "column_types": ["text", "number", "text", "text", "number", "number", "text", "number"],
    "primary_keys": [1, 4],
    "foreign_keys": [[5, 1]],
}  # fmt: skip


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory):
    root = tmp_path_factory.mktemp("db")
    (root / "pets").mkdir()
    conn = sqlite3.connect(root / "pets" / "pets.sqlite")
    conn.execute("CREATE TABLE owner (owner_id INTEGER, name TEXT, city TEXT)")
    conn.execute("CREATE TABLE pet (pet_id INTEGER, owner_id INTEGER, kind TEXT, weight REAL)")
    conn.executemany("INSERT INTO owner VALUES (?, ?, ?)", [(1, "Ann", "Oslo"), (2, "Bo", "Rome"), (3, "Cy", "Oslo")])
    conn.executemany(
        "INSERT INTO pet VALUES (?, ?, ?, ?)",
        [(1, 1, "cat", 4.0), (2, 1, "dog", 12.0), (3, 2, "cat", 3.0), (4, 3, "fish", 1.0), (5, 3, "cat", 5.0)],
    )
    conn.commit()
    conn.close()
    schemas = {"pets": Schema.from_entry(ENTRY)}
    return {s: SpiderEvaluator(root, schemas, s, timeout=5) for s in ("original", "test-suite")}


def both(evaluators, pred: str, gold: str) -> tuple[int, int]:
    return tuple(evaluators[s].score_one(0, pred, gold, "pets").match for s in ("original", "test-suite"))


# (prediction, gold, original match, test-suite match)
CASES = {
    "identical": ("SELECT name FROM owner", "SELECT name FROM owner", 1, 1),
    # row order: always matters for the original script; only with ORDER BY in the gold for the test suite
    "row_order_no_order_by": ("SELECT name FROM owner ORDER BY name DESC", "SELECT name FROM owner", 0, 1),
    "row_order_with_order_by": ("SELECT name FROM owner ORDER BY name DESC",
                                "SELECT name FROM owner ORDER BY name", 0, 0),
    # column order never matters
    "column_permutation": ("SELECT city, name FROM owner", "SELECT name, city FROM owner", 1, 1),
    # DISTINCT is removed by the test suite; the original compares the rows as they come
    "distinct": ("SELECT DISTINCT city FROM owner", "SELECT city FROM owner", 0, 1),
    # duplicated select columns collapse under the original keys
    "duplicate_columns": ("SELECT name, name FROM owner", "SELECT name FROM owner", 1, 0),
    # count(*) vs count(col): same values, different keys for the original script
    "count_star_vs_column": ("SELECT count(pet_id) FROM pet", "SELECT count(*) FROM pet", 0, 1),
    # 1 == 1.0 under Python equality (both scripts)
    "int_vs_float": ("SELECT 1.0 * count(*) FROM pet", "SELECT count(*) FROM pet", 0, 1),
    "same_values_other_aggregate": ("SELECT min(weight) FROM pet WHERE kind = 'fish'",
                                    "SELECT max(weight) FROM pet WHERE kind = 'fish'", 1, 1),
    "wrong_values": ("SELECT name FROM owner WHERE city = 'Rome'", "SELECT name FROM owner WHERE city = 'Oslo'", 0, 0),
    "both_empty": ("SELECT name FROM owner WHERE city = 'Paris'", "SELECT city FROM owner WHERE name = 'Zed'", 0, 1),
    "pred_fails": ("SELECT nothing FROM owner", "SELECT name FROM owner", 0, 0),
    # parses in SQLite but not as a Spider query (a literal select item): 0 for the original script only
    "unparseable_for_original": ("SELECT name, 'x' FROM owner WHERE 0", "SELECT name, city FROM owner WHERE 0", 0, 1),
    "fk_columns_share_a_key": ("SELECT T2.owner_id FROM owner AS T1 JOIN pet AS T2 ON T1.owner_id = T2.owner_id",
                               "SELECT T1.owner_id FROM owner AS T1 JOIN pet AS T2 ON T1.owner_id = T2.owner_id", 1, 1),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_semantics(evaluators, name):
    pred, gold, original, test_suite = CASES[name]
    assert both(evaluators, pred, gold) == (original, test_suite)


def test_test_suite_match_rules():
    assert test_suite_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], ordered=False)
    assert not test_suite_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], ordered=True)
    assert test_suite_match([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], ordered=True)
    # multisets, not sets
    assert not test_suite_match([(1,), (1,), (2,)], [(1,), (2,), (2,)], ordered=False)
    # a column permutation must be one permutation for all rows
    assert not test_suite_match([(1, 2), (2, 1)], [(1, 2), (1, 2)], ordered=False)
    assert test_suite_match([], [], ordered=True)
    assert not test_suite_match([(1,)], [], ordered=False)
    assert test_suite_match([(1, 1.0)], [(1.0, 1)], ordered=True)


def test_remove_distinct_keeps_strings():
    assert remove_distinct("SELECT DISTINCT a FROM t WHERE b = 'distinct'").split() == [
        "SELECT", "a", "FROM", "t", "WHERE", "b", "=", "'distinct'"
    ]  # fmt: skip
    assert remove_distinct("select count(distinct a) from t") == "select count( a) from t"
