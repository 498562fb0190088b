"""Run untrusted SQL on a Spider database without letting it do harm.

Each query gets a fresh connection that is read-only at three levels: the file is opened with ``mode=ro``,
``PRAGMA query_only`` is on, and an authorizer allows only reading (SELECT, READ, FUNCTION, RECURSIVE): ATTACH,
writes, schema changes, PRAGMA and transactions are refused when the statement is prepared. ``ATTACH`` is also
limited to zero databases and strings/blobs to ``max_length`` bytes (``zeroblob(1e12)`` fails instead of eating the
memory). A progress handler stops the query at the deadline, and at most ``max_rows`` rows are fetched. Every
failure becomes an ``ExecResult`` with an error message: one bad query never stops an evaluation.
"""

from __future__ import annotations

import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

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
    """``run(db_path, sql) -> ExecResult`` under a time limit (``timeout`` seconds) and a row cap."""

    def __init__(self, timeout: float = 30.0, max_rows: int = 100_000, max_length: int = 10_000_000) -> None:
        self.timeout, self.max_rows, self.max_length = timeout, max_rows, max_length

    def connect(self, db_path: str | Path) -> sqlite3.Connection:
        """A read-only, locked-down connection (raises ``sqlite3.Error`` when the file cannot be opened)."""
        path = Path(db_path)
        if not path.is_file():
            raise sqlite3.OperationalError(f"database file not found: {path}")
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=1.0, isolation_level=None, check_same_thread=False)
        conn.text_factory = _decode
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_length)
        conn.execute("PRAGMA query_only = 1")
        conn.set_authorizer(_authorize)  # after our own PRAGMA: from here on no PRAGMA is allowed
        return conn

    def run(self, db_path: str | Path, sql: str) -> ExecResult:
        """Execute one statement and fetch its rows; never raises for a bad query."""
        deadline = time.monotonic() + self.timeout
        conn = None
        try:
            conn = self.connect(db_path)
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
            cursor = conn.execute(sql)
            rows: list[tuple] = []
            while batch := cursor.fetchmany(1000):
                rows.extend(batch)
                if len(rows) > self.max_rows:
                    return ExecResult(None, f"more than {self.max_rows} rows")
            return ExecResult(rows)
        except sqlite3.OperationalError as err:
            if time.monotonic() > deadline:
                return ExecResult(None, f"timed out after {self.timeout:g} s")
            return ExecResult(None, f"OperationalError: {err}")
        except Exception as err:  # sqlite3.Warning (two statements), MemoryError, OverflowError...: all score 0
            return ExecResult(None, f"{type(err).__name__}: {err}")
        finally:
            if conn is not None:
                conn.close()
