"""Entities: what each thing in the house is to the hub and to the rules, and the value each takes.

An :class:`EntitySpec` is declared by the driver (or controller) that owns the
entity. The MQTT bridge derives discovery from it, the hub's command validator
what a hub may ask for, the rules loader what a rule may write: all three ask
:func:`accepts`, so they cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from core.events import Value


class Component(StrEnum):
    """What an entity is to the home hub (Home Assistant's component names)."""

    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"
    SWITCH = "switch"
    LIGHT = "light"
    SIREN = "siren"
    CLIMATE = "climate"
    """A thermostat (rules/thermostat.py): commands are a setpoint number or a mode name."""
    ALARM_CONTROL_PANEL = "alarm_control_panel"
    """An alarm (rules/alarm.py): commands are arm/disarm actions, with a code from the hub."""
    EVENT = "event"
    """Something that happens and has no lasting state (a button's press, double press, long press):
    its value is the event type (one of ``options``) for a moment, then ``None`` again."""
    FAN = "fan"
    """A PWM fan: commands are true/false or a percentage within ``minimum``..``maximum``."""
    NUMBER = "number"
    """A settable number (a servo's angle): commands are a number within ``minimum``..``maximum``."""


WRITABLE_COMPONENTS = frozenset(
    {Component.SWITCH, Component.LIGHT, Component.SIREN, Component.CLIMATE, Component.ALARM_CONTROL_PANEL,
     Component.FAN, Component.NUMBER}
)

CONTROLLER_COMPONENTS = frozenset({Component.CLIMATE, Component.ALARM_CONTROL_PANEL})
"""Components that only their owner, a controller of the rules (thermostat, alarm), can describe:
the hub's command validator has no built-in validator for them (the owner registers one), and
discovery announces them from the config their owner registers rather than from the spec alone."""


MEASUREMENT = "measurement"
"""The ``state_class`` of a sensor's reading unless its driver says otherwise."""


@dataclass(slots=True, frozen=True)
class EntitySpec:
    """One entity a driver owns: what it measures or drives, and its limits.

    The MQTT bridge derives discovery from it; the command validator derives
    what a hub may ask for (only writable entities, only values within
    ``minimum``/``maximum``); the rules loader checks rule files against it.
    """

    id: str
    component: Component
    unit: str | None = None
    device_class: str | None = None
    safe_value: Value = None
    default: Value = None
    """An output's value while no claim holds it (gateway/authority.py); None: ``safe_value``."""
    minimum: float | None = None
    maximum: float | None = None
    report_interval: float | None = None
    """Seconds between readings at most, when known: the hub's ``expire_after``."""
    options: tuple[str, ...] = ()
    """The words a controller takes as commands (lower case): a thermostat's modes and presets
    (``"heat"``, ``"off"``, ``"away"``...), an alarm panel's actions; an ``event`` entity's event
    types (``"press"``, ``"double_press"``, ``"long_press"``). Empty for everything else."""
    state_class: str | None = MEASUREMENT
    """Home Assistant's ``state_class`` of a sensor with a unit: ``measurement``, whose long-term
    statistics the hub keeps; ``total_increasing`` for a meter's running total (the energy dashboard
    counts only those); None for a value that is set rather than measured (a setpoint): no statistics."""
    correctable: bool = False
    """A sensor the hub may set to a number within ``minimum``..``maximum`` (a pulse meter's total,
    corrected to the meter's own reading); the owning driver applies it (``Driver.correct``)."""
    category: str | None = None
    """The hub's ``entity_category``: ``"diagnostic"`` for an entity that repeats what another shows
    (a thermostat's action) or reports on the gateway itself; None for the house's own entities."""
    icon: str | None = None
    """The hub's icon (``mdi:radiator``), for entities without a device class to draw one from."""
    step: float | None = None
    """The smallest change a ``number`` can make, when its driver knows it (a Modbus setpoint's register
    scale, a servo's 1°): the hub's slider moves by it. None: 1."""

    @property
    def writable(self) -> bool:
        return self.component in WRITABLE_COMPONENTS or self.correctable


def accepts(spec: EntitySpec, value: Value) -> str | None:
    """Why ``spec`` does not take ``value`` as a command, or None if it does.

    The one statement of the value each component takes, shared by the rules
    loader (a ``set`` as written in a rule file) and the hub's command
    validator (:mod:`gateway.mqtt.commands`, once the hub's ``ON``/``OFF`` words
    became booleans at that edge), so the two cannot drift apart:

    * switch, siren: ``true`` or ``false``;
    * light: ``true`` or ``false``; a dimmable one (with ``minimum``/``maximum``,
      e.g. ``gpio.pwm_light``'s 0..100 %) also a brightness within them;
    * climate (a thermostat): a setpoint within ``minimum``..``maximum`` (a number,
      or text that reads as one, which the thermostat accepts), or one of its
      ``options`` (mode or preset; any case);
    * alarm control panel: one of its ``options`` (``arm_away``...);
    * fan: ``true`` or ``false``, or a percentage within ``minimum``..``maximum``;
    * number (a servo's angle): a number within ``minimum``..``maximum``;
    * a ``correctable`` sensor (a pulse meter's total): a number within ``minimum``..``maximum``;
    * sensor, binary sensor, event: nothing: they cannot be commanded.

    Words are never booleans here: ``"OFF"`` for a switch is refused, so no rule
    can say "off" and have a safety check read the non-empty string as on.
    The reason starts with the entity, e.g. ``'heater' is a switch: use true or
    false, not "OFF"``.
    """
    judge = _number if spec.correctable else _TAKES.get(spec.component)
    if judge is None:
        return f"{spec.id!r} is a {spec.component}, it cannot be commanded"
    return judge(spec, value)


def _switch(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, bool):
        return None
    return f"{spec.id!r} is a {spec.component}: use true or false, not {_shown(value)}"


def _light(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, bool):
        return None
    if spec.minimum is None and spec.maximum is None:
        return f"{spec.id!r} is an on/off light: use true or false, not {_shown(value)}"
    if _number_within(value, spec) is None:
        return None
    low, high = _bounds(spec)
    return f"{spec.id!r} is a dimmable light: use true, false or a brightness {low}..{high}, not {_shown(value)}"


def _fan(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, bool) or _number_within(value, spec) is None:
        return None
    low, high = _bounds(spec)
    return f"{spec.id!r} is a fan: use true, false or a percentage {low}..{high}, not {_shown(value)}"


def _number(spec: EntitySpec, value: Value) -> str | None:
    wrong = _number_within(value, spec)
    if wrong is None:
        return None
    low, high = _bounds(spec)
    if wrong == "outside":
        return f"{spec.id!r} takes a number {low}..{high}: {_shown(value)} is outside"
    return f"{spec.id!r} takes a number {low}..{high}, not {_shown(value)}"


def _thermostat(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, str) and value.strip().lower() in spec.options:
        return None
    wrong = _number_within(_numeric_text(value), spec)
    if wrong is None:
        return None
    low, high = _bounds(spec)
    if wrong == "outside":
        return f"{spec.id!r} is a thermostat: setpoint {_shown(value)} is outside its limits {low}..{high}"
    return (f"{spec.id!r} is a thermostat: use a setpoint {low}..{high} or one of {', '.join(spec.options)}, "
            f"not {_shown(value)}")


def _alarm(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, str) and value.strip().lower() in spec.options:
        return None
    return f"{spec.id!r} is an alarm: use one of {', '.join(spec.options)}, not {_shown(value)}"


_TAKES: dict[Component, Callable[[EntitySpec, Value], str | None]] = {
    Component.SWITCH: _switch,
    Component.SIREN: _switch,
    Component.LIGHT: _light,
    Component.CLIMATE: _thermostat,
    Component.ALARM_CONTROL_PANEL: _alarm,
    Component.FAN: _fan,
    Component.NUMBER: _number,
}
"""What each writable component takes; a component not here (a sensor) takes nothing."""


def _shown(value: Value) -> str:
    """A value as the installer would write it in a rule file (``"OFF"``, ``true``, ``50``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False)


def _bounds(spec: EntitySpec) -> tuple[str, str]:
    low = "" if spec.minimum is None else f"{spec.minimum:g}"
    high = "" if spec.maximum is None else f"{spec.maximum:g}"
    return low, high


def _numeric_text(value: Value) -> Value:
    """Text that reads as a finite number becomes that number (a thermostat reads ``"21"`` as 21)."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _number_within(value: Value, spec: EntitySpec) -> str | None:
    """None if ``value`` is a finite number (not a boolean) within the spec's limits; else
    ``"outside"`` (a number beyond them) or ``"not a number"``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "not a number"
    if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
        return "outside"
    return None
