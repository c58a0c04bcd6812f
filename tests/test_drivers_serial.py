"""Serial sensor drivers over real pseudo-terminals: every protocol, unplug/replug, staleness, polling."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.clock import VirtualClock
from core.events import Kind
from drivers.protocols import MHZ19_READ, mhz19_response, nmea_sentence, pms5003_frame
from drivers.registry import driver_class
from drivers.serial_line import SerialSensor
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context, pty_pair


def make(driver: str, port: str, fields: dict[str, Any], **extra: Any) -> SerialSensor:
    cls = driver_class(driver)
    sensor = cls(cls.Config.model_validate({"id": "dev", "driver": driver, "port": port, "fields": fields, **extra}))
    assert isinstance(sensor, SerialSensor)
    return sensor


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    with pty_pair() as pair:
        yield pair


def read_exactly(fd: int, n: int, timeout: float = 5.0) -> bytes:
    """Read ``n`` bytes the driver wrote, or fail after ``timeout`` (never hang the suite)."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"the driver sent {data!r}, expected {n} bytes"
        data += os.read(fd, n - len(data))
    return data


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_json_lines_map_dotted_fields_to_entities(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = make("serial.json", path, {"env.t": {"entity": "t", "unit": "°C"}})
    driver.start(make_context(rec))
    os.write(master, b'{"env": {"t": 19.5, "h": 40}}\n')
    rec.wait_for(lambda: rec.values(entity="t") == [19.5])
    assert rec.of(Kind.READING)[0].unit == "°C"
    driver.stop()


def test_a_gps_reports_its_position(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = make("serial.nmea", path, {"latitude": {"entity": "lat"}, "longitude": {"entity": "lon"}})
    driver.start(make_context(rec))
    os.write(master, b"garbage\r\n" + nmea_sentence("GPGGA,1,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"))
    rec.wait_for(lambda: len(rec.of(Kind.READING)) == 2)
    assert rec.values(entity="lat") == [48.1173]
    assert driver.counters.malformed == 1
    driver.stop()


def test_a_dust_sensor_frame_with_a_bad_checksum_is_counted_not_read(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = make("serial.pms5003", path, {"pm2_5": {"entity": "pm25"}})
    driver.start(make_context(rec))
    good = pms5003_frame([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    bad = good[:6] + bytes([good[6] ^ 0xFF]) + good[7:]
    os.write(master, bad + good)
    rec.wait_for(lambda: rec.values(entity="pm25") == [5.0])
    assert driver.counters.bad_checksum == 1
    assert driver.entities()[0].unit == "µg/m³"
    driver.stop()


def test_a_co2_sensor_is_polled_on_a_fixed_rate_and_its_answers_read(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    driver = make("serial.mhz19", path, {"co2": {"entity": "co2"}}, poll_s=10)
    driver.start(make_context(rec, scheduler=sched))
    for requests, ppm in enumerate((600, 650), start=1):
        sched.advance(10)
        assert read_exactly(master, 9) == MHZ19_READ
        os.write(master, mhz19_response(ppm, 22))

        def answered(n: int = requests) -> bool:
            return len(rec.of(Kind.READING)) == n

        rec.wait_for(answered)
    assert rec.values(entity="co2") == [600.0, 650.0]
    driver.stop()


def test_a_co2_entity_takes_the_protocol_unit_and_class(pty: tuple[int, str]) -> None:
    _, path = pty
    spec = make("serial.mhz19", path, {"co2": {"entity": "co2"}}).entities()[0]
    assert (spec.unit, spec.device_class) == ("ppm", "carbon_dioxide")


def test_an_unknown_field_of_a_fixed_protocol_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ValidationError, match="unknown field 'pm25'; did you mean 'pm2_5'"):
        make("serial.pms5003", "/dev/null", {"pm25": {"entity": "x"}})


def test_a_port_named_by_a_stable_link_is_opened_through_it(pty: tuple[int, str], tmp_path: Path) -> None:
    master, path = pty
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
    link.symlink_to(path)
    rec = Recorder()
    driver = make("serial.kv", str(link), {"t": {"entity": "t"}})
    driver.start(make_context(rec))
    os.write(master, b"t=1\n")
    rec.wait_for(lambda: rec.values(entity="t") == [1.0])
    driver.stop()


def test_a_silent_sensor_becomes_unavailable_after_stale_after(pty: tuple[int, str]) -> None:
    _, path = pty
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    driver = make("serial.kv", path, {"t": {"entity": "t"}}, stale_after=30)
    driver.start(make_context(rec, scheduler=sched))
    sched.advance(31)
    assert [(e.entity, e.value) for e in rec.of(Kind.AVAILABILITY)] == [("t", False)]
    driver.stop()


def test_a_missing_port_is_unavailable_at_start_not_an_error(tmp_path: Path) -> None:
    rec = Recorder()
    driver = make("serial.kv", str(tmp_path / "ttyUSB9"), {"t": {"entity": "t"}}, retry_min_s=0.05)
    driver.start(make_context(rec))
    [event] = rec.of(Kind.AVAILABILITY)
    assert event.value is False and "cannot open" in (event.detail or "")
    driver.stop()


def test_start_and_stop_leak_no_threads_or_descriptors(pty: tuple[int, str]) -> None:
    master, path = pty
    before_fds, before_threads = open_fds(), set(threading.enumerate())
    for _ in range(3):
        rec = Recorder()
        driver = make("serial.kv", path, {"t": {"entity": "t"}})
        driver.start(make_context(rec))
        os.write(master, b"t=1\n")

        def read(r: Recorder = rec) -> bool:
            return len(r.of(Kind.READING)) == 1

        rec.wait_for(read)
        driver.stop()
    assert open_fds() <= before_fds
    assert set(threading.enumerate()) <= before_threads


# -- unplug and replug with socat ---------------------------------------------------------------


class Socat:
    """A USB serial adapter: ``ttyGW`` is the gateway's end, ``ttyFEED`` the device's. Kill = unplug."""

    def __init__(self, directory: Path) -> None:
        self.gw = directory / "ttyGW"
        self.feed = directory / "ttyFEED"
        self.process: subprocess.Popen[bytes] | None = None

    def plug(self) -> None:
        socat = shutil.which("socat") or pytest.fail("socat is not installed")
        self.process = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.gw}", f"pty,raw,echo=0,link={self.feed}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while not (self.gw.exists() and self.feed.exists()):
            assert time.monotonic() < deadline, "socat did not create its ptys"
            time.sleep(0.01)

    def unplug(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def send(self, data: bytes) -> None:
        fd = os.open(self.feed, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


@pytest.fixture
def usb(tmp_path: Path) -> Iterator[Socat]:
    adapter = Socat(tmp_path)
    adapter.plug()
    yield adapter
    adapter.unplug()


def test_an_unplugged_sensor_is_unavailable_and_resumes_when_plugged_back(usb: Socat) -> None:
    rec = Recorder()
    driver = make("serial.kv", str(usb.gw), {"t": {"entity": "t"}}, retry_min_s=0.05, retry_max_s=0.2)
    fds_before = open_fds()
    driver.start(make_context(rec))
    usb.send(b"t=20\n")
    rec.wait_for(lambda: rec.values(entity="t") == [20.0])

    usb.unplug()
    rec.wait_for(lambda: rec.values(Kind.AVAILABILITY, "t") == [False])

    usb.plug()
    deadline = time.monotonic() + 5
    while not rec.values(entity="t")[1:]:
        usb.send(b"t=21\n")  # the driver may still be between retries: send until it is back
        assert time.monotonic() < deadline, rec.events
        time.sleep(0.05)
    assert rec.values(Kind.AVAILABILITY, "t") == [False, True]
    assert driver.link is not None and driver.link.opens == 2
    driver.stop()
    assert open_fds() <= fds_before


def test_a_serial_driver_reports_its_counters(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = make("serial.kv", path, {"t": {"entity": "t", "conditioning": [{"step": "range", "max": 50}]}})
    driver.start(make_context(rec))
    os.write(master, b"t=99\nbad\nt=20\n")
    rec.wait_for(lambda: rec.values(entity="t") == [20.0])
    assert driver.stats() == {
        "records": 2, "malformed": 1, "bad_checksum": 0, "discarded_bytes": 0,
        "port_opens": 1, "port_failures": 0, "dropped": 1,
    }
    driver.stop()
