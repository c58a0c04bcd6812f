"""Serial robustness: backoff when a port opens and fails at once, CR/LF/CRLF lines, ``waiting for port``.

The ports are real pseudo-terminals opened by pyserial. A port that "opens and
fails at once" is a pty whose device end is closed right after the gateway
opened its end: pyserial's next read fails with EIO, as a flaky USB adapter's
does. Outages of minutes run in virtual time: the link's ``wait`` advances a
:class:`VirtualClock` instead of sleeping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from gpiozero.pins.mock import MockFactory

from core.clock import VirtualClock
from drivers.protocols import KeyValueParser, Record
from drivers.serial_line import KeyValueSensor, SerialKvConfig
from drivers.serial_link import SerialLink
from drivers.supervision import Supervisor
from gateway.app import Gateway
from gateway.config import load_config
from gateway.control import format_status
from gateway.service import Service
from tests import toml_kit as toml
from tests.drivers_kit import Recorder, make_context
from tests.helpers import RecordingForwarder, wait_until, write_config


class FlakyAdapter:
    """Each open is a fresh pty. By default its device end closes at once (the port fails on the first
    read); an open listed in ``talks`` first sends a line, and the device end closes when the test says."""

    def __init__(self, talks: set[int] | None = None) -> None:
        self.talks = talks or set()
        self.opens = 0
        self.talking: int | None = None

    def open(self, url: str, **kwargs: Any) -> serial.SerialBase:
        master, slave = os.openpty()
        path = os.ttyname(slave)
        os.close(slave)
        port = serial.serial_for_url(path, **kwargs)
        self.opens += 1
        if self.opens in self.talks:
            os.write(master, b"t=1\n")
            self.talking = master
        else:
            os.close(master)
        return port

    def unplug(self) -> None:
        if self.talking is not None:
            os.close(self.talking)
            self.talking = None


class VirtualWaits:
    """The link's ``wait``: records each delay and moves virtual time instead of sleeping; stops the
    link once ``horizon`` virtual seconds have passed."""

    def __init__(self, clock: VirtualClock, horizon: float) -> None:
        self.clock = clock
        self.end = clock.monotonic() + horizon
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        self.clock.advance(seconds)
        return self.clock.monotonic() >= self.end


def run_link(adapter: FlakyAdapter, waits: VirtualWaits, clock: VirtualClock,
             on_records: Any = None) -> SerialLink:
    link = SerialLink("climate", "/dev/ttyUSB0", baudrate=9600, open_serial=adapter.open,
                      parser=KeyValueParser(), on_records=on_records or (lambda records: None),
                      on_lost=lambda reason: None, retry_min_s=1.0, retry_max_s=60.0, stable_s=30.0,
                      clock=clock, wait=waits)
    link.start()
    assert link._thread is not None
    link._thread.join(timeout=20)
    link.stop()
    return link


def test_a_port_that_opens_and_fails_at_once_is_retried_with_a_growing_backoff_and_one_error_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    adapter, waits = FlakyAdapter(), VirtualWaits(clock, horizon=9 * 60)
    with caplog.at_level(logging.INFO, logger="drivers.serial_link"):
        link = run_link(adapter, waits, clock)
    assert waits.delays[:8] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert adapter.opens <= 16  # nine minutes: 1+2+4+...+32 then every minute (416 attempts before)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "failed" in errors[0].getMessage()
    assert link.failures == adapter.opens


def test_the_backoff_starts_over_only_after_the_port_delivered_data_for_a_while(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock()
    adapter, waits = FlakyAdapter(talks={4, 5}), VirtualWaits(clock, horizon=200)
    quick = {5}  # the 5th open delivers data but fails within a second: no reset

    def on_records(records: list[Record]) -> None:
        clock.advance(1 if adapter.opens in quick else 31)  # the port delivers data for 31 s (or 1 s)
        adapter.unplug()

    with caplog.at_level(logging.INFO, logger="drivers.serial_link"):
        run_link(adapter, waits, clock, on_records)
    # opens 1-3 fail at once: 1, 2, 4; open 4 delivers for 31 s, then fails: start over at 1;
    # open 5 delivers for 1 s only: no reset, the backoff goes on growing.
    assert waits.delays[:6] == [1, 2, 4, 1, 2, 4]
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("delivers data again after 3 failed attempts" in m for m in messages) == 1
    assert sum(r.levelno >= logging.ERROR for r in caplog.records) == 3  # one per outage


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def kv_sensor(port: str, **extra: Any) -> KeyValueSensor:
    return KeyValueSensor(SerialKvConfig.model_validate(
        {"id": "climate", "driver": "serial.kv", "port": port, "fields": {"t": {"entity": "t"}}, **extra}))


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_lines_ending_in_cr_lf_or_crlf_all_parse(pty: tuple[int, str], ending: bytes) -> None:
    master, path = pty
    rec = Recorder()
    driver = kv_sensor(path)
    driver.start(make_context(rec))
    try:
        os.write(master, b"t=1" + ending + b"t=2" + ending)
        os.write(master, b"t=3" + ending[:1])  # a CRLF split between two reads
        os.write(master, ending[1:] + b"t=4" + ending)
        rec.wait_for(lambda: rec.values(entity="t") == [1.0, 2.0, 3.0, 4.0])
        assert driver.counters.malformed == 0
    finally:
        driver.stop()


def test_a_device_whose_port_does_not_exist_is_waiting_for_port_not_running(
    tmp_path: Path, pty: tuple[int, str],
) -> None:
    _, path = pty
    port = tmp_path / "ttyUSB0"
    driver = kv_sensor(str(port), retry_min_s=0.05, retry_max_s=0.05)
    rec = Recorder()
    supervisor = Supervisor([driver], lambda d: make_context(rec), VirtualClock())
    supervisor.start_all()
    try:
        assert [h.status for h in supervisor.health()] == ["waiting for port"]
        port.symlink_to(path)  # plugged in
        wait_until(lambda: [h.status for h in supervisor.health()] == ["running"], timeout=5, what="running")
    finally:
        supervisor.stop_all()


def test_gateway_status_shows_a_missing_port_as_waiting_and_does_not_count_it_running(tmp_path: Path) -> None:
    text = toml.config(toml.gateway("wait"), toml.relay("light", 22),
                       toml.serial_kv("climate", "temperature", port=str(tmp_path / "ttyUSB9")))
    gateway = Gateway(load_config(write_config(tmp_path, text, rules="version = 1\n")),
                      pin_factory=MockFactory(), forwarder=RecordingForwarder())
    gateway.start()
    try:
        assert [d.id for d in gateway.running] == ["light"]
        assert gateway.driver_health()["climate"]["status"] == "waiting for port"
        status = Service(gateway).snapshot()
        assert {d["id"]: d["health"] for d in status["devices"]} == {"light": "running",
                                                                     "climate": "waiting for port"}
        assert "waiting for port" in format_status(status)
    finally:
        gateway.shutdown()
