"""Modbus RTU lines: the real pymodbus client against an independent RTU slave on a pseudo-terminal.

Polls run on a :class:`~drivers.timing.VirtualScheduler`, so a poll happens on the test's thread
when the test advances virtual time; only the transactions themselves take real time on the pty.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.clock import VirtualClock
from core.entities import Component
from core.events import Kind
from drivers.base import DriverError
from drivers.modbus import ModbusLine, ModbusLineConfig
from drivers.modbus_map import Span, crc16, decode, encode, plan_reads
from drivers.sim.modbus import Memory, RtuSlave
from drivers.timing import VirtualScheduler
from gateway.cli import main
from gateway.mqtt.discovery import Discovery
from gateway.mqtt.topics import Topics
from tests.drivers_kit import Recorder, make_context
from tests.helpers import write_config

HEADER = '[gateway]\nid = "mb"\nstate_dir = "state"\n\n'


# -- the register map, without I/O ----------------------------------------------------------------


def test_a_float32_reads_high_word_first_unless_the_word_order_is_little() -> None:
    assert decode([0x4366, 0x8000], "float32") == 230.5
    assert decode([0x8000, 0x4366], "float32", "little") == 230.5


def test_integer_registers_read_signed_or_unsigned_as_declared() -> None:
    assert decode([0xFFFF], "int16") == -1
    assert decode([0xFFFF], "uint16") == 65535
    assert decode([0x0001, 0x0000], "uint32") == 65536
    assert decode([0x0000, 0x0001], "uint32", "little") == 65536
    assert decode([0xFFFF, 0xFFFE], "int32") == -2


def test_encoding_is_the_inverse_of_decoding_and_refuses_what_does_not_fit() -> None:
    assert encode(-2, "int32", "little") == [0xFFFE, 0xFFFF]
    with pytest.raises(ValueError, match="does not fit"):
        encode(70000, "uint16")


def test_the_crc_is_the_standards_worked_example() -> None:
    # Read 10 holding registers from 0 of slave 1: 01 03 00 00 00 0A, CRC C5 CD on the wire.
    assert crc16(bytes.fromhex("01030000000A")).to_bytes(2, "little") == bytes.fromhex("C5CD")


def test_consecutive_registers_of_one_table_are_read_in_one_request() -> None:
    spans = [Span("input", 0, 2, "v"), Span("input", 2, 2, "a"), Span("input", 6, 2, "w"),
             Span("holding", 2, 1, "h")]
    blocks = plan_reads(spans)
    assert [(b.function, b.address, b.count) for b in blocks] == [("holding", 2, 1), ("input", 0, 4), ("input", 6, 2)]


def test_a_gap_allowance_joins_requests_across_unmapped_registers_within_the_limit() -> None:
    spans = [Span("input", 0, 2, "v"), Span("input", 6, 2, "w"), Span("input", 200, 2, "far")]
    assert [(b.address, b.count) for b in plan_reads(spans, max_gap=4)] == [(0, 8), (200, 2)]
    assert [(b.address, b.count) for b in plan_reads(spans, max_gap=4, max_count=4)] == [(0, 2), (6, 2), (200, 2)]


# -- configuration ----------------------------------------------------------------------------------


def line_config(port: str, slaves: list[dict[str, Any]], **extra: Any) -> ModbusLineConfig:
    return ModbusLineConfig.model_validate(
        {"id": "rs485", "driver": "modbus.rtu", "port": port, "timeout_s": 0.1, "gap_s": 0, "slaves": slaves} | extra)


def test_two_slaves_with_one_id_on_a_line_are_a_located_error_of_gateway_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = HEADER + """
[[devices]]
id = "rs485"
driver = "modbus.rtu"
port = "/dev/ttyUSB0"
slaves = [
  { slave = 1, preset = "sdm120", prefix = "house" },
  { slave = 1, registers = [{ entity = "pv_power", address = 10 }] },
]
"""
    path = write_config(tmp_path, body)
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: devices[0] (rs485).slaves: slaves[1] has id 1, like slaves[0]" in err


MODBUS_ON = """
[[devices]]
id = "rs485"
driver = "modbus.rtu"
port = "{port}"
slaves = [{{ slave = 1, preset = "sdm120", prefix = "house" }}]
"""


def test_a_serial_sensor_and_a_modbus_line_on_one_port_are_a_located_error_of_gateway_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sensor = ('\n[[devices]]\nid = "co2"\ndriver = "serial.mhz19"\nport = "/dev/ttyUSB0"\n'
              'fields.co2 = { entity = "office_co2" }\n')
    path = write_config(tmp_path, HEADER + sensor + MODBUS_ON.format(port="/dev/ttyUSB0"))
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert (f"{path}: devices[1] (rs485).port: '/dev/ttyUSB0' is already used by devices[0] (co2): "
            "one serial port serves one device") in err


def test_two_modbus_lines_on_one_port_are_a_located_error_of_gateway_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = MODBUS_ON.format(port="/dev/ttyUSB0").replace('"rs485"', '"rs485b"').replace('"house"', '"pv"')
    path = write_config(tmp_path, HEADER + MODBUS_ON.format(port="/dev/ttyUSB0") + second)
    assert main(["check", "--config", str(path)]) == 1
    assert f"{path}: devices[1] (rs485b).port: '/dev/ttyUSB0' is already used by devices[0] (rs485)" in (
        capsys.readouterr().err)


def test_a_relay_on_the_uart_pins_beside_a_modbus_line_on_the_pis_uart_is_a_located_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = '\n[[devices]]\nid = "pump"\ndriver = "gpio.relay"\npin = 14\n'
    path = write_config(tmp_path, HEADER + MODBUS_ON.format(port="/dev/serial0") + relay)
    assert main(["check", "--config", str(path)]) == 1
    assert (f"{path}: devices[1] (pump).pin: GPIO14 is UART0's TXD pin, which devices[0] (rs485) needs"
            in capsys.readouterr().err)


def test_overlapping_registers_of_one_slave_are_refused_naming_both() -> None:
    with pytest.raises(ValidationError, match=r"power \(input 12\.\.13\) overlaps power_low \(input 13\.\.13\)"):
        line_config("/dev/null", [{"slave": 1, "registers": [
            {"entity": "power", "address": 12, "function": "input", "type": "float32"},
            {"entity": "power_low", "address": 13, "function": "input"}]}])


def test_a_32_bit_register_running_past_the_last_address_is_refused() -> None:
    with pytest.raises(ValidationError, match="would run past register 65535"):
        line_config("/dev/null", [{"slave": 1, "registers": [{"entity": "x", "address": 65535, "type": "uint32"}]}])


def test_an_output_must_declare_its_safe_state() -> None:
    with pytest.raises(ValidationError, match=r"slaves\.0\.outputs\.0\.safe_state"):
        line_config("/dev/null", [{"slave": 1, "outputs": [{"entity": "boost", "address": 5}]}])


def test_one_entity_on_two_slaves_is_refused() -> None:
    with pytest.raises(ValidationError, match="entity 'x' is already defined by slaves\\[0\\]"):
        line_config("/dev/null", [{"slave": 1, "registers": [{"entity": "x", "address": 1}]},
                                  {"slave": 2, "registers": [{"entity": "x", "address": 1}]}])


def test_the_sdm120_preset_gives_prefixed_entities_and_an_energy_counter_for_the_energy_dashboard(
    tmp_path: Path,
) -> None:
    line = ModbusLine(line_config("/dev/null", [{"slave": 1, "preset": "sdm120", "prefix": "house"}]))
    specs = {s.id: s for s in line.entities()}
    assert sorted(specs) == ["house_current", "house_energy", "house_frequency", "house_power", "house_voltage"]
    discovery = Discovery(Topics("gateway/mb"), "mb", None, "1", tmp_path / "memory.json")
    energy = discovery.entity_config(specs["house_energy"])
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy", "total_increasing", "kWh")
    assert discovery.entity_config(specs["house_power"])["state_class"] == "measurement"


# -- the line against a slave on a pty ------------------------------------------------------------


@pytest.fixture
def slave() -> Iterator[RtuSlave]:
    meter = Memory()
    for address, value in ((0x00, 230.5), (0x06, 2.25), (0x0C, 518.0), (0x46, 50.0), (0x48, 1234.5)):
        meter.put("input", address, encode(value, "float32"))
    pump = Memory(holding={100: encode(-55, "int16")[0], 200: 0, 201: 0})
    rtu = RtuSlave({1: meter, 10: pump})
    yield rtu
    rtu.close()


SLAVES: list[dict[str, Any]] = [
    {"slave": 1, "preset": "sdm120", "prefix": "house", "poll_s": 1},
    {"slave": 10, "poll_s": 1, "registers": [
        {"entity": "flow", "address": 100, "type": "int16", "scale": 0.1, "offset": 1.0, "unit": "°C"}],
     "outputs": [{"entity": "boost", "address": 200, "safe_state": False, "on_value": 3}]},
]


def started(path: str, slaves: list[dict[str, Any]] | None = None) -> tuple[ModbusLine, Recorder, VirtualScheduler]:
    rec = Recorder()
    sched = VirtualScheduler(VirtualClock())
    line = ModbusLine(line_config(path, SLAVES if slaves is None else slaves))
    line.start(make_context(rec, scheduler=sched))
    return line, rec, sched


def test_a_meter_and_a_heat_pump_are_read_scaled_on_their_first_poll(slave: RtuSlave) -> None:
    line, rec, sched = started(slave.open())
    sched.advance(0)
    assert rec.values(entity="house_voltage") == [230.5]
    assert rec.values(entity="house_energy") == [1234.5]
    assert rec.values(entity="flow") == [-4.5]  # -55 * 0.1 + 1.0
    line.stop()


def test_the_sdm120_preset_is_read_in_one_request_per_run_of_consecutive_registers(slave: RtuSlave) -> None:
    line, _, sched = started(slave.open(), [{"slave": 1, "preset": "sdm120", "prefix": "house"}])
    sched.advance(0)
    assert slave.asked[1] == 4  # 0-1, 6-7, 12-13, 70-73 (frequency and energy together)
    line.stop()


def test_a_silent_slave_goes_unavailable_and_backs_off_while_the_other_keeps_its_schedule(slave: RtuSlave) -> None:
    slave.silent.add(10)
    line, rec, sched = started(slave.open())
    sched.advance(0)
    assert rec.values(Kind.AVAILABILITY, "flow") == [False]
    assert rec.values(Kind.AVAILABILITY, "boost")[-1] is False
    sched.advance(30)
    assert slave.asked[1] == 4 * 31  # every second, as configured
    assert slave.asked[10] == 5  # the safe state at start, then polls at 0, 4, 12, 28: a doubling backoff
    assert line.stats()["slaves_offline"] == 1
    assert line.health_notes() == ["slave 10: no answer (5 failed attempts), retried every 32 s"]
    line.stop()


def test_a_slave_that_answers_again_is_read_and_its_outage_logged_once_each_way(
    slave: RtuSlave, caplog: pytest.LogCaptureFixture
) -> None:
    slave.silent.add(10)
    caplog.set_level(logging.INFO, logger="drivers.modbus")
    line, rec, sched = started(slave.open())
    sched.advance(14)
    slave.silent.clear()
    sched.advance(16)
    assert rec.values(Kind.AVAILABILITY, "flow") == [False, True]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and "slave 10" in r.getMessage()]
    assert len([m for m in lines if "no answer" in m]) == 1
    assert [m for m in lines if "answers again" in m] == ["rs485: slave 10 answers again after 4 failed attempts"]
    line.stop()


def test_a_slave_that_answers_again_gets_its_outputs_at_their_safe_value_and_says_so(slave: RtuSlave) -> None:
    slave.silent.add(10)
    line, rec, sched = started(slave.open())
    sched.advance(0)
    slave.silent.clear()
    sched.advance(4)  # the write at start and the poll at 0 failed: asked again at 4
    assert rec.of(Kind.STATE, "boost")[-1].value is False
    assert rec.of(Kind.STATE, "boost")[-1].detail == "slave 10 answers again: safe state"
    line.stop()


def test_an_answer_with_a_bad_crc_is_counted_and_never_read(slave: RtuSlave) -> None:
    slave.garbled.add(10)
    line, rec, sched = started(slave.open())
    sched.advance(0)
    assert rec.values(entity="flow") == []
    assert line.stats()["crc_errors"] >= 1
    assert rec.values(Kind.AVAILABILITY, "flow") == [False]
    line.stop()


def test_an_exception_answer_makes_only_that_reads_entities_unavailable(slave: RtuSlave) -> None:
    line, rec, sched = started(slave.open(), [{"slave": 10, "poll_s": 1, "registers": [
        {"entity": "flow", "address": 100, "type": "int16"}, {"entity": "missing", "address": 150}]}])
    sched.advance(1)
    assert rec.values(entity="flow") == [-55, -55]
    assert rec.values(Kind.AVAILABILITY, "missing") == [False]
    assert rec.values(Kind.AVAILABILITY, "flow") == []
    assert line.stats()["exceptions"] == 2
    line.stop()


def test_an_output_starts_in_its_safe_state_and_writes_its_on_value(slave: RtuSlave) -> None:
    line, rec, _ = started(slave.open())
    assert rec.of(Kind.STATE, "boost")[0].value is False
    assert slave.writes == [(10, 200, [0])]
    assert line.apply("boost", True) is True
    assert slave.units[10].holding[200] == 3
    line.stop()
    assert slave.units[10].holding[200] == 0  # stop ends in the safe state


def test_a_write_to_a_slave_known_to_be_silent_fails_at_once(slave: RtuSlave) -> None:
    slave.silent.add(10)
    line, _, sched = started(slave.open())
    sched.advance(0)
    asked = slave.asked[10]
    with pytest.raises(DriverError, match=r"slave 10 on .* does not answer"):
        line.apply("boost", True)
    assert slave.asked[10] == asked  # no request went out: no timeout for the dispatcher to wait out
    line.stop()


def test_an_output_is_an_enveloped_switch_with_its_safe_value() -> None:
    config = line_config("/dev/null", [{"slave": 3, "outputs": [
        {"entity": "boost", "address": 5, "safe_state": False, "envelope": {"max_on_s": 3600}}]}])
    line = ModbusLine(config)
    spec = line.entities()[0]
    assert (spec.component, spec.safe_value, spec.writable) == (Component.SWITCH, False, True)
    assert line.envelope()["boost"].max_on_s == 3600


def test_polls_and_writes_from_another_thread_never_interleave_on_the_line(slave: RtuSlave) -> None:
    line, rec, sched = started(slave.open())
    done = threading.Event()

    def writer() -> None:
        for i in range(40):
            line.apply("boost", i % 2 == 0)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        sched.advance(1)
    thread.join()
    assert slave.bad_requests == 0
    assert line.stats()["timeouts"] == 0
    assert set(rec.values(entity="house_voltage")) == {230.5}


def test_a_port_that_cannot_be_opened_makes_every_slave_unavailable(tmp_path: Path) -> None:
    line, rec, sched = started(str(tmp_path / "ttyUSB9"))
    sched.advance(0)
    assert rec.values(Kind.AVAILABILITY, "house_voltage") == [False]
    assert rec.values(Kind.AVAILABILITY, "flow") == [False]
    assert line.waiting_for_port
    line.stop()


def test_the_simulated_twin_answers_every_configured_register_with_plausible_values() -> None:
    from gpiozero.pins.mock import MockFactory

    from drivers.base import SimWorld
    from drivers.sim.modbus import ModbusTwin

    config = line_config("/dev/ttyUSB7", SLAVES)
    twin = ModbusTwin(config)
    world = SimWorld(MockFactory(), random.Random(1), lambda entity: None)
    twin.start(world)
    try:
        line, rec, sched = started(world.serial_ports["/dev/ttyUSB7"])
        sched.advance(0)
        assert 220 < float(rec.values(entity="house_voltage")[0]) < 240  # type: ignore[arg-type]
        assert 1200 < float(rec.values(entity="house_energy")[0]) < 1300  # type: ignore[arg-type]
        assert rec.values(entity="flow") != []
        assert rec.of(Kind.STATE, "boost")[0].value is False
        line.stop()
    finally:
        twin.stop()


SETPOINT: dict[str, Any] = {"entity": "flow_setpoint", "address": 201, "type": "int16", "scale": 0.5,
                            "minimum": 20, "maximum": 55, "safe_value": 35, "unit": "°C"}


def test_a_setpoint_starts_at_its_safe_value_and_confirms_what_the_register_can_hold(slave: RtuSlave) -> None:
    line, rec, _ = started(slave.open(), [{"slave": 10, "setpoints": [SETPOINT]}])
    assert rec.of(Kind.STATE, "flow_setpoint")[0].value == 35.0
    assert slave.units[10].holding[201] == 70
    assert line.apply("flow_setpoint", 45.7) == 45.5  # an int16 at scale 0.5 holds 91, i.e. 45.5
    assert slave.units[10].holding[201] == 91
    line.stop()
    assert slave.units[10].holding[201] == 70


def test_a_setpoint_whose_safe_value_is_outside_its_limits_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"safe_value 60 is outside minimum\.\.maximum \(20\.\.55\)"):
        line_config("/dev/null", [{"slave": 10, "setpoints": [SETPOINT | {"safe_value": 60}]}])


def test_the_hub_and_the_rules_may_set_a_setpoint_only_to_a_number_within_its_limits(tmp_path: Path) -> None:
    from core.entities import accepts
    from gateway.mqtt.commands import validator_for

    spec = ModbusLine(line_config("/dev/null", [{"slave": 10, "setpoints": [SETPOINT]}])).entities()[0]
    assert spec.component is Component.NUMBER
    assert accepts(spec, 40.5) is None
    assert "outside" in (accepts(spec, 60) or "")
    assert accepts(spec, True) is not None  # a boolean is not a setpoint
    assert validator_for(spec)("47.5") == 47.5
    config = Discovery(Topics("gateway/mb"), "mb", None, "1", tmp_path / "memory.json").entity_config(spec)
    assert (config["command_topic"], config["min"], config["max"], config["unit_of_measurement"]) == (
        "gateway/mb/set/flow_setpoint", 20, 55, "°C")


def test_a_setpoint_is_announced_with_the_step_its_register_scale_can_hold(tmp_path: Path) -> None:
    slaves = [{"slave": 10, "setpoints": [SETPOINT | {"scale": 0.1}, SETPOINT | {"entity": "limit", "address": 300,
                                                                                  "scale": 10, "maximum": 50,
                                                                                  "safe_value": 30}]}]
    tenth, tens = ModbusLine(line_config("/dev/null", slaves)).entities()
    discovery = Discovery(Topics("gateway/mb"), "mb", None, "1", tmp_path / "memory.json")
    assert (tenth.step, discovery.entity_config(tenth)["step"]) == (0.1, 0.1)
    assert (tens.step, discovery.entity_config(tens)["step"]) == (10, 10)


def test_a_setpoint_finer_than_the_hub_can_step_is_announced_at_the_hubs_finest_step(tmp_path: Path) -> None:
    spec = ModbusLine(line_config("/dev/null", [{"slave": 10, "setpoints": [
        SETPOINT | {"type": "int32", "scale": 0.0001}]}])).entities()[0]
    config = Discovery(Topics("gateway/mb"), "mb", None, "1", tmp_path / "memory.json").entity_config(spec)
    assert config["step"] == 0.001  # Home Assistant refuses a number whose step is below 0.001


@given(st.sampled_from(["int16", "uint16", "int32", "uint32"]), st.sampled_from(["big", "little"]),
       st.integers(-(2**31), 2**32 - 1))
@settings(max_examples=200)
def test_an_integer_that_fits_its_register_type_reads_back_as_written(kind: Any, order: Any, value: int) -> None:
    try:
        registers = encode(value, kind, order)
    except ValueError:
        return  # does not fit this type: refused, never wrapped
    assert all(0 <= r <= 0xFFFF for r in registers)
    assert decode(registers, kind, order) == value


def test_a_nan_from_a_meter_is_counted_and_never_a_reading(slave: RtuSlave) -> None:
    slave.units[1].put("input", 0x00, [0x7FC0, 0x0000])  # float32 NaN
    line, rec, sched = started(slave.open(), [{"slave": 1, "preset": "sdm120", "prefix": "house"}])
    sched.advance(0)
    assert rec.values(entity="house_voltage") == []
    assert rec.values(entity="house_current") == [2.25]
    assert line.stats()["invalid_values"] == 1
    line.stop()
