"""The log a person reads: one line per thing that happened in the house, under the logger ``house``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from drivers.envelope import Envelope, EnvelopeConfig
from gateway.houselog import HouseLog
from tests.rules_kit import ALARM_LIGHT, DEMO_ENTITIES, House, living_thermostat, ruleset
from tests.test_rules_alarm import ALARM, code

HOUSE_ALARM = ALARM.replace('id = "house"', 'id = "house_alarm"', 1)


def the_house(tmp_path: Path, text: str, envelope: Envelope | None = None) -> tuple[House, HouseLog]:
    houselog = HouseLog(lambda: DEMO_ENTITIES)
    world = House(DEMO_ENTITIES, ruleset(tmp_path, text), on_event=houselog.observe, envelope=envelope)
    world.start()
    return world, houselog


def story(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The house's lines at INFO and above, in order; then forget them."""
    lines = [r.getMessage() for r in caplog.records if r.name == "house" and r.levelno >= logging.INFO]
    caplog.clear()
    return lines


@pytest.fixture
def caplog_house(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="house")
    return caplog


def test_arming_by_the_hub_then_an_intrusion_tell_the_story_of_the_alarm_and_the_siren(
    tmp_path: Path, caplog_house: pytest.LogCaptureFixture,
) -> None:
    h, _ = the_house(tmp_path, HOUSE_ALARM + ALARM_LIGHT)
    assert story(caplog_house) == ["alarm house_alarm: disarmed (started)"]
    h.command("house_alarm", code("arm_away"))
    h.advance(30)
    assert story(caplog_house) == ["alarm house_alarm: arming (by the hub)",
                                   "alarm house_alarm: armed_away (by the hub)"]
    h.set("water_leak", True)  # an instant sensor: no entry delay
    assert story(caplog_house) == [
        "alarm house_alarm: triggered (water_leak active while armed_away)",
        "siren: ON (alarm house_alarm: water_leak active while armed_away)",
    ]
    h.command("house_alarm", code("disarm"))
    assert story(caplog_house) == ["alarm house_alarm: disarmed (by the hub)",
                                   "siren: off (alarm house_alarm: disarmed)"]


def test_readings_and_the_lights_rules_switch_stay_out_of_the_persons_log(
    tmp_path: Path, caplog_house: pytest.LogCaptureFixture,
) -> None:
    h, _ = the_house(tmp_path, HOUSE_ALARM + ALARM_LIGHT)
    story(caplog_house)
    for value in (True, False, True, False):
        h.set("hall_motion", value)
    h.set("living_temperature", 21.0, "°C")
    assert story(caplog_house) == []


def test_a_hub_command_is_logged_once_with_its_outcome(tmp_path: Path, caplog_house: pytest.LogCaptureFixture) -> None:
    h, _ = the_house(tmp_path, HOUSE_ALARM + living_thermostat())
    story(caplog_house)
    h.command("hall_light", "ON")
    h.command("heater", "ON")  # the thermostat owns the heater: refused at the edge
    assert story(caplog_house) == [
        "hub command hall_light on: done",
        "hub command heater: rejected: heater is owned by thermostat living; "
        "change the thermostat's setpoint or mode instead",
    ]
    h.command("house_alarm", code("arm_away"))
    h.advance(30)
    h.set("water_leak", True)
    story(caplog_house)
    h.command("house_alarm", code("arm_home"))  # refused by the panel itself
    assert story(caplog_house) == ["hub command house_alarm arm_home: cannot arm_home while triggered: disarm first"]


def test_a_thermostat_fault_is_a_fail_safe_line_and_its_end_one_more(
    tmp_path: Path, caplog_house: pytest.LogCaptureFixture,
) -> None:
    h, _ = the_house(tmp_path, living_thermostat(stale_after="10m"))
    h.set("living_temperature", 18.0, "°C")
    story(caplog_house)
    h.advance(600)
    h.advance(600)  # still silent: no second line
    assert story(caplog_house) == ["fail-safe: thermostat living: sensor living_temperature silent for 10m"]
    h.set("living_temperature", 18.5, "°C")
    assert story(caplog_house) == ["thermostat living: fault over: living_temperature = 18.5"]


def test_the_siren_cut_at_its_maximum_on_time_is_a_fail_safe_line(
    tmp_path: Path, caplog_house: pytest.LogCaptureFixture,
) -> None:
    envelope = Envelope({"siren": EnvelopeConfig(max_on_s=300)}, {"siren": False})
    h, _ = the_house(tmp_path, HOUSE_ALARM.replace('siren_time = "3m"', 'siren_time = "10m"'), envelope)
    h.command("house_alarm", code("arm_away"))
    h.advance(30)
    h.set("water_leak", True)
    story(caplog_house)
    h.advance(300)
    assert story(caplog_house) == ["siren: off (fail-safe: maximum on time reached: released house_alarm)"]


def test_a_hub_command_the_envelope_defers_is_news_not_a_warning(
    tmp_path: Path, caplog_house: pytest.LogCaptureFixture,
) -> None:
    envelope = Envelope({"hall_light": EnvelopeConfig(min_off_s=60)}, {"hall_light": False})
    h, _ = the_house(tmp_path, "", envelope=envelope)
    h.command("hall_light", True)
    h.command("hall_light", False)
    caplog_house.clear()
    h.command("hall_light", True)  # within min_off_s: deferred
    [record] = [r for r in caplog_house.records if r.name == "house"]
    assert record.levelno == logging.INFO and "deferred" in record.getMessage()
