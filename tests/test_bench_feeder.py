"""Benchmark 11's feeder behaves as a sensor does: it never stops to collect garbage (issue 14's lines lost at the
port were the feeder's own pauses, then a burst larger than the pty holds)."""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

import pytest
from pytest_mock import MockerFixture

from bench.node_red_workload import FEEDER_NICE, Feed, collector_paused, feed, sensor_priority
from tests.drivers_kit import pty_pair


def test_the_feeder_writes_every_line_with_the_garbage_collector_paused(mocker: MockerFixture) -> None:
    collector_on_at_write: list[bool] = []
    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # the feeder's writes, as they happen (only it writes here)
        collector_on_at_write.append(gc.isenabled())
        return real_write(fd, data)

    sent = feed_through(mocker, write)
    assert sent.dropped == 0
    assert collector_on_at_write and not any(collector_on_at_write)
    assert gc.isenabled()


def test_the_feeder_writes_at_a_sensors_priority_where_the_system_allows_it(mocker: MockerFixture) -> None:
    with sensor_priority() as allowed:
        pass
    if not allowed:
        pytest.skip("this process may not raise a thread's priority (no CAP_SYS_NICE)")
    me = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, me)
    nice_at_write: set[int] = set()
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        nice_at_write.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real_write(fd, data)

    feed_through(mocker, write)
    assert nice_at_write == {FEEDER_NICE}
    assert os.getpriority(os.PRIO_PROCESS, me) == before


def feed_through(mocker: MockerFixture, write: Callable[[int, bytes], int]) -> Feed:
    """Feed a pty (drained by a thread, as a reader would) for 0.2 s at 1,000 lines/s, with ``write`` standing in for
    ``os.write`` meanwhile (only the feeder writes here)."""
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
    return sent


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
