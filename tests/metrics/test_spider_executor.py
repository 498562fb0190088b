"""The hardened executor: attacks score 0 within the time limit and leave the database byte-identical."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import pytest

from stateft.metrics.spider.executor import SafeExecutor

LIMIT = 1.0  # seconds; small so the suite stays fast


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop" / "shop.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)", [(i, f"item{i}", i * 1.5) for i in range(200)])
    conn.commit()
    conn.close()
    return path


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ATTACKS = {
    "drop": "DROP TABLE item",
    "delete": "DELETE FROM item",
    "attach": "ATTACH DATABASE 'evil.sqlite' AS evil",
    "writable_schema": "PRAGMA writable_schema = ON",
    "pragma_read": "PRAGMA table_info(item)",
    "recursive_cte": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "recursive_cte_rows": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c",
    "cross_join": "SELECT count(*) FROM item a, item b, item c, item d, item e",
    "cross_join_rows": "SELECT a.id, b.id, c.id FROM item a, item b, item c",
    "multi_statement": "SELECT 1; DROP TABLE item",
    "huge_blob": "SELECT zeroblob(2000000000)",
    "load_extension": "SELECT load_extension('/tmp/evil.so')",
    "vacuum_into": "VACUUM INTO '/tmp/stateft_copy.sqlite'",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_fails_fast_and_leaves_database_untouched(db, name):
    before = digest(db)
    executor = SafeExecutor(timeout=LIMIT, max_rows=10_000)
    start = time.monotonic()
    result = executor.run(db, ATTACKS[name])
    elapsed = time.monotonic() - start
    assert not result.ok, f"{name} was allowed"
    assert elapsed < LIMIT + 1.0, f"{name} took {elapsed:.1f} s"
    assert digest(db) == before
    assert not (db.parent / "evil.sqlite").exists()
    # the database is still usable afterwards
    assert executor.run(db, "SELECT count(*) FROM item").rows == [(200,)]


def test_scoring_attacks_gives_zero_and_keeps_going(tmp_path, db):
    from stateft.metrics.spider.evaluate import SpiderEvaluator, summarize
    from stateft.metrics.spider.schema import Schema

    schema = Schema.from_entry(
        {
            "db_id": "shop",
            "table_names_original": ["item"],
            "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]],
            "column_types": ["text", "number", "text", "number"],
            "primary_keys": [1],
            "foreign_keys": [],
        }
    )
    before = digest(db)
    golds = ["SELECT count(*) FROM item"] * len(ATTACKS) + ["SELECT count(*) FROM item", "SELECT nope FROM item"]
    preds = list(ATTACKS.values()) + ["SELECT count(*) FROM item", "SELECT count(*) FROM item"]
    for semantics in ("original", "test-suite"):
        evaluator = SpiderEvaluator(db.parent.parent, {"shop": schema}, semantics, timeout=0.3, max_rows=10_000)
        results = evaluator.evaluate(preds, golds, ["shop"] * len(preds))
        assert [r.match for r in results] == [0] * len(ATTACKS) + [1, 0]
        assert results[-1].gold_error is not None  # a failing gold is reported, not fatal
        assert summarize(results)["gold_errors"] == 1
    assert digest(db) == before


def test_row_cap_and_configurable_timeout(db):
    assert SafeExecutor(max_rows=100).run(db, "SELECT id FROM item").error == "more than 100 rows"
    assert len(SafeExecutor(max_rows=200).run(db, "SELECT id FROM item").rows) == 200
    slow = "SELECT count(*) FROM item a, item b, item c, item d"
    start = time.monotonic()
    assert "timed out" in SafeExecutor(timeout=0.2).run(db, slow).error
    assert time.monotonic() - start < 1.0


def test_missing_database_is_an_error_result(tmp_path):
    assert not SafeExecutor().run(tmp_path / "none.sqlite", "SELECT 1").ok
