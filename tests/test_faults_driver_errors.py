"""Fault: a driver that raises on every tenth reading.

The serial ``key=value`` driver reads a real pseudo-terminal; a subclass makes
its line handling raise an unexpected error (not a parse error: a bug, a
flaky library) on every tenth line. What is asked: those readings are lost
and counted, the reader thread carries on, and every other line arrives.
A second case feeds malformed lines (the documented parse-error path).
"""

from __future__ import annotations

import os
import tty
from collections.abc import Iterator
from typing import Any

import pytest
import serial

from drivers.base import DriverContext
from drivers.serial_line import KeyValueSensor, SerialKvConfig
from gateway.clock import SystemClock
from gateway.events import Event, EventFactory, Kind
from gateway.guard import failures
from tests.faults_support import Tally
from tests.helpers import wait_until

LINES = 1_000


class EveryTenthFails(KeyValueSensor):
    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.calls = 0

    def handle_line(self, raw: bytes, ctx: DriverContext) -> None:
        self.calls += 1
        if self.calls % 10 == 0:
            raise RuntimeError(f"sensor library failed on reading {self.calls}")
        super().handle_line(raw, ctx)


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def start(driver: KeyValueSensor, posted: list[Event]) -> None:
    ctx = DriverContext(post=posted.append, events=EventFactory(SystemClock()), open_serial=serial.serial_for_url)
    driver.start(ctx)


def config(path: str) -> SerialKvConfig:
    return SerialKvConfig.model_validate(
        {"driver": "serial.kv", "id": "climate", "port": path, "fields": {"t": {"entity": "temperature"}}}
    )


def values(posted: list[Event]) -> list[int]:
    return [int(e.value) for e in list(posted) if e.kind is Kind.READING]  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="on main the serial reader thread dies at the first unexpected exception (891 of 900 good lines lost); "
    "the drivers branch guards the reader: remove this mark when it lands",
)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_driver_raising_on_every_tenth_reading_loses_only_those_and_keeps_reading(pty: tuple[int, str]) -> None:
    master, path = pty
    driver = EveryTenthFails(config(path))
    posted: list[Event] = []
    start(driver, posted)
    failed_before = sum(failures.values())
    tally = Tally("driver raises on every tenth reading")
    try:
        for i in range(1, LINES + 1):
            os.write(master, b"t=%d\n" % i)
            if i % 10:
                tally.send(i)
            if i % 100 == 0:  # the pty's buffer is small: let the reader keep up, as a 115,200-baud line would
                wait_until(lambda i=i: driver.calls >= i - 5 or not alive(driver), timeout=5, what="the reader")
        wait_until(lambda: len(values(posted)) >= len(tally.sent) or not alive(driver), timeout=10,
                   what="every good line")
    finally:
        alive_at_end = alive(driver)
        driver.stop()
    tally.receive(values(posted))
    tally.extra.update(raised=LINES // 10, reader_alive=alive_at_end,
                       counted_by_guard=sum(failures.values()) - failed_before)
    tally.report()
    tally.assert_nothing_lost()
    assert tally.duplicated == 0
    assert alive_at_end


@pytest.mark.slow
def test_malformed_lines_are_counted_and_every_good_line_arrives(pty: tuple[int, str]) -> None:
    master, path = pty
    driver = KeyValueSensor(config(path))
    posted: list[Event] = []
    start(driver, posted)
    tally = Tally("every tenth serial line malformed")
    try:
        for i in range(1, LINES + 1):
            os.write(master, b"t=%d\n" % i if i % 10 else b"t=\xff garbage %d\n" % i)
            if i % 10:
                tally.send(i)
            if i % 100 == 0:
                wait_until(lambda i=i: len(values(posted)) + driver.malformed >= i - 5, timeout=5, what="the reader")
        wait_until(lambda: len(values(posted)) >= len(tally.sent), timeout=10, what="every good line")
    finally:
        driver.stop()
    tally.receive(values(posted))
    tally.extra.update(malformed=driver.malformed)
    tally.report()
    tally.assert_nothing_lost()
    assert driver.malformed == LINES // 10


def alive(driver: KeyValueSensor) -> bool:
    thread = driver._thread
    return thread is not None and thread.is_alive()
