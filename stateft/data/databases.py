"""Spider databases built from ``<db_id>/<db_id>.sql`` scripts into a cache folder that concurrent runs share.

A database folder may hold scripts instead of ``.sqlite`` files (the test fixtures do). They are built into
``<cache>/spider_db_<digest>/``, keyed by the scripts (names and text) and the databases linked beside them. Each
database is built under a temporary name, marked complete (``PRAGMA application_id``, set last) and renamed into
place; one process builds at a time (a lock, ``stateft.data.shared_cache``) and the others find the files built. A
built file that does not open, fails ``PRAGMA quick_check`` or lacks the mark is reported in one warning line, removed
and rebuilt. A script runs with ATTACH disabled (so no ``VACUUM INTO`` either): it can write its own database only.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import urllib.parse
from contextlib import closing
from pathlib import Path

from stateft.atomic import replace_symlink, replacing
from stateft.data.shared_cache import build_lock, discard, writable
from stateft.errors import UserError

BUILT_MARK = 0x53544654  # "STFT" as the database's application_id: a file carrying it was built to the end
FORMAT = b"stateft spider_db v2"  # part of the folder key: a change in how databases are built starts a new folder


def database_problem(path: Path) -> str | None:
    """Why the built database at ``path`` cannot be used; None when it opens read-only, carries the mark and passes
    ``PRAGMA quick_check``."""
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            if conn.execute("PRAGMA application_id").fetchone()[0] != BUILT_MARK:
                return "not a complete build"
            check = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.Error as err:
        return f"{type(err).__name__}: {err}"
    return None if check == ["ok"] else "quick_check: " + "; ".join(map(str, check[:3]))


# bounds for building a stand-in database from a script (Spider's test databases are kilobytes)
BUILD_SECONDS = 120.0
BUILD_BYTES = 1 << 30


def build_database(
    script: Path, target: Path, max_seconds: float = BUILD_SECONDS, max_bytes: int = BUILD_BYTES
) -> None:
    """Run ``script`` into a new database file and rename it to ``target`` once complete. A script is data from
    whoever wrote the folder: it writes only this file, for at most ``max_seconds``, up to ``max_bytes``."""
    writable(target.parent)
    try:
        sql = script.read_text(encoding="utf-8")
        with replacing(target) as tmp, closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
            conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)  # the script writes this file and no other
            deadline = time.monotonic() + max_seconds
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)  # nonzero: interrupt
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")  # SQLITE_FULL past it
            conn.execute("PRAGMA journal_mode = MEMORY")  # no journal file beside the temporary
            conn.executescript(sql)
            if conn.in_transaction:  # a script that opens a transaction and never commits it
                conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode = DELETE")  # a WAL script's file would need -wal/-shm files to read
            conn.execute(f"PRAGMA application_id = {BUILT_MARK}")
    except (sqlite3.Error, UnicodeDecodeError) as err:
        raise UserError(
            f"cannot build a database from {script} ({type(err).__name__}: {err}): fix the script or put "
            f"{script.stem}.sqlite beside it"
        ) from None


def folder_digest(db_dir: Path, scripts: list[Path], existing: list[Path]) -> str:
    """16 hex digits of the scripts' names and text and of the databases linked beside them (name and target)."""
    digest = hashlib.sha256(FORMAT)
    for script in scripts:
        digest.update(f"{script.relative_to(db_dir)}\0".encode() + hashlib.sha256(script.read_bytes()).digest())
    for path in existing:
        digest.update(f"{path.relative_to(db_dir)}\0{path.resolve()}\0".encode())
    return digest.hexdigest()[:16]


def links_to(link: Path, source: Path) -> bool:
    return link.is_symlink() and Path(os.readlink(link)) == source


def materialize_databases(db_dir: Path, out_dir: Path) -> Path:
    """When ``db_dir`` holds ``<db_id>/<db_id>.sql`` scripts without databases, build the ``.sqlite`` files under
    ``out_dir`` (keyed by the scripts' hash) and return that folder; otherwise return ``db_dir``. The databases
    that ``db_dir`` does hold are linked into the same folder."""
    scripts = sorted(p for p in db_dir.glob("*/*.sql") if not p.with_suffix(".sqlite").exists())
    if not scripts:
        return db_dir
    existing = sorted(db_dir.glob("*/*.sqlite"))
    root = out_dir / f"spider_db_{folder_digest(db_dir, scripts, existing)}"
    targets = {script: root / script.parent.name / f"{script.stem}.sqlite" for script in scripts}
    links = {root / path.parent.name / path.name: path.resolve() for path in existing}
    ready = all(database_problem(t) is None for t in targets.values()) and all(map(links_to, links, links.values()))
    if ready:  # built earlier: no lock needed, so a read-only shared cache works
        return root
    with build_lock(out_dir, root.name):  # checked again: another process may have built it while we waited
        for script, target in targets.items():
            if os.path.lexists(target):
                problem = database_problem(target)
                if problem is None:
                    continue
                discard(target, problem)
            build_database(script, target)
        for link, source in links.items():
            if not links_to(link, source):
                writable(link.parent)
                replace_symlink(link, source)
    return root
