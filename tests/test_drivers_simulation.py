"""Simulated twins: seeded, deterministic, protocol-correct bytes through the real parsers."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.clock import VirtualClock
from core.events import Kind, Value
from drivers.analog import AnalogInput
from drivers.base import Driver, SimWorld
from drivers.mockpins import sim_pin_factory
from drivers.onewire import Ds18b20
from drivers.registry import driver_class
from drivers.serial_line import SerialSensor
from drivers.sim.base import PtyTwin, ThermalModel
from drivers.sim.gpio import PulseSimulator
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context


def world(state: dict[str, Value] | None = None, seed: int = 7) -> SimWorld:
    house = state or {}
    return SimWorld(sim_pin_factory(), random.Random(seed), house.get)


def make(driver: str, **cfg: Any) -> Driver:
    cls = driver_class(driver)
    return cls(cls.Config.model_validate({"id": "dev", "driver": driver, **cfg}))


def test_a_heated_room_warms_and_an_unheated_one_cools() -> None:
    warm, cold = ThermalModel(temperature=18.0, noise=0), ThermalModel(temperature=18.0, noise=0)
    for _ in range(60):
        warm.step(60, True, random.gauss)
        cold.step(60, False, random.gauss)
    assert warm.temperature > 20.0
    assert cold.temperature < 18.0


SERIAL_CASES = [
    ("serial.kv", {"temp": {"entity": "t"}}, "t"),
    ("serial.json", {"env.temp": {"entity": "t"}}, "t"),
    ("serial.nmea", {"latitude": {"entity": "lat"}}, "lat"),
    ("serial.pms5003", {"pm2_5": {"entity": "pm"}}, "pm"),
]


@pytest.mark.parametrize(("driver", "fields", "entity"), SERIAL_CASES)
def test_a_serial_twin_gives_readings_through_the_real_parser(
    driver: str, fields: dict[str, Any], entity: str
) -> None:
    sensor = make(driver, port="/dev/ttyUSB0", fields=fields, report_interval=0.02)
    assert isinstance(sensor, SerialSensor)
    twin = sensor.simulator()
    assert isinstance(twin, PtyTwin)
    twin.interval = 0.02
    sim_world = world()
    twin.start(sim_world)
    rec = Recorder()
    ctx = make_context(rec)
    opener = ctx.open_serial
    assert opener is not None
    ctx.open_serial = lambda url, **kw: opener(sim_world.serial_ports.get(url, url), **kw)
    sensor.start(ctx)
    try:
        rec.wait_for(lambda: len(rec.of(Kind.READING, entity)) >= 3)
    finally:
        sensor.stop()
        twin.stop()


def test_the_co2_twin_answers_the_drivers_polls() -> None:
    sensor = make("serial.mhz19", port="/dev/ttyS0", fields={"co2": {"entity": "co2"}}, poll_s=5)
    assert isinstance(sensor, SerialSensor)
    twin = sensor.simulator()
    assert twin is not None
    sim_world = world()
    twin.start(sim_world)
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    ctx = make_context(rec, scheduler=sched)
    opener = ctx.open_serial
    assert opener is not None
    ctx.open_serial = lambda url, **kw: opener(sim_world.serial_ports.get(url, url), **kw)
    sensor.start(ctx)
    try:
        for n in range(1, 4):
            sched.advance(5)

            def answered(n: int = n) -> bool:  # readings or malformed frames: one per poll
                return len(rec.of(Kind.READING)) + sensor.malformed >= n

            rec.wait_for(answered)
        assert all(400 <= float(v) <= 4000 for v in rec.values(entity="co2"))  # type: ignore[arg-type]
    finally:
        sensor.stop()
        twin.stop()


def produced(driver: str, fields: dict[str, Any], seed: int) -> list[bytes]:
    twin = make(driver, port="p", fields=fields).simulator()
    assert isinstance(twin, PtyTwin)
    twin.rng = random.Random(seed)
    w = world(seed=seed)
    return [twin.produce(w, 1.0) for _ in range(50)]


@pytest.mark.parametrize(("driver", "fields", "entity"), SERIAL_CASES)
def test_a_serial_twin_is_deterministic_for_a_seed(driver: str, fields: dict[str, Any], entity: str) -> None:
    assert produced(driver, fields, 1) == produced(driver, fields, 1)
    assert produced(driver, fields, 1) != produced(driver, fields, 2)


def test_a_serial_twin_sends_the_odd_corrupted_frame_which_is_counted_not_read() -> None:
    frames = b"".join(produced("serial.pms5003", {"pm2_5": {"entity": "pm"}}, seed=3) * 4)
    parser = make("serial.pms5003", port="p", fields={"pm2_5": {"entity": "pm"}})
    assert isinstance(parser, SerialSensor)
    records = parser.parser.feed(frames)
    assert parser.parser.counters.bad_checksum + parser.parser.counters.malformed > 0
    assert len(records) > 150


def test_a_temperature_twin_follows_the_heater() -> None:
    house: dict[str, Value] = {"boiler": True}
    sensor = make("serial.kv", port="p", fields={"temp": {"entity": "t"}}, sim_heater="boiler")
    twin = sensor.simulator()
    assert isinstance(twin, PtyTwin)
    w = world(house)
    temps = [float(twin.produce(w, 300).split(b"=")[1]) for _ in range(12)]
    assert temps[-1] > temps[0] + 1


@pytest.fixture
def sched() -> Iterator[VirtualScheduler]:
    yield VirtualScheduler(VirtualClock())


def test_the_adc_twin_plays_the_chip_for_the_real_driver(sched: VirtualScheduler) -> None:
    driver = make("analog.mcp3008", channel=1, max_value=100)
    assert isinstance(driver, AnalogInput)
    twin = driver.simulator()
    assert twin is not None
    w = world()
    twin.start(w)
    rec = Recorder()
    driver.start(make_context(rec, factory=w.pin_factory, scheduler=sched))
    sched.advance(0)
    assert rec.values(entity="dev") == [pytest.approx(50, abs=1)]
    driver.stop()
    twin.stop()


def test_the_ds18b20_twin_writes_a_fake_tree_the_driver_reads(sched: VirtualScheduler) -> None:
    driver = make("onewire.ds18b20", poll_s=5)
    assert isinstance(driver, Ds18b20)
    twin = driver.simulator()
    assert twin is not None
    w = world()
    twin.start(w)
    rec = Recorder()
    ctx = make_context(rec, scheduler=sched)
    ctx.resolve_path = lambda p: w.files.get(p, p)
    driver.start(ctx)
    sched.advance(0)
    assert rec.values(entity="dev") and Path(w.files["/sys/bus/w1/devices"]).is_dir()
    driver.stop()
    twin.stop()
    assert not Path(w.files["/sys/bus/w1/devices"]).exists()


def test_a_door_twin_opens_and_closes_the_contact_now_and_then() -> None:
    w = world()
    twin = PulseSimulator(27, rests_high=True, mean_interval=0.005, mean_hold=0.005)
    rec = Recorder()
    door = make("gpio.input", pin=27, pull_up=True)
    door.start(make_context(rec, factory=w.pin_factory))
    twin.start(w)
    try:
        rec.wait_for(lambda: True in rec.values() and rec.values()[-1] is False)
    finally:
        twin.stop()
        door.stop()


def test_every_driver_that_has_a_twin_finds_it_in_the_sim_package_and_keeps_none_of_its_own() -> None:
    import importlib
    import inspect

    from drivers.base import Simulator
    from drivers.registry import DRIVERS

    for name, cls in sorted(DRIVERS.items()):
        module = importlib.import_module(cls.__module__)
        own = [n for n, member in vars(module).items()
               if inspect.isclass(member) and issubclass(member, Simulator) and member.__module__ == module.__name__]
        assert own == [], f"{name}: simulators in the production module {module.__name__}: {own}"
