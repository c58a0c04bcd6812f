"""SQLite's memory on a small board: a capped page cache, and the cache and freed heap given back after a burst.

The outbox and the event history each hold a SQLite connection for months. With SQLite's default cache
(2,000 KiB a connection) a flood filled both caches with pages long written and never gave them back: 4.3 of
the 6.5 MB that stayed after benchmark 8's flood d (issue 17, docs/reliability.md). Their rows are read and
written at the two ends of a table, a few pages each, so a small cache costs nothing; the pages a burst needs
beyond it come from the operating system's file cache.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence

CACHE_SPILL_KB = 2000
"""How much a transaction's dirty pages may reach (KiB) before SQLite writes them to the WAL ahead of the
commit: SQLite's own threshold, its default cache (483 pages of 4 KiB), so a big batch is written once, as
with the default cache; its pages beyond the capped cache are freed as soon as it is committed."""


def cap_page_cache(db: sqlite3.Connection, cache_kb: int) -> None:
    """Keep ``db``'s page cache to ``cache_kb`` KiB without changing when a big transaction spills."""
    db.execute(f"PRAGMA cache_size=-{int(cache_kb)}")
    db.execute(f"PRAGMA cache_spill=-{CACHE_SPILL_KB}")


class MultiRowInsert:
    """Many rows into one table in a few multi-row INSERT statements, of the ``chunks`` sizes (largest first, the
    last 1) rather than ``executemany``'s one ``sqlite3_step`` per row.

    Python's sqlite3 lets go of the GIL around every step: one step per row was one GIL hand-over per row for the
    writing thread, each a wait for the busy dispatcher to give it back (issue 14). A handful of sizes keeps the
    prepared statements few (sqlite3 caches them by text). SQLite holds each for the connection's life
    (``shrink_memory`` does not free them), so the largest size is a memory bound: each user's tests check it."""

    __slots__ = ("_chunks", "_columns", "_sql")

    def __init__(self, table: str, columns: Sequence[str], chunks: Sequence[int]) -> None:
        row = "(" + ", ".join("?" * len(columns)) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - our names, placeholders only
        self._columns = len(columns)
        self._chunks = tuple(chunks)
        self._sql = {size: head + ", ".join([row] * size) for size in self._chunks}

    def __call__(self, db: sqlite3.Connection, values: Sequence[object]) -> None:
        """Insert the rows whose columns ``values`` holds, row after row, in order."""
        rows, start = len(values) // self._columns, 0
        for size in self._chunks:
            sql = self._sql[size]
            while rows - start >= size:
                db.execute(sql, values[start * self._columns : (start + size) * self._columns])
                start += size


def give_back_page_cache(db: sqlite3.Connection) -> None:
    """Empty ``db``'s page cache (``PRAGMA shrink_memory``); raises :class:`sqlite3.Error` as any statement."""
    db.execute("PRAGMA shrink_memory")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the process's own symbols, looked up at the first call (not at import:
    ``ctypes.util.find_library`` runs ``ldconfig``, 4 ms here); None with another C library."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def give_back_freed_memory() -> bool:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim(0)``); False where there is none.

    Why: SQLite's pages are allocated by the thread that runs the query (the publisher, the history's
    writer), in that thread's malloc arena, among allocations that live on. Freed, they stay in the arena and
    in the process's RSS; only ``malloc_trim`` hands the whole free pages in the middle of an arena back.
    Measured on flood d: 1.2 MB given back, in well under a millisecond. Called after a drain, not on a timer
    (every 5 s gave back 0.5 MB while the caches still held their pages)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
