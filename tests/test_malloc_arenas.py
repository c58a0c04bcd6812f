"""glibc's malloc arenas: the service's threads share two (``MALLOC_ARENA_MAX`` in systemd/gateway.service), so
memory one thread frees is reused by another rather than kept resident in an arena per thread
(docs/performance.md, *The gateway's peak RSS at 10,000 lines/s*)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from tests.faults_support import unit_assignments

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not glibc: no malloc arenas to share")

# Eight threads, each holding blocks beyond pymalloc's 512 bytes (from the C heap, in the thread's arena) all at
# once; then glibc's own report of its arenas (malloc_stats, on stderr, one "Arena N:" per arena).
THREADS = """
import ctypes, threading
start, done = threading.Barrier(8), threading.Barrier(8)
def work():
    start.wait()
    blocks = [bytes(2000) for _ in range(200)]
    done.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas_of_eight_threads(environment: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, check=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **environment})
    return done.stderr.count("Arena ")


def test_threads_get_malloc_arenas_of_their_own_without_the_units_environment() -> None:
    """The premise: what the unit's setting changes (glibc gives up to eight arenas per core)."""
    assert arenas_of_eight_threads({}) > 2


def test_the_services_threads_allocate_from_at_most_two_malloc_arenas() -> None:
    assert arenas_of_eight_threads(unit_assignments()) <= 2
