"""What the hub sees of the rules: the plain entities a rule set adds, and its controllers' Home Assistant
configs (shape only: the bridge publishes them)."""

from __future__ import annotations

from pathlib import Path

from gateway.controller_discovery import discovery_extras
from gateway.mqtt.topics import Topics
from rules.codes import hash_code
from rules.discovery import bridge_entities
from tests.rules_kit import ruleset

TEXT = f"""
[[virtuals]]
id = "holiday"
[[thermostats]]
id = "living"
sensor = "living_temperature"
heater = "heater"
[[alarms]]
id = "house"
code_hash = "{hash_code("1", n=2**10)}"
[alarms.sensors]
armed_away = ["front_door"]
"""


def test_controllers_are_announced_as_extras_and_the_rest_as_entities(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, TEXT)
    assert sorted(bridge_entities(rules)) == ["holiday", "living_action", "living_preset", "living_setpoint"]
    topics = Topics("gateway/gw")
    extras = {entity: (component, config) for entity, component, config in discovery_extras(rules, topics)}
    component, climate = extras["living"]
    assert component == "climate" and climate["modes"] == ["off", "heat"]
    assert climate["temperature_command_topic"] == "gateway/gw/set/living"
    assert climate["current_temperature_topic"] == "gateway/gw/state/living_temperature"
    component, alarm = extras["house"]
    assert component == "alarm_control_panel" and alarm["code"] == "REMOTE_CODE"
    assert alarm["supported_features"] == ["arm_away"]
    assert "{{ code }}" in alarm["command_template"]
