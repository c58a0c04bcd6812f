"""I2C sensors against the datasheets' own numbers and against register-level twins on a fake bus.

The compensation maths is pinned to the datasheets' worked examples (Bosch BMP280 §3.12, whose T/P maths
the BME280 shares; Sensirion's CRC example; ROHM's BH1750 example; TI's ADS1115 code table), never to
the implementation itself. The drivers then run against :mod:`drivers.sim.i2c`, in virtual time.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.clock import VirtualClock
from core.events import Kind
from drivers import bosch
from drivers.base import DriverContext
from drivers.i2c import BUSES, BusRegistry, CrcError, crc8
from drivers.i2c_sensors import (
    I2cSensor,
    ads_config_word,
    ads_volts,
    bh1750_lux,
    sensirion_words,
    sht3x_humidity,
    sht4x_humidity,
    sht_temperature,
)
from drivers.registry import DRIVERS
from drivers.sim.i2c import Ads1115Chip, Bh1750Chip, Bme280Chip, FakeI2cBus, I2cTwin, ShtChip
from drivers.timing import VirtualScheduler
from gateway.config import ConfigError, load_config
from tests.drivers_kit import Recorder, make_context
from tests.helpers import write_config

DATASHEET = bosch.Calibration(27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
"""BMP280 datasheet §3.12: the calibration of the worked example."""
ADC_T, ADC_P = 519888, 415148

_names = itertools.count()


@pytest.fixture
def sched() -> VirtualScheduler:
    return VirtualScheduler(VirtualClock())


@pytest.fixture
def fake() -> Iterator[tuple[FakeI2cBus, str]]:
    """A fake bus attached to the process's registry under a name of its own."""
    bus = FakeI2cBus()
    name = f"test-i2c-{next(_names)}"
    BUSES.attach(name, bus)
    yield bus, name
    BUSES.detach(name)


def context(rec: Recorder, sched: VirtualScheduler, name: str) -> DriverContext:
    ctx = make_context(rec, scheduler=sched)
    ctx.resolve_path = lambda p: name if p == "/dev/i2c-1" else p
    return ctx


def build(driver: str, **fields: Any) -> I2cSensor:
    cls = DRIVERS[driver]
    sensor = cls(cls.Config.model_validate({"id": "room", "driver": driver, "poll_s": 10, **fields}))
    assert isinstance(sensor, I2cSensor)
    return sensor


def running(driver: str, fake: tuple[FakeI2cBus, str], sched: VirtualScheduler, rec: Recorder,
            **fields: Any) -> I2cSensor:
    sensor = build(driver, **fields)
    sensor.start(context(rec, sched, fake[1]))
    return sensor


# -- the datasheets' numbers ---------------------------------------------------------------------

def test_bosch_integer_compensation_gives_the_datasheets_worked_example() -> None:
    t_fine = bosch.t_fine_int(ADC_T, DATASHEET)
    assert t_fine == 128422
    assert bosch.temperature_int(t_fine) == 2508  # 25.08 °C
    # the datasheet: 100653.27 Pa, "the integer result may deviate slightly"
    assert bosch.pressure_int64(ADC_P, t_fine, DATASHEET) / 256 == pytest.approx(100653.27, abs=0.05)


def test_bosch_float_compensation_gives_the_datasheets_worked_example() -> None:
    t_fine = bosch.t_fine_float(ADC_T, DATASHEET)
    assert t_fine / 5120 == pytest.approx(25.08, abs=0.005)
    assert bosch.pressure_float(ADC_P, t_fine, DATASHEET) == pytest.approx(100653.27, abs=0.01)


@pytest.mark.parametrize("adc_h", [20000, 27000, 33000, 40000])
@pytest.mark.parametrize("adc_t", [420000, 519888, 560000])
def test_bosch_integer_humidity_agrees_with_the_datasheets_float_formula(adc_t: int, adc_h: int) -> None:
    """Bosch publishes no humidity example: the two formulas of the datasheet check each other."""
    cal = bosch.Calibration(27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
                            H1=75, H2=362, H3=0, H4=313, H5=50, H6=30)
    as_int = bosch.humidity_int(adc_h, bosch.t_fine_int(adc_t, cal), cal) / 1024
    as_float = bosch.humidity_float(adc_h, bosch.t_fine_float(adc_t, cal), cal)
    assert as_int == pytest.approx(as_float, abs=0.01)


def test_the_bme280_calibration_nvm_is_unpacked_as_the_datasheet_lays_it_out() -> None:
    tp = bytes([0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC]) + bytes(18) + bytes([0x00, 0x4B])  # T1 27504 T2 26435 T3 -1000
    h = bytes([0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1E])  # H2 362, H3 0, E4/E5/E6 pack H4 and H5, H6 30
    cal = bosch.Calibration.parse(tp, h)
    assert (cal.T1, cal.T2, cal.T3, cal.H1) == (27504, 26435, -1000, 75)
    assert (cal.H2, cal.H3, cal.H4, cal.H5, cal.H6) == (362, 0, 0x13 * 16 + 0x9, 0x03 * 16 + 0x2, 30)


def test_sensirions_crc_gives_the_datasheets_example() -> None:
    assert crc8(b"\xbe\xef") == 0x92


def test_a_sensirion_word_with_a_wrong_crc_is_refused() -> None:
    with pytest.raises(CrcError):
        sensirion_words([0xBE, 0xEF, 0x93, 0x00, 0x00, crc8(b"\x00\x00")], 2)
    assert sensirion_words([0xBE, 0xEF, 0x92, 0x00, 0x00, crc8(b"\x00\x00")], 2) == [0xBEEF, 0]


@settings(max_examples=200)
@given(st.binary(min_size=6, max_size=6))
def test_any_six_bytes_from_a_sensirion_chip_give_two_words_or_a_crc_error(data: bytes) -> None:
    try:
        words = sensirion_words(list(data), 2)
    except CrcError:
        return
    assert all(0 <= w <= 0xFFFF for w in words)


@settings(max_examples=200)
@given(st.integers(0, 0xFFFFF), st.integers(0, 0xFFFFF), st.integers(0, 0xFFFF))
def test_any_raw_bosch_reading_compensates_to_numbers_humidity_within_0_to_100(adc_t: int, adc_p: int,
                                                                                adc_h: int) -> None:
    cal = bosch.Calibration(27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
                            H1=75, H2=362, H3=0, H4=313, H5=50, H6=30)
    out = bosch.compensate(adc_t, adc_p, adc_h, cal)
    assert out.humidity is not None and 0 <= out.humidity <= 100


def test_sensirion_conversions_span_the_datasheets_ranges() -> None:
    assert (sht_temperature(0), sht_temperature(0xFFFF)) == (-45, 130)
    assert (sht3x_humidity(0), sht3x_humidity(0xFFFF)) == (0, 100)
    assert (sht4x_humidity(0), sht4x_humidity(0xFFFF)) == (0, 100)  # -6 and 119 cropped


def test_the_bh1750_gives_the_datasheets_example() -> None:
    assert round(bh1750_lux(0b1000_0011_1001_0000)) == 28067  # "= 28067 [lx]"


def test_the_ads1115_config_word_and_codes_follow_the_datasheet() -> None:
    assert ads_config_word("A0", 4.096, 128) == 0xC383
    assert ads_volts(0x7FFF, 2.048) == pytest.approx(2.048 * 32767 / 32768)
    assert ads_volts(0x0001, 2.048) == pytest.approx(2.048 / 32768)
    assert ads_volts(0x8000, 2.048) == -2.048
    assert ads_volts(0xFFFF, 2.048) == pytest.approx(-2.048 / 32768)


# -- the drivers against the twins -------------------------------------------------------------

def test_a_bme280_reports_the_temperature_humidity_and_pressure_the_chip_measures(
        fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[0x76] = Bme280Chip(temperature=21.5, pressure=1013.25, humidity=45.0)
    rec = Recorder()
    sensor = running("i2c.bme280", fake, sched, rec)
    sched.advance(0)
    assert rec.values(entity="room_temperature") == [pytest.approx(21.5, abs=0.01)]
    assert rec.values(entity="room_humidity") == [pytest.approx(45.0, abs=0.01)]
    assert rec.values(entity="room_pressure") == [pytest.approx(1013.25, abs=0.01)]
    sensor.stop()


def test_a_bmp280_has_no_humidity(fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[0x77] = Bme280Chip(temperature=-5.0, pressure=980.0, humidity=None)
    rec = Recorder()
    sensor = running("i2c.bmp280", fake, sched, rec, address=0x77)
    sched.advance(0)
    assert [s.id for s in sensor.entities()] == ["room_temperature", "room_pressure"]
    assert rec.values(entity="room_temperature") == [pytest.approx(-5.0, abs=0.01)]
    assert rec.values(entity="room_pressure") == [pytest.approx(980.0, abs=0.01)]
    sensor.stop()


@pytest.mark.parametrize(("driver", "address"), [("i2c.sht3x", 0x45), ("i2c.sht4x", 0x44)])
def test_a_sensirion_sensor_reports_temperature_and_humidity(
        driver: str, address: int, fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[address] = ShtChip(temperature=23.4, humidity=61.2, kind=driver.removeprefix("i2c."))
    rec = Recorder()
    sensor = running(driver, fake, sched, rec, address=address)
    sched.advance(0)
    assert rec.values(entity="room_temperature") == [pytest.approx(23.4, abs=0.01)]
    assert rec.values(entity="room_humidity") == [pytest.approx(61.2, abs=0.01)]
    sensor.stop()


def test_a_bh1750_reports_lux(fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[0x23] = Bh1750Chip(lux=512.0)
    rec = Recorder()
    sensor = running("i2c.bh1750", fake, sched, rec)
    sched.advance(0)
    assert rec.values(entity="room") == [pytest.approx(512.0, abs=1)]
    sensor.stop()


def test_each_ads1115_channel_is_an_entity_scaled_to_its_unit(fake: tuple[FakeI2cBus, str],
                                                              sched: VirtualScheduler) -> None:
    fake[0].chips[0x48] = Ads1115Chip((1.5, 0.5, 0.0, 3.3))
    rec = Recorder()
    sensor = running("i2c.ads1115", fake, sched, rec, channels=[
        {"id": "supply", "input": "A3"},
        {"id": "tank", "input": "A0", "full_scale": 2.048, "scale": 40, "offset": -20, "unit": "%"},
        {"id": "shunt", "input": "A0-A1", "full_scale": 1.024},
    ])
    sched.advance(0)
    assert [(s.id, s.unit, s.device_class) for s in sensor.entities()] == [
        ("supply", "V", "voltage"), ("tank", "%", None), ("shunt", "V", "voltage")]
    assert rec.values(entity="supply") == [pytest.approx(3.3, abs=0.001)]
    assert rec.values(entity="tank") == [pytest.approx(40.0, abs=0.01)]
    assert rec.values(entity="shunt") == [pytest.approx(1.0, abs=0.001)]
    sensor.stop()


def test_a_crc_mismatch_drops_the_reading_counts_it_logs_once_and_soft_resets_the_sensor(
        fake: tuple[FakeI2cBus, str], sched: VirtualScheduler, caplog: pytest.LogCaptureFixture) -> None:
    chip = fake[0].chips[0x44] = ShtChip(temperature=20.0, humidity=50.0)
    chip.corrupt_crc = 2
    rec = Recorder()
    sensor = running("i2c.sht3x", fake, sched, rec)
    with caplog.at_level(logging.WARNING, logger="drivers.i2c_sensors"):
        sched.advance(0)
        sched.advance(10)
    assert rec.values(entity="room_humidity") == []
    assert sensor.stats()["crc_errors"] == 2
    assert len([r for r in caplog.records if "CRC mismatch" in r.message]) == 1
    resets = chip.soft_resets
    sched.advance(10)
    assert rec.values(entity="room_humidity") == [pytest.approx(50.0, abs=0.01)]
    assert chip.soft_resets == resets + 1
    sensor.stop()


def test_a_chip_that_does_not_answer_makes_its_entities_unavailable_until_it_answers_again(
        fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[0x76] = Bme280Chip(temperature=20.0)
    rec = Recorder()
    sensor = running("i2c.bme280", fake, sched, rec)
    sched.advance(0)
    fake[0].nack(0x76, times=1)
    sched.advance(10)
    assert rec.values(Kind.AVAILABILITY, "room_pressure") == [False]
    assert sensor.stats()["read_errors"] == 1
    assert "degraded" in sensor.health_notes()[0] and "Remote I/O error" in sensor.health_notes()[0]
    sched.advance(10)
    assert rec.values(Kind.AVAILABILITY, "room_pressure") == [False, True]
    assert sensor.health_notes() == []
    sensor.stop()


def test_a_chip_silent_for_five_polls_asks_the_supervisor_for_a_restart_once(
        fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    rec = Recorder()
    sensor = build("i2c.bh1750")
    ctx = context(rec, sched, fake[1])
    failures: list[str] = []
    ctx.fail = failures.append
    sensor.start(ctx)  # nothing at 0x23
    sched.advance(0)
    for _ in range(6):
        sched.advance(10)
    assert len(failures) == 1 and "5 I2C reads failed in a row" in failures[0]
    sensor.stop()


def test_a_bme280_that_reset_has_its_calibration_read_again(fake: tuple[FakeI2cBus, str],
                                                            sched: VirtualScheduler) -> None:
    chip = fake[0].chips[0x76] = Bme280Chip(temperature=20.0)
    rec = Recorder()
    sensor = running("i2c.bme280", fake, sched, rec)
    sched.advance(0)
    chip.reset()
    chip.temperature = 22.0
    sched.advance(10)
    assert sensor.stats()["resets"] == 1
    assert rec.values(entity="room_temperature") == [pytest.approx(20.0, abs=0.01), pytest.approx(22.0, abs=0.01)]
    sensor.stop()


def test_a_different_chip_at_the_address_is_refused(fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[0x76] = Bme280Chip(humidity=None)  # a BMP280 where a BME280 is configured
    rec = Recorder()
    sensor = running("i2c.bme280", fake, sched, rec)
    sched.advance(0)
    assert rec.values(entity="room_temperature") == []
    assert "chip id 0x58" in sensor.health_notes()[0]
    sensor.stop()


def test_an_implausible_reading_is_dropped_and_counted(fake: tuple[FakeI2cBus, str], sched: VirtualScheduler) -> None:
    fake[0].chips[0x76] = Bme280Chip(temperature=120.0)  # beyond the BME280's -40..85 °C
    rec = Recorder()
    sensor = running("i2c.bme280", fake, sched, rec)
    sched.advance(0)
    assert rec.values(entity="room_temperature") == []
    assert sensor.stats()["implausible"] == 1
    sensor.stop()


# -- one bus owner -------------------------------------------------------------------------------

def test_drivers_on_one_bus_share_one_handle_opened_once_and_closed_after_the_last() -> None:
    opened: list[FakeI2cBus] = []

    def opener(path: str) -> FakeI2cBus:
        opened.append(FakeI2cBus())
        return opened[-1]

    registry = BusRegistry(opener)
    first, second = registry.acquire("/dev/i2c-1"), registry.acquire("/dev/i2c-1")
    assert first is second and len(opened) == 1
    registry.release(first)
    assert not opened[0].closed
    registry.release(second)
    assert opened[0].closed


def test_a_second_driver_waits_for_the_whole_transaction_of_the_first(fake: tuple[FakeI2cBus, str],
                                                                      sched: VirtualScheduler) -> None:
    bus, name = fake
    bus.chips[0x44] = ShtChip()
    bus.log = []
    rec = Recorder()
    sensor = running("i2c.sht3x", fake, sched, rec)
    other = BUSES.acquire(name)
    with other.transaction() as dev:  # another driver's measurement is under way
        assert dev is bus
        reader = threading.Thread(target=sensor.read)
        reader.start()
        reader.join(timeout=0.2)
        assert reader.is_alive() and bus.log == []
    reader.join(timeout=5)
    assert not reader.is_alive() and bus.log
    BUSES.release(other)
    sensor.stop()


# -- config -----------------------------------------------------------------------------------

HEADER = '[gateway]\nid = "gw"\nstate_dir = "state"\n\n'


def chip(ident: str, driver: str, extra: str = "") -> str:
    return f'[[devices]]\nid = "{ident}"\ndriver = "{driver}"\n{extra}'


def test_an_address_the_chip_cannot_have_is_refused_with_the_ones_it_can() -> None:
    with pytest.raises(ValidationError, match=r"0x44 is not an address this chip answers on: 0x76 or 0x77 \(SDO"):
        build("i2c.bme280", address=0x44)


def test_two_sensors_at_one_bus_and_address_are_refused_at_the_second(tmp_path: Path) -> None:
    path = write_config(tmp_path, HEADER + chip("a", "i2c.sht3x") + chip("b", "i2c.sht4x", "address = 0x44\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f"{path}: devices[1] (b).address: I2C bus 1 address 0x44 is already used by devices[0] (a): two chips on "
        "one address answer together; move one with its address pin or jumper, or put it on another bus (got 68)"]


def test_one_address_on_two_buses_is_accepted(tmp_path: Path) -> None:
    load_config(write_config(tmp_path, HEADER + chip("a", "i2c.sht3x") + chip("b", "i2c.sht4x", "bus = 3\n")))


def test_a_relay_on_the_i2c_pins_beside_an_i2c_sensor_is_refused(tmp_path: Path) -> None:
    relay = '[[devices]]\nid = "fan"\ndriver = "gpio.relay"\npin = 3\n'
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, HEADER + chip("a", "i2c.bh1750") + relay))
    assert "GPIO3 is I2C1's SCL pin, which devices[0] (a) needs" in caught.value.problems[0]


# -- the twin in --simulate ------------------------------------------------------------------

def test_the_twin_puts_its_chip_on_a_fake_bus_the_driver_opens_through_the_context(sched: VirtualScheduler) -> None:
    from drivers.base import SimWorld
    from drivers.mockpins import sim_pin_factory

    sensor = build("i2c.bme280")
    world = SimWorld(sim_pin_factory(), __import__("random").Random(1), lambda entity: None)
    twin = I2cTwin(sensor.config)
    twin.start(world)
    try:
        rec = Recorder()
        ctx = make_context(rec, scheduler=sched)
        ctx.resolve_path = lambda p: world.files.get(p, p)
        sensor.start(ctx)
        sched.advance(0)
        assert rec.values(entity="room_temperature") == [pytest.approx(20.0, abs=0.5)]
        sensor.stop()
    finally:
        twin.stop()
    assert "/dev/i2c-1" in world.files and BUSES.attached(world.files["/dev/i2c-1"]) is None


# -- Home Assistant --------------------------------------------------------------------------

@pytest.mark.parametrize(("driver", "entity", "device_class", "unit"), [
    ("i2c.bme280", "room_temperature", "temperature", "°C"),
    ("i2c.bme280", "room_humidity", "humidity", "%"),
    ("i2c.bme280", "room_pressure", "pressure", "hPa"),
    ("i2c.sht4x", "room_humidity", "humidity", "%"),
    ("i2c.bh1750", "room", "illuminance", "lx"),
])
def test_each_i2c_entity_is_announced_with_its_device_class_unit_and_state_class(
        tmp_path: Path, driver: str, entity: str, device_class: str, unit: str) -> None:
    from gateway.mqtt.discovery import Discovery
    from gateway.mqtt.topics import Topics

    discovery = Discovery(Topics("gateway/gw"), "gw", None, "1", tmp_path / "memory.json")
    [spec] = [s for s in build(driver).entities() if s.id == entity]
    config = discovery.entity_config(spec)
    assert (config["device_class"], config["unit_of_measurement"], config["state_class"]) == (
        device_class, unit, "measurement")
