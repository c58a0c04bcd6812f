"""What the MQTT side needs to show the rules' entities to Home Assistant.

Thermostats and alarms are not plain switches or sensors: they are announced
with ``bridge.register_discovery(entity, component, config)``, and only their
read-only sub-entities (``<id>_setpoint``, ``<id>_preset``, ``<id>_action``)
and the virtual entities go in the bridge's entity map::

    ruleset = load_ruleset(config)             # gateway/assembly.py
    entities = {**config.entities(), **bridge_entities(ruleset)}
    bridge = MqttBridge(config, entities, bus.post, events)
    for entity, validator in command_validators(ruleset, clock).items():
        bridge.register_command(entity, validator)
    for entity, component, extra in discovery_extras(ruleset, bridge.topics):
        bridge.register_discovery(entity, component, extra)

States on ``<base>/state/<entity>`` are bare JSON values (``"heat"``, ``21.5``),
hence the ``value_json`` templates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from core.entities import CONTROLLER_COMPONENTS, Component, EntitySpec
from rules import model as m
from rules.loader import RuleSet
from rules.ownership import output_owners

_ACTIONS = "['heating', 'cooling', 'idle', 'off']"


class TopicNames(Protocol):
    def state(self, entity: str) -> str: ...

    def command(self, entity: str) -> str: ...


def bridge_entities(ruleset: RuleSet) -> dict[str, EntitySpec]:
    """Virtual entities and controller sub-entities: plain switches and sensors for the bridge."""
    return {spec.id: spec for spec in ruleset.entities() if spec.component not in CONTROLLER_COMPONENTS}


def hub_view(entities: Mapping[str, EntitySpec], ruleset: RuleSet) -> dict[str, EntitySpec]:
    """The entities as the hub should see them: an output a controller owns and the hub may not
    override (an alarm's siren, a thermostat's heater without ``override``) is announced read-only,
    as a ``binary_sensor`` on the same state topic (Home Assistant's switch needs a command topic)."""
    view = dict(entities)
    for entity, owner in output_owners(ruleset).items():
        spec = view.get(entity)
        if spec is not None and owner.override_s is None:
            device_class = "sound" if spec.component is Component.SIREN else "running"
            view[entity] = replace(spec, component=Component.BINARY_SENSOR, device_class=device_class)
    return view


def discovery_extras(ruleset: RuleSet, topics: TopicNames) -> list[tuple[str, str, dict[str, Any]]]:
    extras: list[tuple[str, str, dict[str, Any]]] = []
    for declared in ruleset.thermostats:
        if isinstance(declared.item, m.Thermostat):
            extras.append((declared.item.id, "climate", climate_config(declared.item, topics)))
    for declared in ruleset.alarms:
        if isinstance(declared.item, m.Alarm):
            extras.append((declared.item.id, "alarm_control_panel", alarm_config(declared.item, topics)))
    return extras


def climate_config(t: m.Thermostat, topics: TopicNames) -> dict[str, Any]:
    return {
        "modes": list(t.modes()),
        "mode_state_topic": topics.state(t.id),
        "mode_state_template": "{{ value_json }}",
        "mode_command_topic": topics.command(t.id),
        "temperature_state_topic": topics.state(f"{t.id}_setpoint"),
        "temperature_command_topic": topics.command(t.id),
        "current_temperature_topic": topics.state(t.sensor),
        "action_topic": topics.state(f"{t.id}_action"),
        "action_template": f"{{{{ value_json if value_json in {_ACTIONS} else 'idle' }}}}",
        "preset_modes": ["away"],
        "preset_mode_state_topic": topics.state(f"{t.id}_preset"),
        "preset_mode_value_template": "{{ 'none' if value_json == 'home' else value_json }}",
        "preset_mode_command_topic": topics.command(t.id),
        "min_temp": t.min_setpoint,
        "max_temp": t.max_setpoint,
        "temp_step": 0.5,
        "temperature_unit": "C",
    }


def alarm_config(a: m.Alarm, topics: TopicNames) -> dict[str, Any]:
    """``REMOTE_CODE``: Home Assistant asks for the code and sends it to the gateway, which checks the hash."""
    config: dict[str, Any] = {
        "state_topic": topics.state(a.id),
        "value_template": "{{ value_json }}",
        "command_topic": topics.command(a.id),
        "supported_features": [mode.replace("armed_", "arm_") for mode in ("armed_home", "armed_away", "armed_night")
                               if getattr(a.sensors, mode)] or ["arm_away"],
        "code_arm_required": a.code_arm_required,
        "code_disarm_required": a.code_hash is not None,
    }
    if a.code_hash is not None:
        config["code"] = "REMOTE_CODE"
        config["command_template"] = '{"action": "{{ action }}", "code": "{{ code }}"}'
    return config
