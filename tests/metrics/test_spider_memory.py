"""The executor's memory cap: blow-ups score 0 quickly within the cap; ordinary queries are unaffected."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from stateft.errors import UserError
from stateft.metrics.spider import memory
from stateft.metrics.spider.executor import SafeExecutor

REPO = Path(__file__).resolve().parents[2]
CAP = 64  # MB; small so each attack hits it fast
TIMEOUT = 10.0  # seconds; an attack must fail well before it (by the cap, not by the clock)
RECURSE = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c)"
ATTACKS = {
    "zeroblob_rows": "WITH RECURSIVE c(x) AS (SELECT zeroblob(9000000) UNION ALL SELECT x FROM c) SELECT x FROM c",
    "randomblob_rows": "WITH RECURSIVE c(x) AS (SELECT randomblob(9000000) UNION ALL SELECT x FROM c) SELECT x FROM c",
    "blob_union_set": "WITH RECURSIVE c(n, x) AS (SELECT 1, zeroblob(9000000) UNION SELECT n + 1, x FROM c) "
    "SELECT count(*) FROM c",
    "wide_recursive_rows": "WITH RECURSIVE c(n, a, b, d) AS (SELECT 1, randomblob(3000000), randomblob(3000000), "
    "randomblob(3000000) UNION ALL SELECT n + 1, a, b, d FROM c) SELECT * FROM c",
    "many_columns": "SELECT " + ", ".join(["zeroblob(9000000)"] * 16),
    "order_by": f"{RECURSE} SELECT n, randomblob(1000) FROM c ORDER BY 2",
    "group_by": f"{RECURSE} SELECT randomblob(1000) AS b, count(*) FROM c GROUP BY b",
    "cross_join_order_by": "SELECT a.name, b.name, d.name FROM item a, item b, item d ORDER BY 1, 2, 3",
    "group_concat_groups": f"{RECURSE} SELECT group_concat(randomblob(1000)) FROM c GROUP BY n % 100",
    "concat_doubling": "WITH RECURSIVE c(n, s) AS (SELECT 1, 'x' UNION ALL SELECT n + 1, s || s FROM c) "
    "SELECT n, length(s) FROM c",
    "replace_rows": f"{RECURSE} SELECT replace(zeroblob(1000000), x'00', 'abcdefgh') FROM c",
    "printf_rows": "SELECT printf('%.*c', 9000000, 'x') FROM item a, item b",
}

# Runs one attack through the evaluator in a fresh process and reports its outcome and that process's peak RSS
# (VmHWM: ru_maxrss would start at the forking parent's) over its baseline after a warm-up query. RLIMIT_AS keeps a
# broken cap from swapping the machine.
CHILD = r"""
import json, re, resource, sys, time
from pathlib import Path
from stateft.metrics.spider.evaluate import SpiderEvaluator
from stateft.metrics.spider.schema import Schema
root, sql, cap, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
schema = Schema.from_entry(json.loads(sys.argv[5]))
def peak_kb():
    return int(re.search(r"VmHWM:\s*(\d+) kB", Path("/proc/self/status").read_text()).group(1))
evaluator = SpiderEvaluator(root, {"shop": schema}, "original", timeout=timeout, max_memory_mb=cap)
gold = "SELECT count(*) FROM item"
assert evaluator.score_one(0, gold, gold, "shop").match == 1
base = peak_kb()
start = time.monotonic()
result = evaluator.score_one(0, sql, gold, "shop")
elapsed = time.monotonic() - start
grown_mb = (peak_kb() - base) / 1024
print(json.dumps({"match": result.match, "error": result.pred_error, "elapsed": elapsed, "grown_mb": grown_mb}))
"""
SCHEMA = {
    "db_id": "shop",
    "table_names_original": ["item"],
    "column_names_original": [[-1, "*"], [0, "id"], [0, "name"], [0, "price"]],
    "column_types": ["text", "number", "text", "number"],
    "primary_keys": [1],
    "foreign_keys": [],
}


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "shop" / "shop.sqlite"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
    conn.executemany("INSERT INTO item VALUES (?, ?, ?)", [(i, f"item{i:04d}", i * 1.5) for i in range(200)])
    conn.commit()
    conn.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc")
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_blowup_scores_zero_fast_within_the_cap(db, name):
    before = digest(db)
    args = [str(db.parent.parent), ATTACKS[name], str(CAP), str(TIMEOUT), json.dumps(SCHEMA)]
    cmd = [sys.executable, "-c", CHILD, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["match"] == 0, out
    assert out["error"], out
    assert out["elapsed"] < TIMEOUT / 3, f"{name} took {out['elapsed']:.1f} s: {out['error']}"
    assert out["grown_mb"] < 2 * CAP, f"{name} grew the process by {out['grown_mb']:.0f} MB: {out['error']}"
    assert digest(db) == before


def test_sorts_fail_in_memory_instead_of_spilling_to_disk(db):
    # temporary b-trees live in the capped heap: a sort larger than the cap fails, it does not fill the disk
    result = SafeExecutor(timeout=TIMEOUT, max_memory_mb=CAP).run(db, ATTACKS["order_by"])
    assert result.error.startswith("out of memory"), result.error


def test_each_executor_gets_its_own_cap(db):
    # a sort of ~20 MB: over a 16 MB cap (8 MB for SQLite), under a 128 MB one run after it
    sort = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c LIMIT 20000) "
    sort += "SELECT count(*) FROM (SELECT n, randomblob(1000) FROM c ORDER BY 2)"
    assert SafeExecutor(max_memory_mb=16).run(db, sort).error.startswith("out of memory")
    assert process_limit() in (0, None)
    assert SafeExecutor(max_memory_mb=128).run(db, sort).rows == [(20000,)]
    assert process_limit() in (0, None)


def process_limit() -> int | None:
    """SQLite's process-wide hard heap limit now (0: none), or None where the executor cannot put it back."""
    if memory._setter is None:  # the PRAGMA alone lowers it for good
        return None
    conn = sqlite3.connect(":memory:")
    limit = conn.execute("PRAGMA hard_heap_limit").fetchone()[0]
    conn.close()
    return limit


def test_fetched_rows_count_against_the_cap(db):
    rows = "SELECT id, randomblob(1000000) FROM item WHERE id < 20"  # ~20 MB of rows
    assert SafeExecutor(max_memory_mb=32).run(db, rows).error.startswith("rows take more than 16 MB")
    assert len(SafeExecutor(max_memory_mb=64).run(db, rows).rows) == 20


def test_ordinary_queries_give_the_same_rows_under_a_small_cap(spider_dev, spider_db_dir):
    executor = SafeExecutor(max_memory_mb=8)
    for ex in spider_dev:
        path = spider_db_dir / ex["db_id"] / f"{ex['db_id']}.sqlite"
        conn = sqlite3.connect(path)
        conn.text_factory = lambda raw: raw.decode(errors="ignore")
        expected = conn.execute(ex["query"]).fetchall()
        conn.close()
        assert executor.run(path, ex["query"]).rows == expected, ex["query"]


@pytest.mark.parametrize("cap", [0, 0.5, -5.0, float("nan"), float("inf"), "256MB", True])
def test_a_bad_cap_is_a_user_error(cap):
    with pytest.raises(UserError, match="max_memory_mb"):
        SafeExecutor(max_memory_mb=cap)


def test_the_cap_reaches_the_executor_from_the_cli_and_the_data_module(tmp_path, capsys):
    from stateft.data.spider import SpiderDataModule
    from stateft.metrics.spider.__main__ import main

    spider = REPO / "tests" / "fixtures" / "spider"
    dm = SpiderDataModule(path=str(spider), cache_dir=str(tmp_path), name="spider", metric="exec_acc", max_memory_mb=48)
    assert dm.evaluator().executor.max_memory_mb == 48
    for name in ("gold.sql", "pred.sql"):
        (tmp_path / name).write_text("SELECT 1\tdb\n")
    args = ["--gold", str(tmp_path / "gold.sql"), "--pred", str(tmp_path / "pred.sql"), "--db", str(tmp_path),
            "--tables", str(spider / "tables.json"), "--max-memory-mb", "0"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "max_memory_mb" in err
    assert "\n" not in err
