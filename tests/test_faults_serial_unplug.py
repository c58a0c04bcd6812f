"""Fault: a serial device unplugged and plugged back mid-stream.

``socat`` joins two real pseudo-terminals: the driver opens one link
(``ttyGW``), the test writes a sensor's lines into the other (``ttyFEED``).
Killing socat is pulling the USB cable (pyserial fails at once and the link
vanishes); starting it again with the same links is plugging it back. The
serial.kv driver must mark its entity unavailable, reopen the port by itself,
mark it available again, and deliver every line the device could send.
Lines the device writes while unplugged fail at the device and are not sent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from core.clock import SystemClock
from core.events import Event, EventFactory, Kind
from drivers.base import DriverContext
from drivers.serial_line import KeyValueSensor, SerialKvConfig
from tests.faults_support import Tally
from tests.helpers import wait_until

RATE = 500
PER_PHASE = 500


class Cable:
    """socat between two pty links; :meth:`unplug` kills it, :meth:`plug` starts it again."""

    def __init__(self, directory: Path) -> None:
        self.gw = directory / "ttyGW"
        self.feed = directory / "ttyFEED"
        self.process: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        socat = shutil.which("socat")
        if socat is None:
            pytest.fail("socat is not installed: run .ci/run (it installs it)")
        self.process = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.gw}", f"pty,raw,echo=0,link={self.feed}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: self.gw.exists() and self.feed.exists(), timeout=5, what="socat's links")

    def unplug(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
        wait_until(lambda: not self.gw.exists(), timeout=5, what="the link to vanish")


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[Cable]:
    cable = Cable(tmp_path)
    cable.plug()
    yield cable
    cable.unplug()


def stream(feed: int, first: int, count: int, tally: Tally) -> None:
    started = time.monotonic()
    for i in range(first, first + count):
        os.write(feed, b"t=%d\n" % i)
        tally.send(i)
        pause = started + (i - first + 1) / RATE - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def readings(posted: list[Event]) -> list[int]:
    return [int(e.value) for e in list(posted) if e.kind is Kind.READING]  # type: ignore[arg-type]


def availability(posted: list[Event]) -> list[bool]:
    return [bool(e.value) for e in list(posted) if e.kind is Kind.AVAILABILITY]


@pytest.mark.slow
def test_a_serial_device_unplugged_and_plugged_back_mid_stream_is_reopened_and_loses_nothing(cable: Cable) -> None:
    config = SerialKvConfig.model_validate({
        "driver": "serial.kv", "id": "climate", "port": str(cable.gw), "retry_min_s": 0.1, "retry_max_s": 0.5,
        "fields": {"t": {"entity": "temperature"}},
    })
    driver = KeyValueSensor(config)
    posted: list[Event] = []
    driver.start(DriverContext(post=posted.append, events=EventFactory(SystemClock()),
                               open_serial=serial.serial_for_url))
    tally = Tally("serial device unplugged and plugged back")
    not_sent = 0
    try:
        feed = os.open(cable.feed, os.O_RDWR | os.O_NOCTTY)
        stream(feed, 0, PER_PHASE, tally)
        wait_until(lambda: len(readings(posted)) >= PER_PHASE, what="the first half")
        cable.unplug()
        unplugged = time.monotonic()
        for i in range(PER_PHASE, PER_PHASE + 50):  # the device keeps trying while the cable is out
            try:
                os.write(feed, b"t=%d\n" % i)
            except OSError:
                not_sent += 1
        os.close(feed)
        wait_until(lambda: availability(posted)[-1:] == [False], timeout=5, what="unavailable after the unplug")
        cable.plug()
        assert driver.link is not None
        wait_until(lambda: driver.link is not None and driver.link.opens >= 2, timeout=5, what="the port reopened")
        reopened = time.monotonic() - unplugged
        feed = os.open(cable.feed, os.O_RDWR | os.O_NOCTTY)
        stream(feed, 10_000, PER_PHASE, tally)
        os.close(feed)
        wait_until(lambda: set(readings(posted)) >= tally.sent, timeout=10, what="every line sent")
    finally:
        driver.stop()
    tally.receive(readings(posted))
    tally.extra.update(written_while_unplugged_not_sent=not_sent, reopened_after_s=round(reopened, 2),
                       availability=availability(posted))
    tally.report()
    tally.assert_nothing_lost()
    assert tally.duplicated == 0
    assert availability(posted)[-2:] == [False, True]
