"""Overload: a serial device that floods is read at the port's pace, its readings coalesced, and flagged.

A real pseudo-terminal is fed as fast as the kernel takes it for about two
seconds (tens of thousands of lines a second) into a ``serial.kv`` sensor
posting onto a real :class:`~gateway.bus.Bus` drained by a real
:class:`~gateway.dispatcher.Dispatcher`. Asserted are bounds, never timings:
the process's memory grows by little, the newest value arrives, every line was
counted (parsed, or while flooding only counted: ``unparsed``), and the flood shows in health.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import serial

from core.clock import SystemClock
from core.events import Event, EventFactory, Kind
from drivers.base import DriverContext
from drivers.registry import driver_class
from drivers.serial_line import SerialSensor
from drivers.supervision import Supervisor
from gateway.bus import Bus
from gateway.dispatcher import Dispatcher
from tests.helpers import wait_until

FLOOD_S = 2.0
MALFORMED_EVERY = 1000
RSS_GROWTH_BOUND = 32 * 2**20
"""Generous: the bus holds at most a quota of readings per entity; before the quota it grew by ~100 MB."""


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Newest:
    """What the dispatcher forwarded: only the newest reading per entity, so the test's memory stays small."""

    values: dict[str, object] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: Event) -> None:
        if event.kind is Kind.READING:
            with self.lock:
                self.values[event.entity] = event.value
        time.sleep(0.0002)  # a Pi-class forwarder: the dispatcher is much slower than the port

    def get(self, entity: str) -> object:
        with self.lock:
            return self.values.get(entity)


@dataclass
class Flood:
    lines: int = 0
    malformed: int = 0
    last: int = -1
    peak_rss: int = 0


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield master, os.ttyname(slave)
    finally:
        for fd in (master, slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class House:
    bus: Bus
    dispatcher: Dispatcher
    sensor: SerialSensor
    supervisor: Supervisor
    forwarded: Newest
    thread: threading.Thread


@pytest.fixture
def house(pty: tuple[int, str]) -> Iterator[House]:
    _, path = pty
    clock = SystemClock()
    events = EventFactory(clock, boot="flood")
    bus = Bus()
    forwarded = Newest()
    dispatcher = Dispatcher(bus, events, forward=forwarded)
    cls = driver_class("serial.kv")
    sensor = cls(cls.Config.model_validate({
        "id": "spewer", "driver": "serial.kv", "port": path, "report_interval": 5,
        "fields": {"t": {"entity": "t"}, "h": {"entity": "h"}},
    }))
    assert isinstance(sensor, SerialSensor)
    supervisor = Supervisor([sensor], lambda d: DriverContext(post=bus.post, events=events,
                                                               open_serial=serial.serial_for_url), clock)
    supervisor.start_all()
    thread = threading.Thread(target=dispatcher.run, args=(0.05,), daemon=True)
    thread.start()
    yield House(bus, dispatcher, sensor, supervisor, forwarded, thread)
    dispatcher.stop()
    thread.join(5)
    supervisor.stop_all()


def flood(master: int, seconds: float = FLOOD_S) -> Flood:
    """Write ``t=N h=1`` lines (and a malformed one every MALFORMED_EVERY) as fast as the pty takes them."""
    done = Flood(peak_rss=rss())
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        block = bytearray()
        for _ in range(200):
            block += b"t=%d h=1\n" % n
            n += 1
            if n % MALFORMED_EVERY == 0:
                block += b"t=?? garbage\n"
                done.malformed += 1
        os.write(master, bytes(block))
        done.peak_rss = max(done.peak_rss, rss())
    done.lines, done.last = n, n - 1
    return done


def test_a_flooding_device_costs_bounded_memory_and_its_newest_value_arrives(
    pty: tuple[int, str], house: House,
) -> None:
    before = rss()
    sent = flood(pty[0])
    wait_until(lambda: house.forwarded.get("t") == sent.last, timeout=30, what="the newest value forwarded")
    assert sent.lines > 10_000, "the flood was not a flood"
    assert sent.peak_rss - before < RSS_GROWTH_BOUND
    assert len(house.bus) <= house.bus.capacity + 2


def test_every_line_of_a_flood_is_counted_and_the_malformed_ones_parsed_are_counted_as_malformed(
    pty: tuple[int, str], house: House,
) -> None:
    # While flooding, only the newest lines of a read are parsed; the others are counted ``unparsed``.
    sent = flood(pty[0])
    counters = house.sensor.counters
    wait_until(lambda: counters.records + counters.malformed + counters.unparsed == sent.lines + sent.malformed,
               timeout=30, what="every line counted")
    assert counters.unparsed > 0
    assert counters.malformed <= sent.malformed


def test_a_device_sending_far_beyond_its_declared_rate_is_flagged_in_health(
    pty: tuple[int, str], house: House,
) -> None:
    flood(pty[0])
    (health,) = house.supervisor.health()
    assert health.stats["flooding"] == 1
    assert health.stats["lines_per_s"] > health.stats["expected_lines_per_s"]
    assert any(note.startswith("flooding: ") and "lines/s, expected ≤ " in note for note in health.notes)


def test_a_flood_is_logged_once_not_once_a_second(
    pty: tuple[int, str], house: House, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="drivers.serial_link"):
        flood(pty[0])
    floods = [r for r in caplog.records if "flooding" in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(floods) == 1


def test_a_flooding_device_coalesces_its_readings_before_the_bus(pty: tuple[int, str], house: House) -> None:
    sent = flood(pty[0])
    wait_until(lambda: house.forwarded.get("t") == sent.last, timeout=30, what="the newest value forwarded")
    assert house.sensor.stats()["coalesced_lines"] > 0
    assert house.bus.counters.posted < sent.lines  # not one event per line once the flood is seen


def test_a_device_within_its_declared_rate_is_not_flagged(pty: tuple[int, str], house: House) -> None:
    os.write(pty[0], b"t=1 h=2\n")
    wait_until(lambda: house.forwarded.get("t") == 1.0, timeout=10, what="the reading")
    (health,) = house.supervisor.health()
    assert health.stats.get("flooding", 0) == 0
    assert health.notes == []
