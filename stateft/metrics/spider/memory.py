"""Memory caps for one query: SQLite's heap (a hard heap limit) and the rows Python fetches (a byte budget).

SQLite's hard heap limit is process-wide: past it every SQLite allocation fails with SQLITE_NOMEM, which Python
raises as ``MemoryError``. The ``PRAGMA hard_heap_limit`` can only lower it, so a query under a larger cap would
inherit a smaller cap set earlier; when the SQLite library's ``sqlite3_hard_heap_limit64`` is reachable through
ctypes (it is wherever Python's ``_sqlite3`` links SQLite dynamically or exports its symbols) the limit is instead
set exactly for the query and put back afterwards. The PRAGMA then only confirms that the limit is in force.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MB = 1 << 20
MIN_SQLITE = (3, 31, 0)  # first release with the hard heap limit
_lock = threading.Lock()  # the limit is process-wide: one capped query at a time sets and restores it


def _find_setter() -> Callable[[int], int] | None:
    """``sqlite3_hard_heap_limit64`` of the SQLite that ``_sqlite3`` uses, or None where it is not reachable."""
    try:
        import _sqlite3

        setter = ctypes.CDLL(_sqlite3.__file__).sqlite3_hard_heap_limit64
    except (ImportError, OSError, AttributeError):
        return None
    setter.restype, setter.argtypes = ctypes.c_int64, [ctypes.c_int64]
    return setter


_setter = _find_setter()


@contextmanager
def sqlite_heap_limit(nbytes: int) -> Iterator[None]:
    """SQLite's process-wide hard heap limit at ``nbytes`` (or an already lower one) while the block runs."""
    with _lock:
        if _setter is None:  # connect() lowers it through the PRAGMA instead; it stays lowered
            yield
            return
        prior = _setter(-1)  # a negative argument reads the limit without changing it
        _setter(nbytes if prior == 0 else min(prior, nbytes))
        try:
            yield
        finally:
            _setter(prior)


def row_bytes(row: tuple) -> int:
    """What one fetched row holds in Python: the tuple, its values and its slot in the result list."""
    return sys.getsizeof(row) + sum(map(sys.getsizeof, row)) + 8
