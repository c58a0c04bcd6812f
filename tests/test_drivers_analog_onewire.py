"""MCP3008/MCP3208 over mock SPI pins, and DS18B20 over a fake sysfs tree, both in virtual time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from core.clock import SystemClock, VirtualClock
from core.events import EventFactory, Kind
from drivers.analog import AnalogConfig, AnalogInput, Mcp3208Input
from drivers.base import DriverContext
from drivers.mockpins import sim_pin_factory
from drivers.onewire import Ds18b20, Ds18b20Config, ReadError, parse_w1_slave
from drivers.sim.analog import McpEmulator
from drivers.sim.onewire import write_w1_slave
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context

SENSOR = "28-0316a2795aff"


@pytest.fixture
def sched() -> VirtualScheduler:
    return VirtualScheduler(VirtualClock())


def adc(cls: type[AnalogInput] = AnalogInput, **overrides: Any) -> AnalogInput:
    driver = "analog.mcp3208" if cls is Mcp3208Input else "analog.mcp3008"
    cfg = {"id": "level", "driver": driver, "channel": 3, "min_value": 0, "max_value": 100, "unit": "%",
           "poll_s": 1, **overrides}
    config = cls.Config.model_validate(cfg)
    assert isinstance(config, AnalogConfig)
    return cls(config)


@pytest.mark.parametrize(("cls", "bits"), [(AnalogInput, 10), (Mcp3208Input, 12)])
def test_an_adc_reading_is_scaled_to_the_unit(cls: type[AnalogInput], bits: int, sched: VirtualScheduler) -> None:
    factory = sim_pin_factory()
    chip = McpEmulator(factory, bits=bits)
    chip.set(3, 3.3 * 0.25)
    rec = Recorder()
    driver = adc(cls)
    driver.start(make_context(rec, factory=factory, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    [value] = rec.values(entity="level")
    assert value == pytest.approx(25.0, abs=0.1)
    assert rec.of(Kind.READING)[0].unit == "%"
    driver.stop()
    chip.close()


def test_an_adc_is_polled_on_its_rate_and_reports_only_moves_past_the_deadband(sched: VirtualScheduler) -> None:
    factory = sim_pin_factory()
    chip = McpEmulator(factory)
    chip.set(3, 1.0)
    rec = Recorder()
    driver = adc(poll_s=2, conditioning=[{"step": "deadband", "delta": 5}])
    driver.start(make_context(rec, factory=factory, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    sched.advance(4)
    chip.set(3, 2.0)
    sched.advance(2)
    assert [round(v) for v in rec.values(entity="level")] == [30, 61]  # type: ignore[call-overload]
    driver.stop()
    chip.close()


def test_adc_config_with_equal_ends_is_refused() -> None:
    with pytest.raises(ValidationError, match="min_value and max_value are equal"):
        adc(min_value=5, max_value=5)


# -- DS18B20 -------------------------------------------------------------------------------------


def ds18b20(tmp_path: Path, **overrides: Any) -> Ds18b20:
    cfg = {"id": "flow", "driver": "onewire.ds18b20", "base_path": str(tmp_path), "poll_s": 10, **overrides}
    return Ds18b20(Ds18b20Config.model_validate(cfg))


def test_a_ds18b20_reading_becomes_degrees(tmp_path: Path, sched: VirtualScheduler) -> None:
    write_w1_slave(tmp_path / SENSOR, 23.125)
    rec = Recorder()
    driver = ds18b20(tmp_path, sensor=SENSOR)
    driver.start(make_context(rec, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    assert rec.values(entity="flow") == [23.125]
    driver.stop()


def test_the_only_sensor_on_the_bus_is_found_without_naming_it(tmp_path: Path, sched: VirtualScheduler) -> None:
    write_w1_slave(tmp_path / SENSOR, 19.5)
    rec = Recorder()
    driver = ds18b20(tmp_path)
    driver.start(make_context(rec, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    assert rec.values(entity="flow") == [19.5]
    driver.stop()


def test_a_failed_crc_is_discarded_and_counted(tmp_path: Path, sched: VirtualScheduler) -> None:
    write_w1_slave(tmp_path / SENSOR, 23.0, crc_ok=False)
    rec = Recorder()
    driver = ds18b20(tmp_path)
    driver.start(make_context(rec, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    assert rec.events == []
    assert driver.counters["crc_errors"] == 1
    driver.stop()


def test_the_85_degree_power_on_value_is_discarded_and_counted(tmp_path: Path, sched: VirtualScheduler) -> None:
    write_w1_slave(tmp_path / SENSOR, 85.0)
    rec = Recorder()
    driver = ds18b20(tmp_path)
    driver.start(make_context(rec, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    write_w1_slave(tmp_path / SENSOR, 84.5)
    sched.advance(10)
    assert rec.values(entity="flow") == [84.5]
    assert driver.counters["power_on_values"] == 1
    driver.stop()


def test_a_vanished_sensor_is_unavailable_until_it_reads_again(tmp_path: Path, sched: VirtualScheduler) -> None:
    rec = Recorder()
    driver = ds18b20(tmp_path, sensor=SENSOR)
    driver.start(make_context(rec, scheduler=sched))
    sched.advance(0)  # the first poll is due at start
    write_w1_slave(tmp_path / SENSOR, 20.0)
    sched.advance(10)
    assert [(e.kind, e.value) for e in rec.events] == [
        (Kind.AVAILABILITY, False), (Kind.AVAILABILITY, True), (Kind.READING, 20.0)
    ]
    driver.stop()


def test_the_base_path_is_resolved_through_the_context(tmp_path: Path, sched: VirtualScheduler) -> None:
    write_w1_slave(tmp_path / SENSOR, 21.0)
    rec = Recorder()
    ctx = make_context(rec, scheduler=sched)
    ctx.resolve_path = lambda p: str(tmp_path) if p == "/sys/bus/w1/devices" else p
    driver = Ds18b20(Ds18b20Config.model_validate({"id": "flow", "driver": "onewire.ds18b20"}))
    driver.start(ctx)
    sched.advance(0)  # the first poll is due at start
    assert rec.values(entity="flow") == [21.0]
    driver.stop()


@pytest.mark.parametrize(
    "text",
    ["", "garbage", "72 01 : crc=57 YES\n72 01 t=abc\n", "72 01 : crc=57 YES\n72 01\n", "x\ny\nz\n"],
)
def test_garbled_w1_files_are_refused(text: str) -> None:
    with pytest.raises(ReadError):
        parse_w1_slave(text)


def test_negative_temperatures_are_read() -> None:
    assert parse_w1_slave("ff : crc=1 YES\nff t=-10125\n") == -10.125


def test_a_ds18b20_reads_on_a_thread_of_its_own_and_joins_it_at_stop(tmp_path: Path) -> None:
    write_w1_slave(tmp_path / SENSOR, 22.0)
    rec = Recorder()
    ctx = DriverContext(post=rec, events=EventFactory(SystemClock(), boot="t"))
    driver = ds18b20(tmp_path)
    before = set(threading.enumerate())
    driver.start(ctx)
    rec.wait_for(lambda: rec.values(entity="flow") == [22.0])
    assert "w1-flow" in {t.name for t in threading.enumerate()}
    driver.stop()
    ctx.close()
    assert set(threading.enumerate()) <= before
