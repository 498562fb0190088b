"""Run untrusted SQL on a Spider database without letting it do harm.

Each query gets a fresh connection that is read-only at three levels: the file is opened with ``mode=ro``,
``PRAGMA query_only`` is on, and an authorizer allows only reading (SELECT, READ, FUNCTION, RECURSIVE): ATTACH,
writes, schema changes, PRAGMA and transactions are refused when the statement is prepared. ``ATTACH`` is also
limited to zero databases and strings/blobs to ``max_length`` bytes (``zeroblob(1e12)`` fails instead of eating the
memory). A progress handler stops the query at the deadline, and at most ``max_rows`` rows are fetched.

Memory is capped at ``max_memory_mb`` per query, half for SQLite and half for the fetched rows. SQLite's half is its
hard heap limit (``memory.sqlite_heap_limit``) with ``temp_store = MEMORY``, so sorters (ORDER BY, GROUP BY),
DISTINCT/UNION sets, recursive-CTE queues and temporary tables live in that heap instead of unbounded temporary
files: past the limit the query fails with SQLITE_NOMEM. The rows' half is a byte budget checked after every row
(a row cannot outgrow SQLite's half, where it was built first). Every failure becomes an ``ExecResult`` with an
error message: one bad query never stops an evaluation."""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from math import inf
from pathlib import Path

from stateft.errors import UserError
from stateft.metrics.spider.memory import MB, MIN_SQLITE, row_bytes, sqlite_heap_limit

ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer", "sqlite_offset"}
PROGRESS_STEPS = 1000  # virtual-machine instructions between deadline checks (microseconds each)


@dataclass(frozen=True)
class ExecResult:
    """Rows of a successful query, or the error that stopped it."""

    rows: list[tuple] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _authorize(action: int, arg1: str | None, arg2: str | None, db_name: str | None, trigger: str | None) -> int:
    if action not in ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _decode(raw: bytes) -> str:
    # the evaluation scripts decode text leniently; a stray byte must not fail the whole query
    return raw.decode(errors="ignore")


class SafeExecutor:
    """``run(db_path, sql) -> ExecResult`` under a time limit (``timeout`` seconds), a row cap and a memory cap."""

    def __init__(self, timeout: float = 30.0, max_rows: int = 100_000, max_length: int = 10_000_000,
                 max_memory_mb: float = 256.0) -> None:  # fmt: skip
        number = isinstance(max_memory_mb, int | float) and not isinstance(max_memory_mb, bool)
        if not number or not 1 <= max_memory_mb < inf:
            raise UserError(f"max_memory_mb must be a number of megabytes, at least 1, got {max_memory_mb!r}")
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise UserError(f"SQLite {sqlite3.sqlite_version} cannot cap a query's memory: use a Python whose SQLite "
                            f"is at least {'.'.join(map(str, MIN_SQLITE))}")  # fmt: skip
        self.timeout, self.max_rows, self.max_length = timeout, max_rows, max_length
        self.max_memory_mb = max_memory_mb
        self.heap_bytes = int(max_memory_mb * MB) // 2  # SQLite's half; the fetched rows get the other half
        self.row_budget = int(max_memory_mb * MB) - self.heap_bytes

    def _connect(self, db_path: str | Path) -> sqlite3.Connection:
        """A read-only, locked-down connection (raises ``sqlite3.Error`` when the file cannot be opened); opened
        inside ``sqlite_heap_limit``, which puts back the process-wide limit that its PRAGMA confirms."""
        path = Path(db_path)
        if not path.is_file():
            raise sqlite3.OperationalError(f"database file not found: {path}")
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=1.0, isolation_level=None, check_same_thread=False)
        conn.text_factory = _decode
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_length)
        conn.execute("PRAGMA query_only = 1")
        conn.execute("PRAGMA temp_store = MEMORY")  # temporary b-trees and sorters in the capped heap, not on disk
        # lowers the limit where memory.sqlite_heap_limit could not set it, and confirms it is in force
        limit = conn.execute(f"PRAGMA hard_heap_limit = {self.heap_bytes}").fetchone()
        if limit is None or not 0 < limit[0] <= self.heap_bytes:
            conn.close()
            raise sqlite3.OperationalError(f"SQLite's hard heap limit is {limit}, not {self.heap_bytes} bytes")
        conn.set_authorizer(_authorize)  # after our own PRAGMAs: from here on no PRAGMA is allowed
        return conn

    def run(self, db_path: str | Path, sql: str) -> ExecResult:
        """Execute one statement and fetch its rows; never raises for a bad query."""
        with sqlite_heap_limit(self.heap_bytes):
            return self._run(db_path, sql)

    def _run(self, db_path: str | Path, sql: str) -> ExecResult:
        deadline = time.monotonic() + self.timeout
        conn = None
        try:
            conn = self._connect(db_path)
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
            rows: list[tuple] = []
            size = 0
            for row in conn.execute(sql):  # one row at a time, so the budget is checked before the next
                rows.append(row)
                size += row_bytes(row)
                if len(rows) > self.max_rows:
                    return ExecResult(None, f"more than {self.max_rows} rows")
                if size > self.row_budget:
                    return ExecResult(None, f"rows take more than {self.row_budget / MB:g} MB "
                                            f"(half the {self.max_memory_mb:g} MB memory cap)")  # fmt: skip
            return ExecResult(rows)
        except MemoryError:  # SQLITE_NOMEM at the hard heap limit (or Python itself out of memory)
            return ExecResult(None, f"out of memory: SQLite needs more than {self.heap_bytes / MB:g} MB "
                                    f"(half the {self.max_memory_mb:g} MB memory cap)")  # fmt: skip
        except sqlite3.OperationalError as err:
            if time.monotonic() > deadline:
                return ExecResult(None, f"timed out after {self.timeout:g} s")
            return ExecResult(None, f"OperationalError: {err}")
        except Exception as err:  # sqlite3.Warning (two statements), OverflowError...: all score 0
            return ExecResult(None, f"{type(err).__name__}: {err}")
        finally:
            if conn is not None:
                conn.close()
