"""A house in a test tube for rule tests: the demo entities, echo actuators, virtual time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from core.entities import Component, EntitySpec
from core.events import Event, Kind, Value
from drivers.envelope import Envelope
from gateway.simulate import World
from rules.loader import RuleSet, load_rules
from tests import toml_kit as toml

DEMO_ENTITIES = {
    "hall_motion": EntitySpec("hall_motion", Component.BINARY_SENSOR, device_class="motion"),
    "front_door": EntitySpec("front_door", Component.BINARY_SENSOR, device_class="door"),
    "water_leak": EntitySpec("water_leak", Component.BINARY_SENSOR, device_class="moisture"),
    "living_temperature": EntitySpec("living_temperature", Component.SENSOR, unit="°C", device_class="temperature"),
    "hall_light": EntitySpec("hall_light", Component.LIGHT, safe_value=False),
    "heater": EntitySpec("heater", Component.SWITCH, safe_value=False),
    "cooler": EntitySpec("cooler", Component.SWITCH, safe_value=False),
    "siren": EntitySpec("siren", Component.SIREN, safe_value=False),
}
HEADER = "version = 1\n"

MOTION_LIGHT = toml.state_rule("hall_light_on_motion", "hall_motion", True, "turn_on", "hall_light", for_="2m")
"""The shipped house's motion light: on at motion, let go two minutes after the last one."""

ALARM_LIGHT = toml.state_rule("light_on_alarm", "house_alarm", "triggered", "turn_on", "hall_light", for_="10m")
"""The shipped house's alarm light: on for ten minutes when ``house_alarm`` triggers."""


def living_thermostat(**settings: toml.Setting) -> str:
    """The demo house's thermostat (``living_temperature`` drives ``heater`` around 20 °C); ``settings`` add keys."""
    return "\n" + toml.table("thermostats", {
        "id": "living", "sensor": "living_temperature", "heater": "heater", "setpoint": 20, "hysteresis": 0.5,
        "min_setpoint": 10, "max_setpoint": 25, **settings,
    }, array=True)


def ruleset(tmp_path: Path, text: str, entities: dict[str, EntitySpec] | None = None) -> RuleSet:
    directory = tmp_path / "rules.d"
    directory.mkdir(exist_ok=True)
    (directory / "test.toml").write_text(HEADER + text)
    return load_rules(directory, entities or DEMO_ENTITIES)


def local(text: str, tz: str = "UTC") -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


class House(World):
    """:class:`World` plus the questions tests ask."""

    def set(self, entity: str, value: Value, unit: str | None = None) -> Event:
        spec = self.all_entities.get(entity)
        kind = Kind.STATE if spec is not None and spec.writable else Kind.READING
        return self.post(entity, value, kind, unit)

    def command(self, entity: str, value: Value) -> Event:
        return self.post(entity, value, Kind.COMMAND)

    def commands(self, entity: str | None = None) -> list[tuple[str, Value]]:
        return [(e.entity, e.value) for e in self.actions()
                if e.kind is Kind.COMMAND and (entity is None or e.entity == entity)]

    def value(self, entity: str) -> Any:
        return self.dispatcher.state.value(entity)

    def alarm_states(self) -> list[Value]:
        return [e.value for e in self.seen if e.kind is Kind.ALARM]

    def clear(self) -> None:
        self.seen.clear()


def house(tmp_path: Path, text: str, *, start: str | None = None, tz: str = "UTC",
          state_dir: Path | None = None, begin: bool = True, envelope: Envelope | None = None) -> House:
    rules = ruleset(tmp_path, text)
    world = House(DEMO_ENTITIES, rules, timezone=tz, start=local(start, tz) if start else 1_767_225_600.0,
                  state_dir=state_dir, envelope=envelope)
    if begin:
        world.start()
    return world
