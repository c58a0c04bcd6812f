"""SQLite's own count of the memory it holds (``sqlite3_status(SQLITE_STATUS_MEMORY_USED)``), for the tests
that pin the page caches of the outbox and the history.

Python's ``sqlite3`` module does not expose the figure, so it is read through ``ctypes`` from the same
shared library the module is linked against. The figure is the process's, for every connection; a test
compares it before and after what it does, on its own connections. Where the module carries its own copy
of SQLite (a static build), the figure would be another library's: :func:`sqlite_memory_used` skips.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3

import pytest

SQLITE_STATUS_MEMORY_USED = 0


def _library() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        version = lib.sqlite3_libversion().decode()
    except (OSError, AttributeError):
        return None
    return lib if version == sqlite3.sqlite_version else None


_LIB = _library()


def sqlite_memory_used() -> int:
    """Bytes SQLite holds now in this process (page caches, schemas, prepared statements)."""
    if _LIB is None:
        pytest.skip("the sqlite3 module's SQLite library cannot be read through ctypes")
    current, highwater = ctypes.c_int64(), ctypes.c_int64()
    _LIB.sqlite3_status64(SQLITE_STATUS_MEMORY_USED, ctypes.byref(current), ctypes.byref(highwater), 0)
    return current.value
