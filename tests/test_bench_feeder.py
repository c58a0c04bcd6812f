"""Benchmark 11's feeder behaves as a sensor does: it never stops to collect garbage (issue 14's lines lost at the
port were the feeder's own pauses, then a burst larger than the pty holds)."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

from bench.node_red_workload import feed
from tests.drivers_kit import pty_pair


def test_the_feeder_is_not_paused_by_the_garbage_collector_while_it_feeds() -> None:
    collections: list[int] = []  # when each began, time.time_ns() as the feed's own stamps
    feeding = threading.Event()

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            collections.append(time.time_ns())

    def litter() -> None:  # the counter's thread in the benchmark: it allocates while the feeder feeds
        while feeding.is_set():
            cycle: list[object] = []
            cycle.append(cycle)

    with pty_pair() as (master, path):
        os.set_blocking(master, False)  # as the benchmark's: what the pty cannot take is dropped
        slave = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                try:
                    os.read(slave, 65_536)
                except BlockingIOError:
                    stop.wait(0.001)

        drainer = threading.Thread(target=drain)
        drainer.start()
        gc.callbacks.append(on_gc)
        try:
            feeding.set()
            littering = threading.Thread(target=litter)
            littering.start()
            sent = feed(master, 0, 1_000, 0.3)
            feeding.clear()
            littering.join()
        finally:
            gc.callbacks.remove(on_gc)
            stop.set()
            drainer.join()
            os.close(slave)
    assert sent.dropped == 0
    assert collections, "the littering thread made the collector run around the feed"
    assert [at for at in collections if sent.started <= at <= sent.stopped] == []
    assert gc.isenabled()
