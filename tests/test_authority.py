"""One authority per output: claims at priority levels, ownership, confirmed state (gateway/authority.py).

Each test is one of the defects found by trying the product from outside, or a rule of the claim model."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from core.entities import Component, EntitySpec
from core.events import Kind
from drivers.actuators import Relay
from drivers.envelope import Envelope, EnvelopeConfig
from gateway.app import Gateway
from gateway.config import load_config
from gateway.simulate import simulate
from rules.loader import RulesError, RuleSet, load_rules
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder, write_config
from tests.rules_config import house_config
from tests.rules_kit import ALARM_LIGHT, DEMO_ENTITIES, MOTION_LIGHT, House, house, living_thermostat

THERMO = living_thermostat(stale_after="10m")

ALARM = """
[[alarms]]
id = "house_alarm"
exit_delay = "0s"
entry_delay = "0s"
siren = "siren"
siren_time = "3m"
[alarms.sensors]
armed_away = ["front_door", "hall_motion"]
"""

def heater_envelope(**limits: Any) -> Envelope:
    return Envelope({"heater": EnvelopeConfig(**limits)}, {"heater": False})


def rejections(h: House, entity: str) -> list[str]:
    return [str(e.detail) for e in h.seen if e.kind is Kind.REJECTED and e.entity == entity]


def readings_every_minute(h: House, value: float, minutes: int) -> None:
    for _ in range(minutes):
        h.set("living_temperature", value)
        h.advance(60)


# -- ownership ------------------------------------------------------------------------------------


def test_a_hub_command_to_a_thermostats_heater_is_refused_naming_the_thermostat(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 30.0)
    h.command("heater", True)
    assert h.value("heater") is False
    assert h.value("living_action") == "idle"
    assert any("heater is owned by thermostat living" in why for why in rejections(h, "heater"))


def test_a_hub_override_holds_the_heater_for_its_time_then_the_thermostat_decides_again(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO.replace('stale_after = "10m"', 'stale_after = "10m"\noverride = "30m"'))
    h.set("living_temperature", 30.0)
    h.command("heater", True)
    assert h.value("heater") is True
    assert h.value("living_action") == "heating"  # the relay is on, whoever holds it
    readings_every_minute(h, 30.0, 29)
    assert h.value("heater") is True
    readings_every_minute(h, 30.0, 1)
    assert h.value("heater") is False
    assert h.value("living_action") == "idle"


HEAT_ON_DOOR = """
[[rules]]
id = "heat_on_door"
[[rules.triggers]]
type = "state"
entity = "front_door"
to = true
[[rules.actions]]
type = "turn_on"
entity = "heater"
"""


def test_a_rule_aimed_at_an_output_a_controller_owns_is_a_located_load_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as caught:
        house(tmp_path, THERMO + HEAT_ON_DOOR)
    [problem] = caught.value.problems
    assert problem.endswith("test.toml: rule heat_on_door: actions[0].entity: 'heater' is owned by thermostat "
                            "living; change the thermostat's setpoint or mode instead")


def test_two_controllers_cannot_own_one_output(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="'heater' is already owned by thermostat living"):
        house(tmp_path, THERMO + THERMO.replace('id = "living"', 'id = "other"'))


def test_a_claim_by_anyone_but_the_owner_is_refused_by_the_arbiter_too(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 30.0)
    h.dispatcher.process(h.events.make(Kind.COMMAND, "heater", True, rule="some_rule"))
    assert h.value("heater") is False
    assert any("heater is owned by thermostat living" in why for why in rejections(h, "heater"))


def test_the_siren_cannot_be_silenced_by_the_hub_while_the_alarm_is_triggered(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM)
    h.command("house_alarm", "arm_away")
    h.set("front_door", True)
    assert h.value("siren") is True
    h.command("siren", False)
    assert h.value("siren") is True
    assert any("owned by alarm house_alarm" in why and "disarm" in why for why in rejections(h, "siren"))
    h.command("house_alarm", "disarm")
    assert h.value("siren") is False


# -- rules that used to undo each other ---------------------------------------------------------------


def test_two_rules_holding_the_hall_light_keep_it_on_until_both_let_go(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM.replace('"hall_motion"]', "]") + MOTION_LIGHT + ALARM_LIGHT)
    h.command("house_alarm", "arm_away")
    h.set("front_door", True)  # triggered: light_on_alarm holds the light for 10 minutes
    h.advance(43)
    h.set("hall_motion", True)  # the motion light's 2 minutes end at 163 s
    h.advance(125)
    assert h.value("hall_light") is True  # the alarm light still holds it
    assert "light_on_alarm" in h.dispatcher.outputs.describe("hall_light")
    h.advance(600 - 168)
    assert h.value("hall_light") is False


def test_the_state_event_names_the_claim_in_force_and_those_waiting(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM.replace('"hall_motion"]', "]") + MOTION_LIGHT + ALARM_LIGHT)
    h.command("house_alarm", "arm_away")
    h.set("front_door", True)
    h.set("hall_motion", True)
    state = [e for e in h.seen if e.kind is Kind.STATE and e.entity == "hall_light"][-1]
    assert state.detail is not None
    assert state.detail.startswith("hall_light_on_motion (rules) True; waiting: light_on_alarm (rules) True")


def test_the_hub_turning_a_free_light_on_outlasts_a_motion_rules_timer(tmp_path: Path) -> None:
    h = house(tmp_path, MOTION_LIGHT)
    h.set("hall_motion", True)
    h.command("hall_light", True)  # someone switched it on by hand
    h.advance(180)
    assert h.value("hall_light") is True


def test_a_rules_trace_says_whether_its_claim_is_in_force_or_waits(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM.replace('"hall_motion"]', "]") + MOTION_LIGHT + ALARM_LIGHT)
    h.command("house_alarm", "arm_away")
    h.set("front_door", True)
    h.set("hall_motion", True)
    [motion] = h.engine.traces.get("hall_light_on_motion")
    assert motion["actions"] == ["turn_on hall_light for 120s (in force over light_on_alarm (rules) True)"]


# -- controllers act on the relay, not on their memory ---------------------------------------------------


def test_after_the_maximum_on_time_the_thermostat_heats_again(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO, envelope=heater_envelope(max_on_s=3600, min_off_s=120))
    readings_every_minute(h, 10.0, 60)
    assert h.value("heater") is False  # the envelope cut it at 4 h... here at 1 h
    assert h.value("living_action") == "idle"
    readings_every_minute(h, 10.0, 3)
    assert h.value("heater") is True  # claimed again, after min_off_s
    assert h.value("living_action") == "heating"


def test_the_thermostat_reports_heating_only_while_the_relay_is_on(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO, envelope=heater_envelope(min_off_s=300))
    h.set("living_temperature", 18.0)
    h.set("living_temperature", 21.0)  # off again: min_off_s now holds it off for 5 minutes
    h.set("living_temperature", 18.0)
    assert h.value("heater") is False
    assert h.value("living_action") == "idle"
    assert any(why.startswith("deferred") for why in rejections(h, "heater"))
    h.advance(300)
    assert h.value("heater") is True
    assert h.value("living_action") == "heating"


def test_a_switch_budget_defers_the_thermostat_and_the_heater_follows_when_allowed(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO, envelope=heater_envelope(max_switches_per_hour=2))
    h.set("living_temperature", 18.0)  # switch 1: on
    h.set("living_temperature", 21.0)  # switch 2: off (toward safe: always allowed)
    h.set("living_temperature", 18.0)  # budget spent: deferred until switch 1 leaves the hour
    assert h.value("heater") is False and h.value("living_action") == "idle"
    assert any(why.startswith("deferred 3600 s") for why in rejections(h, "heater"))
    readings_every_minute(h, 18.0, 60)
    assert h.value("heater") is True and h.value("living_action") == "heating"


def test_a_silent_sensor_switches_the_heater_off_at_once_despite_every_minimum_time(tmp_path: Path) -> None:
    text = THERMO.replace('stale_after = "10m"', 'stale_after = "3m"\nmin_on = "2m"')
    h = house(tmp_path, text, envelope=heater_envelope(min_on_s=120, min_off_s=120))
    h.set("living_temperature", 15.0)
    assert h.value("heater") is True
    h.advance(10)
    h.post("living_temperature", False, Kind.AVAILABILITY)  # the sensor unplugged 10 s later
    assert h.value("heater") is False
    assert h.value("living_action") == "fault"
    assert rejections(h, "heater") == []


def test_a_reload_that_moves_the_thermostat_to_another_heater_switches_the_old_one_off(tmp_path: Path) -> None:
    h = house(tmp_path, THERMO)
    h.set("living_temperature", 15.0)
    assert h.value("heater") is True
    (tmp_path / "rules.d" / "test.toml").write_text("version = 1\n" + THERMO.replace('"heater"', '"cooler"', 1))
    h.engine.replace(_reload(tmp_path))
    h.dispatcher.drain()
    assert h.value("heater") is False
    assert h.value("cooler") is True


def _reload(tmp_path: Path) -> RuleSet:
    return load_rules(tmp_path / "rules.d", DEMO_ENTITIES)


def test_a_reload_that_moves_the_alarm_to_another_siren_silences_the_old_one(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM)
    h.command("house_alarm", "arm_away")
    h.set("front_door", True)
    assert h.value("siren") is True
    (tmp_path / "rules.d" / "test.toml").write_text("version = 1\n" + ALARM.replace('siren = "siren"',
                                                                                   'siren = "hall_light"'))
    h.engine.replace(_reload(tmp_path))
    h.dispatcher.drain()
    assert h.value("siren") is False


def test_a_reload_that_removes_a_rule_lets_go_of_its_claims(tmp_path: Path) -> None:
    h = house(tmp_path, MOTION_LIGHT.replace('for = "2m"', ""))
    h.set("hall_motion", True)
    assert h.value("hall_light") is True
    (tmp_path / "rules.d" / "test.toml").write_text("version = 1\n")
    h.engine.replace(_reload(tmp_path))
    h.dispatcher.drain()
    assert h.value("hall_light") is False


# -- the dry run is the live core ------------------------------------------------------------------------


def test_gateway_simulate_shows_the_deferrals_of_the_devices_envelopes(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "heat.toml").write_text("version = 1\n" + THERMO)
    config = house_config(tmp_path, rules)
    devices = [d.model_copy(update={"envelope": EnvelopeConfig(min_off_s=300)}) if d.id == "heater" else d
               for d in config.devices]
    config = config.model_copy(update={"devices": devices})
    script = tmp_path / "events.jsonl"
    script.write_text("\n".join(json.dumps(line) for line in [
        {"at": 0, "entity": "living_temperature", "value": 18.0},
        {"at": 10, "entity": "living_temperature", "value": 21.0},
        {"at": 20, "entity": "living_temperature", "value": 18.0},
    ]))
    out = io.StringIO()
    assert simulate(config, script, out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    deferred = [line for line in lines if line["kind"] == "rejected" and line["entity"] == "heater"]
    assert deferred and str(deferred[0]["detail"]).startswith("deferred 290 s: minimum off time 300 s")


# -- shutdown -----------------------------------------------------------------------------------------------

GATEWAY_CONFIG = toml.config(
    toml.gateway("shutdown"),
    toml.relay("heater", 23, envelope={"min_off_s": 0}),
    toml.serial_kv("climate", "living_temperature", unit="°C"),
)


def test_at_shutdown_no_claim_drives_an_output_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pins = MockFactory()
    config = load_config(write_config(tmp_path, GATEWAY_CONFIG, rules="version = 1\n" + THERMO))
    gateway = Gateway(config, pin_factory=pins, forwarder=RecordingForwarder())
    gateway.start()
    gateway.dispatcher.drain()
    gateway.bus.post(gateway.events.reading("living_temperature", 15.0))
    gateway.dispatcher.drain()
    assert pins.pin(23).state is True
    pins.pin(23).clear_states()
    gateway.shutdown()
    pins.pin(23).assert_states([True, False])  # off once, never on again
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# -- the relinquish default ---------------------------------------------------------------------------------


def test_an_output_with_a_configured_default_goes_there_when_no_claim_holds_it(tmp_path: Path) -> None:
    entities = {**DEMO_ENTITIES, "pump": EntitySpec("pump", Component.SWITCH, safe_value=False, default=True)}
    h = House(entities, load_rules(_rules_dir(tmp_path, PUMP_RULE), entities))
    h.start()
    assert h.value("pump") is True  # started safe (off), then its default: nobody claims it
    h.set("front_door", True)  # the rule claims it off
    assert h.value("pump") is False
    h.advance(60)  # ... for a minute, then lets go (type = "release")
    assert h.value("pump") is True
    status = h.dispatcher.outputs.status()["pump"]
    assert (status["safe"], status["default"], status["claims"]) == (False, True, [])


def test_a_default_away_from_safe_cannot_go_with_a_maximum_on_time() -> None:
    with pytest.raises(ValidationError, match=r"cannot go with envelope\.max_on_s"):
        Relay.Config.model_validate({"id": "pump", "driver": "gpio.relay", "pin": 5, "default_state": True,
                                     "envelope": {"max_on_s": 600}})


PUMP_RULE = """
[[rules]]
id = "pump_off_while_the_door_is_open"
[[rules.triggers]]
type = "state"
entity = "front_door"
to = true
[[rules.actions]]
type = "turn_off"
entity = "pump"
[[rules.actions]]
type = "delay"
for = "1m"
[[rules.actions]]
type = "release"
entity = "pump"
"""


def _rules_dir(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "pump-rules"
    directory.mkdir()
    (directory / "pump.toml").write_text("version = 1\n" + text)
    return directory
