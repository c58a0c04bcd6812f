"""Benchmark 11's feeder behaves as a sensor does: it never stops to collect garbage (issue 14's lines lost at the
port were the feeder's own pauses, then a burst larger than the pty holds)."""

from __future__ import annotations

import gc
import os
import threading

from pytest_mock import MockerFixture

from bench.node_red_workload import collector_paused, feed
from tests.drivers_kit import pty_pair


def test_the_feeder_writes_every_line_with_the_garbage_collector_paused(mocker: MockerFixture) -> None:
    collector_on_at_write: list[bool] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # the feeder's writes, as they happen (only it writes here)
        collector_on_at_write.append(gc.isenabled())
        return real_write(fd, data)

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
        mocker.patch("bench.node_red_workload.os.write", side_effect=write)
        try:
            sent = feed(master, 0, 1_000, 0.2)
        finally:
            mocker.stopall()
            stop.set()
            drainer.join()
            os.close(slave)
    assert sent.dropped == 0
    assert collector_on_at_write and not any(collector_on_at_write)
    assert gc.isenabled()


def test_the_collector_is_on_again_after_a_pause_even_when_the_feed_fails() -> None:
    try:
        with collector_paused():
            assert not gc.isenabled()
            raise OSError("the pty went away")
    except OSError:
        pass
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off_after_a_pause() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
