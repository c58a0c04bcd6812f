"""Builders for the TOML the tests write: a config.toml's tables and devices, and state rules.

Many tests need a gateway with a relay on some pin, a serial sensor on ``loop://`` or a rule that switches
an output when an input changes, differing from the next test's only in an id, a pin or a port. Built here,
each fixture shows only what is particular to it, and the TOML's spelling lives in one place. The text is
ordinary TOML, one ``key = value`` a line in the order given, so a test may still ``.replace()`` a line of it.

    from tests import toml_kit as toml

    toml.config(toml.gateway("owned"), toml.mqtt(port), toml.relay("heater", 23),
                toml.serial_kv("climate", "temperature", unit="°C"))
    toml.state_rule("motion_light", "hall_motion", True, "turn_on", "hall_light", for_="2m")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

Scalar = str | int | float | bool
Setting = Scalar | Sequence[Scalar] | Mapping[str, Scalar]
"""What a key may hold here: a scalar, an array of scalars or an inline table of scalars."""


def value(setting: Setting) -> str:
    """One value as TOML: ``true``, ``60``, ``"2m"``, ``["a", "b"]``, ``{ min_off_s = 0 }``."""
    if isinstance(setting, bool):
        return "true" if setting else "false"
    if isinstance(setting, int | float):
        return repr(setting)
    if isinstance(setting, str):
        return json.dumps(setting, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(setting, Mapping):
        return "{ " + ", ".join(f"{key} = {value(v)}" for key, v in setting.items()) + " }"
    return "[" + ", ".join(value(v) for v in setting) + "]"


def table(name: str, settings: Mapping[str, Setting], *, array: bool = False) -> str:
    """``[name]`` (or ``[[name]]`` with ``array``) and its keys, in the order given."""
    header = f"[[{name}]]" if array else f"[{name}]"
    return header + "\n" + "".join(f"{key} = {value(v)}\n" for key, v in settings.items())


def config(*tables: str) -> str:
    """A config.toml from its tables, a blank line between them."""
    return "\n".join(tables)


def gateway(gateway_id: str, **settings: Setting) -> str:
    """``[gateway]`` with its state in ``state`` (relative to the config file)."""
    return table("gateway", {"id": gateway_id, "state_dir": "state", **settings})


def mqtt(port: int, **settings: Setting) -> str:
    """``[mqtt]`` for the tests' broker on 127.0.0.1."""
    return table("mqtt", {"host": "127.0.0.1", "port": port, **settings})


def device(device_id: str, driver: str, **settings: Setting) -> str:
    return table("devices", {"id": device_id, "driver": driver, **settings}, array=True)


def motion(device_id: str, pin: int, **settings: Setting) -> str:
    return device(device_id, "gpio.motion", pin=pin, **settings)


def relay(device_id: str, pin: int, **settings: Setting) -> str:
    return device(device_id, "gpio.relay", pin=pin, **settings)


def serial_kv(device_id: str, entity: str, *, port: str = "loop://", key: str = "t", unit: str | None = None,
              device_class: str | None = None, **settings: Setting) -> str:
    """A ``serial.kv`` sensor whose ``key=value`` lines give one entity (``[devices.fields.<key>]``)."""
    field: dict[str, Setting] = {"entity": entity}
    if unit is not None:
        field["unit"] = unit
    if device_class is not None:
        field["device_class"] = device_class
    return device(device_id, "serial.kv", port=port, **settings) + table(f"devices.fields.{key}", field)


def state_rule(rule_id: str, entity: str, to: Scalar, action: str, target: str, *,
               held_for: str | None = None, for_: str | None = None) -> str:
    """A rule with one state trigger (``held_for``: the trigger's ``for``) and one action on ``target``
    (``for_``: the action's ``for``), starting with a blank line so rules can be concatenated."""
    trigger: dict[str, Setting] = {"type": "state", "entity": entity, "to": to}
    if held_for is not None:
        trigger["for"] = held_for
    act: dict[str, Setting] = {"type": action, "entity": target}
    if for_ is not None:
        act["for"] = for_
    return ("\n" + table("rules", {"id": rule_id}, array=True) + table("rules.triggers", trigger, array=True)
            + table("rules.actions", act, array=True))
