"""Caches shared by concurrent runs: token cache entries and Spider databases built from scripts.

Invariants: N processes building the same entry at once all succeed and agree (one entry, identical content, no
temporary left); builders take turns, so an entry is built once; a corrupt entry of any kind is reported in one
warning line naming the file, removed and rebuilt to what a clean build gives; a reader racing a writer sees the old
entry, the new one or none, never half of one. The processes are forked: they share this process's imports, so six
of them start in milliseconds instead of seconds each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from stateft.atomic import TEMP_NAME
from stateft.data import cache
from stateft.data.databases import BUILT_MARK, build_database, database_problem, materialize_databases
from stateft.data.glue import GlueDataModule
from stateft.errors import UserError
from tests.data.conftest import FIXTURES
from tests.metrics.spider_db import build_database as build_stand_in

N = 6
pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="forks processes (not available on this system)"
)


def run_together(work, n: int = N, timeout: float = 60.0) -> list:
    """Run ``work(i)`` in ``n`` forked processes released at the same moment; their results, or fail with every
    child's error."""
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(n), ctx.Queue()

    def child(i: int) -> None:
        try:
            barrier.wait(timeout)
            queue.put((i, True, work(i)))
        except BaseException as err:  # reported to the parent, which fails the test
            queue.put((i, False, f"{type(err).__name__}: {err}"))

    procs = [ctx.Process(target=child, args=(i,)) for i in range(n)]
    for proc in procs:
        proc.start()
    results = {i: (ok, value) for i, ok, value in (queue.get(timeout=timeout) for _ in procs)}
    for proc in procs:
        proc.join(timeout)
    assert [value for ok, value in results.values() if not ok] == []
    return [results[i][1] for i in range(n)]


def digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()


def leftovers(root: Path) -> list[Path]:
    """Temporary files (``.<name>.tmp-<pid>``) and SQLite journals left under ``root``."""
    return [p for p in root.rglob("*") if TEMP_NAME.match(p.name) or p.name.endswith(("-journal", "-wal", "-shm"))]


def warnings_naming(caplog, path: Path) -> list[str]:
    """The warnings that name ``path``, each checked to be one line."""
    found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(path) in r.getMessage()]
    assert all("\n" not in message for message in found)
    return found


# ---- token cache ---------------------------------------------------------------------------------------------------


def rte(cache_dir: Path) -> GlueDataModule:
    path = str(FIXTURES / "glue_rte")
    return GlueDataModule(task="rte", name="glue_rte", metric="accuracy", path=path, cache_dir=str(cache_dir))


def items_like(n: int, seed: int) -> list[dict]:
    """``n`` items with ragged ids and metadata that includes U+2028 (a line separator to ``str.splitlines``)."""
    rng = np.random.default_rng(seed)
    return [
        {
            "prompt_ids": rng.integers(0, 50_000, rng.integers(1, 400)).tolist(),
            "target_ids": rng.integers(0, 50_000, rng.integers(1, 5)).tolist(),
            "example": {"index": i, "text": f"row {i}\u2028line\nnext", "seed": seed},
        }
        for i in range(n)
    ]


def test_processes_building_one_token_cache_at_once_agree(tmp_path):
    reference = rte(tmp_path / "alone").split_items("train")
    shared = tmp_path / "shared"
    results = run_together(lambda i: digest(rte(shared).split_items("train")))
    assert results == [digest(reference)] * N
    assert len(list(shared.glob("*.npz"))) == 1
    assert leftovers(shared) == []
    assert rte(shared).split_items("train") == reference


def test_builders_take_turns_so_an_entry_is_built_once(tmp_path):
    log = tmp_path / "builds.log"
    expected = items_like(50, seed=1)

    def build() -> list[dict]:
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.3)  # a slow build: without the lock every process would start its own
        return expected

    results = run_together(lambda i: digest(cache.load_or_build(tmp_path / "cache", "k", build)))
    assert results == [digest(expected)] * N
    assert log.read_text() == "built\n"
    assert cache.load(tmp_path / "cache", "k") == expected


def rewrite(path: Path, **change) -> None:
    """Re-save the entry at ``path`` with members changed (a function of the old array; ``None`` drops one; a new
    name adds one), keeping its checksum."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update({name: fn(arrays.get(name)) if callable(fn) else fn for name, fn in change.items()})
    np.savez(path.with_suffix(".new.npz"), **{k: v for k, v in arrays.items() if v is not None})
    path.with_suffix(".new.npz").replace(path)


def bad_jsonl(path: Path) -> None:
    """Examples that are not JSON lines, under a checksum that matches them (so parsing itself must fail)."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    text = arrays["examples"].tobytes().decode().replace("}\n", "\n", 1)
    arrays["examples"] = np.frombuffer(text.encode(), dtype=np.uint8)
    arrays["sha256"] = cache.checksum(arrays)
    np.savez(path.with_suffix(".new.npz"), **arrays)
    path.with_suffix(".new.npz").replace(path)


class Payload:
    """Unpickling it would create a marker file: a cache entry must never be unpickled."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickled(path: Path) -> None:
    payload = Payload()
    Payload.marker = path.parent / "unpickled"
    np.savez(path.with_suffix(".new.npz"), ids=np.array([payload], dtype=object))
    path.with_suffix(".new.npz").replace(path)


def flip_byte(path: Path) -> None:
    """One byte of the stored data inverted (the zip's CRC no longer matches)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "zero-byte": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "flipped byte": flip_byte,
    "not an archive": lambda p: p.write_bytes(b"hello, not numpy\n" * 10),
    "wrong key": lambda p: rewrite(p, examples=None, meta=np.zeros(3, dtype=np.uint8)),
    "missing key": lambda p: rewrite(p, sha256=None),
    "altered tokens": lambda p: rewrite(p, ids=lambda ids: ids + 1),
    "bad jsonl": bad_jsonl,
    "pickled object": pickled,
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_a_corrupt_token_cache_is_rebuilt_with_one_warning(tmp_path, caplog, kind):
    clean = rte(tmp_path / "cache").split_items("train")
    [entry] = (tmp_path / "cache").glob("*.npz")
    CORRUPTIONS[kind](entry)
    caplog.set_level(logging.WARNING)
    assert rte(tmp_path / "cache").split_items("train") == clean
    assert len(warnings_naming(caplog, entry)) == 1
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert not (tmp_path / "cache" / "unpickled").exists()
    caplog.clear()
    assert rte(tmp_path / "cache").split_items("train") == clean  # healed: read back, no warning
    assert caplog.records == []
    assert leftovers(tmp_path / "cache") == []


def test_load_or_build_heals_a_corrupt_entry_once(tmp_path, caplog):
    items = items_like(20, seed=2)
    cache.save(tmp_path, "k", items)
    CORRUPTIONS["truncated"](cache.entry_path(tmp_path, "k"))
    caplog.set_level(logging.WARNING)
    assert cache.load_or_build(tmp_path, "k", lambda: items) == items
    assert len(warnings_naming(caplog, cache.entry_path(tmp_path, "k"))) == 1
    assert cache.load(tmp_path, "k") == items


def test_a_reader_racing_a_writer_never_loads_a_partial_entry(tmp_path):
    entries = [items_like(400, seed=3), items_like(700, seed=4)]  # about 0.5 and 0.9 MB
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            cache.save(tmp_path, "k", entries[i % 2])
            i += 1

    writer = ctx.Process(target=write)
    writer.start()
    seen = {0: 0, 1: 0}
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            items = cache.read(cache.entry_path(tmp_path, "k"))  # raises CorruptEntry on half a file
            if items is not None:
                seen[entries.index(items)] += 1
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0
    assert seen[0] > 0  # the reader really did meet both versions
    assert seen[1] > 0
    assert leftovers(tmp_path) == []


def test_an_unwritable_cache_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write the cache folder") as err:
        cache.save(tmp_path / "file" / "cache", "k", items_like(2, seed=0))
    assert "\n" not in str(err.value)


# ---- Spider databases built from scripts ---------------------------------------------------------------------------


@pytest.fixture
def scripts(tmp_path, release_data) -> Path:
    """A database folder of ``<db_id>/<db_id>.sql`` scripts: the fixtures' two and stand-ins for 10 Spider schemas."""
    root = tmp_path / "database"
    shutil.copytree(FIXTURES / "spider" / "database", root)
    entries = json.loads((release_data / "spider" / "tables.json").read_text())[:10]
    for i, entry in enumerate(entries):
        db = build_stand_in(entry, tmp_path / "stand_in" / f"{entry['db_id']}.sqlite", rows_per_table=20, seed=i)
        with sqlite3.connect(db) as conn:
            script = "\n".join(conn.iterdump())
        (root / entry["db_id"]).mkdir()
        (root / entry["db_id"] / f"{entry['db_id']}.sql").write_text(script)
    return root


def dump(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def script_dump(script: Path) -> str:
    """What running ``script`` gives, in memory."""
    with sqlite3.connect(":memory:") as conn:
        conn.executescript(script.read_text())
        return "\n".join(conn.iterdump())


def test_processes_materialising_the_same_databases_at_once_agree(tmp_path, scripts):
    out = tmp_path / "cache"

    def work(i: int) -> str:
        root = materialize_databases(scripts, out)
        for db in root.glob("*/*.sqlite"):  # every database opens and answers
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        return str(root)

    roots = run_together(work)
    assert len(set(roots)) == 1
    root = Path(roots[0])
    built = sorted(root.glob("*/*.sqlite"))
    assert [p.parent.name for p in built] == sorted(p.parent.name for p in scripts.glob("*/*.sql"))
    for db in built:
        assert database_problem(db) is None
        assert dump(db) == script_dump(scripts / db.parent.name / f"{db.stem}.sql")
    assert leftovers(out) == []


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1500])  # the header and part of the first page


def unmarked(path: Path) -> None:
    """A valid database that was not built to the end (no completion mark)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 0")


def damaged_page(path: Path) -> None:
    """Garbage over a table's b-tree page: the file opens, ``PRAGMA quick_check`` fails."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    with sqlite3.connect(path) as conn:
        rootpage = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone()[0]
    start = (rootpage - 1) * page
    data[start : start + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))


def bad_freelist(path: Path) -> None:
    """A header whose free-page list starts past the end of the file: ``PRAGMA quick_check`` reports it in rows."""
    data = bytearray(path.read_bytes())
    data[32:36], data[36:40] = (10**6).to_bytes(4, "big"), (1).to_bytes(4, "big")
    path.write_bytes(bytes(data))


DB_CORRUPTIONS = {
    "zero-byte": lambda p: p.write_bytes(b""),
    "truncated": truncate,
    "not a database": lambda p: p.write_bytes(b"not sqlite at all\n" * 300),
    "unmarked": unmarked,
    "damaged page": damaged_page,
    "bad freelist": bad_freelist,
}


@pytest.mark.parametrize("kind", DB_CORRUPTIONS)
def test_a_corrupt_database_is_rebuilt_with_one_warning(tmp_path, caplog, kind):
    db_dir = tmp_path / "database"
    shutil.copytree(FIXTURES / "spider" / "database", db_dir)
    root = materialize_databases(db_dir, tmp_path / "cache")
    target = root / "school" / "school.sqlite"
    clean = dump(target)
    DB_CORRUPTIONS[kind](target)
    assert database_problem(target) is not None
    caplog.set_level(logging.WARNING)
    assert materialize_databases(db_dir, tmp_path / "cache") == root
    assert len(warnings_naming(caplog, target)) == 1
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert database_problem(target) is None
    assert dump(target) == clean
    caplog.clear()
    materialize_databases(db_dir, tmp_path / "cache")
    assert caplog.records == []


def test_a_reader_racing_a_database_build_never_opens_a_partial_file(tmp_path):
    big = tmp_path / "big.sql"  # a build of some tens of milliseconds
    rows = ",".join(f"({i}, 'row {i}', {i / 7})" for i in range(20_000))
    big.write_text(f"CREATE TABLE t(a INTEGER, b TEXT, c REAL); INSERT INTO t VALUES {rows};")
    target = tmp_path / "out" / "db.sqlite"
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()

    def write() -> None:
        while not stop.is_set():
            build_database(big, target)

    writer = ctx.Process(target=write)
    writer.start()
    problems, checked = [], 0
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if target.exists():
                problems.append(database_problem(target))
                checked += 1
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0
    assert checked > 0
    assert set(problems) == {None}
    assert leftovers(tmp_path / "out") == []


def test_a_stale_link_to_a_shipped_database_is_replaced(tmp_path):
    db_dir = tmp_path / "database"
    shutil.copytree(FIXTURES / "spider" / "database", db_dir)
    build_database(db_dir / "school" / "school.sql", db_dir / "extra" / "extra.sqlite")  # a shipped database
    root = materialize_databases(db_dir, tmp_path / "cache")
    link = root / "extra" / "extra.sqlite"
    assert link.resolve() == (db_dir / "extra" / "extra.sqlite").resolve()
    link.unlink()
    link.symlink_to(tmp_path / "gone.sqlite")  # dangling: the old code crashed with FileExistsError here
    assert materialize_databases(db_dir, tmp_path / "cache") == root
    assert link.resolve() == (db_dir / "extra" / "extra.sqlite").resolve()


@pytest.mark.parametrize(
    "sql", ["ATTACH 'OUT/other.sqlite' AS o; CREATE TABLE o.t(x);", "VACUUM INTO 'OUT/copy.sqlite';", "CREATE TABL"]
)
def test_a_script_writes_its_own_database_only_and_fails_in_one_line(tmp_path, sql):
    script = tmp_path / "db" / "db.sql"
    script.parent.mkdir()
    script.write_text("CREATE TABLE t(x); INSERT INTO t VALUES (1);\n" + sql.replace("OUT", str(tmp_path)))
    with pytest.raises(UserError, match="cannot build a database from") as err:
        materialize_databases(tmp_path, tmp_path / "cache")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*.sqlite")) == []


def test_built_databases_carry_the_completion_mark(tmp_path):
    build_database(FIXTURES / "spider" / "database" / "school" / "school.sql", tmp_path / "school.sqlite")
    with sqlite3.connect(tmp_path / "school.sqlite") as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == BUILT_MARK
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_cache_files_get_the_usual_permissions(tmp_path, scripts):
    """0o666 less the umask, like any new file: a cache folder shared by a group stays readable to it."""
    umask = os.umask(0o022)
    os.umask(umask)
    cache.save(tmp_path / "cache", "k", items_like(2, seed=0))
    root = materialize_databases(scripts, tmp_path / "cache")
    for path in [cache.entry_path(tmp_path / "cache", "k"), *root.glob("*/*.sqlite")]:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_script_that_runs_forever_or_grows_without_end_stops_in_one_line(tmp_path):
    script = tmp_path / "db" / "db.sql"
    script.parent.mkdir()
    # a recursive CTE that never ends, and one that inserts 64 MB of blobs
    script.write_text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n;")
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot build a database"):
        build_database(script, tmp_path / "forever.sqlite", max_seconds=0.5)
    assert time.monotonic() - start < 10
    script.write_text(
        "CREATE TABLE t (b BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) "
        "INSERT INTO t SELECT zeroblob(1000000) FROM n;"
    )
    with pytest.raises(UserError, match="cannot build a database"):
        build_database(script, tmp_path / "big.sqlite", max_bytes=8 << 20)
    assert not (tmp_path / "big.sqlite").exists()
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary is gone too
    build_database(script, tmp_path / "fits.sqlite", max_bytes=128 << 20)  # the same script within bounds
    assert (tmp_path / "fits.sqlite").stat().st_size > 64_000_000
