"""Cache folders that other processes may read or build at the same time.

Entries are written through ``stateft.atomic`` (a temporary name, then a rename: a reader sees the old file, the new
one or none, never half of one). Two builders of the same entry take its lock (``filelock``: an OS lock that dies
with its holder, so a crash leaves no stale lock) and the second one finds the entry built. A corrupt entry is
reported in one warning line and removed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from stateft.errors import UserError

log = logging.getLogger(__name__)
LOCK_DIR = ".locks"  # per-entry lock files, inside the cache folder they protect


def writable(folder: Path) -> None:
    """Create ``folder``; a one-line UserError when the cache cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as err:
        raise UserError(
            f"cannot write the cache folder {str(folder)!r} ({err.strerror or err}): make it writable or point "
            "STATEFT_CACHE_DIR (dataset.cache_dir) to another folder"
        ) from None


@contextmanager
def build_lock(root: Path, name: str) -> Iterator[None]:
    """Hold the lock of entry ``name`` of cache folder ``root`` (``root/.locks/<name>.lock``); says in one info
    line when it waits for another process."""
    folder = root / LOCK_DIR
    writable(folder)
    lock = FileLock(str(folder / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to finish building %s in %s", name, root)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def discard(path: Path, reason: object, seen: os.stat_result | None = None) -> None:
    """Warn (one line naming the file) that ``path`` is corrupt and remove it, unless another process has already
    replaced it since it was read (``seen``: its stat then)."""
    text = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    why = " ".join(text.split())  # one line, whatever the message held
    log.warning("corrupt cache file %s (%s): removed, rebuilding it", path, why)
    try:
        now = path.stat()
        if seen is None or (now.st_ino, now.st_dev) == (seen.st_ino, seen.st_dev):
            path.unlink()
    except OSError:  # gone already, or not ours to remove: the rebuild's rename replaces it
        pass
