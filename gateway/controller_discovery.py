"""Home Assistant discovery for the rules' controllers: a thermostat is a ``climate``, an alarm an
``alarm_control_panel``.

Plain entities (switches, sensors, the rules' virtuals) are announced by
:mod:`gateway.mqtt.discovery` from their :class:`~core.entities.EntitySpec`;
a controller is more than a spec can say (its modes, presets, topics for
setpoint and action, whether a code is asked for), so its config is built here
from the rule file's model and handed to the bridge with
``bridge.register_discovery(entity, component, config)``, which adds the device
block, availability, unique id and QoS (see ``Gateway._mqtt_bridge`` in
gateway/app.py, and ``Gateway._announce_controllers`` after a reload). The
controllers' read-only parts (``<id>_setpoint``, ``<id>_preset``,
``<id>_action``) are plain sensors: :func:`rules.discovery.bridge_entities`.

States on ``<base>/state/<entity>`` are bare JSON values (``"heat"``, ``21.5``),
hence the ``value_json`` templates.
"""

from __future__ import annotations

from typing import Any, Protocol

from core.entities import Component
from rules import model as m
from rules.loader import RuleSet

_ACTIONS = "['heating', 'cooling', 'idle', 'off']"
"""The ``<id>_action`` values Home Assistant knows; anything else (a fault) is shown as idle."""


class TopicNames(Protocol):
    def state(self, entity: str) -> str: ...

    def command(self, entity: str) -> str: ...


def discovery_extras(ruleset: RuleSet, topics: TopicNames) -> list[tuple[str, str, dict[str, Any]]]:
    """``(entity, component, config)`` for every thermostat and alarm of the rule set."""
    extras: list[tuple[str, str, dict[str, Any]]] = []
    for declared in ruleset.thermostats:
        if isinstance(declared.item, m.Thermostat):
            extras.append((declared.item.id, Component.CLIMATE.value, climate_config(declared.item, topics)))
            extras.extend(thermostat_controls(declared.item, topics))
    for declared in ruleset.alarms:
        if isinstance(declared.item, m.Alarm):
            extras.append((declared.item.id, Component.ALARM_CONTROL_PANEL.value, alarm_config(declared.item, topics)))
    return extras


def climate_config(t: m.Thermostat, topics: TopicNames) -> dict[str, Any]:
    """Mode, setpoint and preset commands all go to ``<base>/set/<id>`` (the thermostat tells them apart)."""
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
        "min_temp": t.lowest_setpoint,  # reaches the away preset's frost_setpoint (docs/home-assistant.md)
        "max_temp": t.max_setpoint,
        "temp_step": 0.5,
        "temperature_unit": "C",
    }


def thermostat_controls(t: m.Thermostat, topics: TopicNames) -> list[tuple[str, str, dict[str, Any]]]:
    """The thermostat's setpoint as a ``number`` and its mode as a ``select``, for dashboards and automations
    (``number.set_value``, ``select.select_option``); both command the thermostat itself, through the same
    validator as the climate entity."""
    number = {
        "name": f"{m_name(t.id)} target",
        "command_topic": topics.command(t.id),
        "state_topic": topics.state(f"{t.id}_setpoint"),
        "value_template": "{{ value_json }}",
        "min": t.lowest_setpoint,
        "max": t.max_setpoint,
        "step": 0.5,
        "mode": "box",
        "unit_of_measurement": "°C",
        "device_class": "temperature",
    }
    select = {
        "name": f"{m_name(t.id)} mode",
        "command_topic": topics.command(t.id),
        "state_topic": topics.state(t.id),
        "value_template": "{{ value_json }}",
        "options": list(t.modes()),
        "icon": "mdi:thermostat",
    }
    return [(f"{t.id}_target", "number", number), (f"{t.id}_mode", "select", select)]


def m_name(entity: str) -> str:
    return entity.replace("_", " ").capitalize()


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
