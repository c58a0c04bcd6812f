"""The thermostat state machine in virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.events import Kind
from rules import model as m
from tests.rules_kit import House, house, living_thermostat

THERMO = living_thermostat(frost_setpoint=7, stale_after="10m")


def heater(h: House) -> object:
    return h.value("heater")


def test_heats_below_setpoint_minus_hysteresis_and_stops_at_setpoint(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 19.6)
    assert heater(h) is False
    h.set("living_temperature", 19.5)
    assert heater(h) is True
    h.set("living_temperature", 19.9)
    assert heater(h) is True
    h.set("living_temperature", 20.0)
    assert heater(h) is False
    assert h.value("living_action") == "idle"


def test_commands_carry_the_reason(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    reading = h.set("living_temperature", 18.0)
    command = next(e for e in h.actions() if e.kind is Kind.COMMAND and e.value is True)
    assert (command.rule, command.cause) == ("living", reading.id)
    assert "18 °C, target 20 °C" in str(command.detail)


def test_minimum_on_and_off_times(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO.replace('stale_after = "10m"', 'stale_after = "1h"\nmin_on = "5m"\nmin_off = "3m"'))
    h.set("living_temperature", 18.0)
    assert heater(h) is True
    h.advance(60)
    h.set("living_temperature", 21.0)
    assert heater(h) is True  # held on for min_on
    h.advance(239)
    assert heater(h) is True
    h.advance(1)
    assert heater(h) is False  # switched as soon as allowed
    h.set("living_temperature", 18.0)
    assert heater(h) is False  # held off for min_off
    h.advance(180)
    assert heater(h) is True


def test_stale_sensor_puts_heater_in_safe_state_with_reason(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO.replace('heater = "heater"', 'heater = "heater"\nmin_on = "1h"'))
    h.set("living_temperature", 18.0)
    assert heater(h) is True
    h.advance(600)
    assert heater(h) is False  # safety bypasses min_on
    off = [e for e in h.actions() if e.kind is Kind.COMMAND and e.value is False][-1]
    assert "sensor living_temperature silent for 10m" in str(off.detail)
    assert h.value("living_action") == "fault"
    h.set("living_temperature", 18.0)
    assert heater(h) is True


def test_unavailable_sensor_puts_heater_in_safe_state(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 18.0)
    h.post("living_temperature", False, Kind.AVAILABILITY)
    assert heater(h) is False
    off = [e for e in h.actions() if e.kind is Kind.COMMAND][-1]
    assert "unavailable" in str(off.detail)


def test_setpoint_from_the_hub_within_limits(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 20.5)
    h.command("living", 22)
    assert heater(h) is True and h.value("living_setpoint") == 22
    h.command("living", 30)
    rejected = [e for e in h.seen if e.kind is Kind.REJECTED]
    assert rejected and rejected[-1].detail == "hub command rejected: setpoint 30 outside 7..25"  # frost 7
    assert h.value("living_setpoint") == 22


def test_the_hub_may_set_the_away_presets_frost_setpoint_below_min_setpoint(tmp_path: Path) -> None:
    """Home Assistant's range (min_temp) reaches the away preset's target, so the hub may set it too."""
    h = house(tmp_path, THERMO)  # min_setpoint 10, frost_setpoint 7 (the default)
    h.command("living", 7)
    assert h.value("living_setpoint") == 7
    h.command("living", 6.5)
    assert h.value("living_setpoint") == 7


def test_setpoint_as_text_from_mqtt(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.command("living", "21.5")
    assert h.value("living_setpoint") == 21.5


def test_away_uses_frost_setpoint(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 12.0)
    assert heater(h) is True
    h.command("living", "away")
    assert heater(h) is False and h.value("living_preset") == "away"
    h.set("living_temperature", 6.0)
    assert heater(h) is True


def test_a_thermostat_turned_off_stops_heating_and_refuses_modes_it_lacks(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 12.0)
    h.command("living", "off")
    assert heater(h) is False and h.value("living_action") == "off"
    h.command("living", "cool")
    assert [e.detail for e in h.seen if e.kind is Kind.REJECTED] == [
        "hub command rejected: expected a setpoint, one of ['heat', 'off'] or away/home"]


def test_cooler_and_heater_never_on_together(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO.replace('heater = "heater"', 'heater = "heater"\ncooler = "cooler"'))
    h.set("living_temperature", 25.0)
    assert (h.value("heater"), h.value("cooler")) == (False, True)
    h.set("living_temperature", 20.0)
    assert (h.value("heater"), h.value("cooler")) == (False, False)
    h.set("living_temperature", 15.0)
    assert (h.value("heater"), h.value("cooler")) == (True, False)


SCHEDULE = THERMO.replace('stale_after = "10m"', 'stale_after = "2d"') + """
[[thermostats.schedule]]
at = "06:30"
setpoint = 21
days = ["mon", "tue", "wed", "thu", "fri"]
[[thermostats.schedule]]
at = "22:00"
setpoint = 16
"""


def test_weekly_schedule_sets_the_target(tmp_path: Path) -> None:
    h = house(tmp_path, SCHEDULE, start="2026-01-05T06:00:00")  # a Monday
    h.set("living_temperature", 18.0)
    assert h.value("living_setpoint") == 16  # Sunday 22:00 is the latest point
    assert heater(h) is False
    h.advance(30 * 60)
    assert h.value("living_setpoint") == 21 and heater(h) is True
    h.advance(15.5 * 3600)
    assert h.value("living_setpoint") == 16 and heater(h) is False


def test_hub_setpoint_lasts_until_the_next_schedule_point(tmp_path: Path) -> None:
    h = house(tmp_path, SCHEDULE, start="2026-01-05T07:00:00")
    h.command("living", 23)
    assert h.value("living_setpoint") == 23
    h.advance(15 * 3600)
    assert h.value("living_setpoint") == 16


def test_rule_can_set_the_setpoint(tmp_path: Path) -> None:
    text = THERMO + """
[[rules]]
id = "warm_on_arrival"
[[rules.triggers]]
type = "state"
entity = "front_door"
to = true
[[rules.actions]]
type = "set"
entity = "living"
value = 22
"""
    h = house(tmp_path, text)
    h.set("front_door", True)
    assert h.value("living_setpoint") == 22


def test_setpoint_mode_and_preset_survive_restart(tmp_path: Path, monkeypatch: object) -> None:
    h = house(tmp_path, THERMO, state_dir=tmp_path / "state")
    h.command("living", 23)
    h.command("living", "away")
    h.engine.stop()
    (tmp_path / "b").mkdir()
    new = house(tmp_path / "b", THERMO, state_dir=tmp_path / "state")
    assert new.value("living_preset") == "away"
    new.command("living", "home")
    assert new.value("living_setpoint") == 23


def test_a_thermostat_removed_by_a_reload_leaves_the_heater_off(tmp_path: Path) -> None:
    from tests.rules_kit import ruleset

    h = house(tmp_path, THERMO)
    h.set("living_temperature", 18.0)
    assert heater(h) is True
    h.engine.replace(ruleset(tmp_path, ""))  # as the service's SIGHUP idle hook does
    h.advance(0)
    assert heater(h) is False


def test_a_hub_setpoint_past_its_schedule_point_is_not_restored(tmp_path: Path, monkeypatch: object) -> None:
    h = house(tmp_path, SCHEDULE, start="2026-01-05T21:00:00", state_dir=tmp_path / "state")
    h.command("living", 23)
    h.engine.stop()
    (tmp_path / "b").mkdir()
    new = house(tmp_path / "b", SCHEDULE, start="2026-01-05T23:00:00", state_dir=tmp_path / "state")
    assert new.value("living_setpoint") == 16  # 22:00 came while the gateway was down
    (tmp_path / "c").mkdir()
    early = house(tmp_path / "c", SCHEDULE, start="2026-01-05T21:30:00", state_dir=tmp_path / "state")
    assert early.value("living_setpoint") == 23  # back before 22:00: the hub's setpoint still holds


@pytest.mark.parametrize(("outputs", "modes", "default"), [
    ({"heater": "heater"}, ("off", "heat"), "heat"),
    ({"cooler": "fan"}, ("off", "cool"), "cool"),
    ({"heater": "heater", "cooler": "fan"}, ("off", "heat", "cool", "heat_cool"), "heat_cool"),
])
def test_a_thermostat_has_the_modes_its_outputs_allow_and_starts_in_the_widest(
    outputs: dict[str, str], modes: tuple[str, ...], default: str
) -> None:
    thermostat = m.Thermostat(id="living", sensor="living_temperature", **outputs)
    assert thermostat.modes() == modes
    assert thermostat.default_mode() == default


def test_a_hub_command_that_changes_nothing_is_still_answered_by_a_state_it_caused(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 21.0)
    command = h.command("living", "heat")  # already heating mode: nothing changes
    assert any(e.kind is Kind.STATE and e.cause == command.id for e in h.seen)
