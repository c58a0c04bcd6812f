"""The key=value serial driver over a real pseudo-terminal."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core.events import Kind
from drivers.serial_line import KeyValueSensor, parse_kv_line
from tests.drivers_kit import Recorder, make_context, pty_pair


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    with pty_pair() as pair:
        yield pair


def sensor(port: str) -> KeyValueSensor:
    cfg = {
        "id": "climate", "driver": "serial.kv", "port": port,
        "fields": {
            "t": {"entity": "temperature", "unit": "°C"},
            "h": {"entity": "humidity", "unit": "%", "scale": 0.1},
        },
    }
    return KeyValueSensor(KeyValueSensor.Config.model_validate(cfg))


def test_a_line_becomes_one_reading_per_mapped_field(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = sensor(path)
    driver.start(make_context(rec))
    os.write(master, b"t=21.5 h=480 x=1\n")
    rec.wait_for(lambda: len(rec.of(Kind.READING)) == 2)
    assert rec.values(entity="temperature") == [21.5]
    assert rec.values(entity="humidity") == [48.0]
    driver.stop()


def test_a_malformed_line_is_counted_not_a_crash(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = sensor(path)
    driver.start(make_context(rec))
    os.write(master, b"t=oops\n\xff\xfe\nt=20\n")
    rec.wait_for(lambda: rec.values(entity="temperature") == [20.0])
    assert driver.malformed == 2
    driver.stop()


def test_a_vanished_port_makes_its_entities_unavailable(pty: tuple[int, str]) -> None:
    master, path = pty
    rec = Recorder()
    driver = sensor(path)
    driver.start(make_context(rec))
    os.close(master)
    rec.wait_for(lambda: len(rec.of(Kind.AVAILABILITY)) == 2)
    assert all(e.value is False for e in rec.of(Kind.AVAILABILITY))
    driver.stop()


@pytest.mark.parametrize("line", ["", "t", "=1", "t=nan", "t=inf", "t=1 x"])
def test_kv_parser_refuses_malformed_lines(line: str) -> None:
    with pytest.raises(ValueError):
        parse_kv_line(line)


def test_kv_parser_accepts_commas_and_semicolons() -> None:
    assert parse_kv_line("a=1,b=2;c=-3.5\r\n") == {"a": 1.0, "b": 2.0, "c": -3.5}
