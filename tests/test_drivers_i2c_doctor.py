"""``gateway check --hardware`` probes each I2C chip at its address, as ``i2cdetect`` does."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.sim.i2c import Bme280Chip, FakeI2cBus
from gateway.doctor import Machine, Report, examine
from tests.test_doctor import config, fake_board

BME280 = '[[devices]]\nid = "climate"\ndriver = "i2c.bme280"\n'


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def machine(root: Path, port: int, bus: FakeI2cBus, probed: list[str]) -> Machine:
    def probe(path: str, address: int) -> None:
        probed.append(path)
        bus.write_quick(address)

    return Machine(root=root, clock_synchronised=lambda: True, euid=lambda: 0, probe_i2c=probe,
                   connect=lambda host, _port, timeout: socket.create_connection((host, port), timeout).close())


def about(report: Report, level: str) -> list[str]:
    return [f"{f.text} | {f.fix}" for f in report.findings if f.level == level and "0x76" in f.text]


def test_a_chip_that_answers_at_its_address_is_well(tmp_path: Path, listening: int) -> None:
    bus, probed = FakeI2cBus(), list[str]()
    bus.chips[0x76] = Bme280Chip()
    root = fake_board(tmp_path, {"/dev/i2c-1": ""})
    report = examine(config(tmp_path, BME280), machine(root, listening, bus, probed))
    assert about(report, "ok") == ["devices[0] (climate): 0x76 on /dev/i2c-1: a chip answers | None"]
    assert probed == [str(root / "dev/i2c-1")]


def test_nothing_at_the_address_is_a_problem_with_the_wiring_and_i2cdetect(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {"/dev/i2c-1": ""})
    report = examine(config(tmp_path, BME280), machine(root, listening, FakeI2cBus(), []))
    [problem] = about(report, "problem")
    assert problem.startswith("devices[0] (climate): 0x76 on /dev/i2c-1: no chip answers (Remote I/O error) | ")
    assert "`i2cdetect -y 1`" in problem and "SDO to 3.3 V: 0x77" in problem


def test_no_probe_when_the_bus_is_off(tmp_path: Path, listening: int) -> None:
    probed: list[str] = []
    report = examine(config(tmp_path, BME280), machine(fake_board(tmp_path), listening, FakeI2cBus(), probed))
    assert probed == []
    assert any("/dev/i2c-1 is missing: I2C1 is off" in f.text for f in report.problems)
