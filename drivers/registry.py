"""The closed catalogue from a config ``driver = "..."`` name to a driver class.

New hardware is one module and one line in :data:`PLACES`: the name and where its class lives. The
name is the ``driver`` literal of the class's config model, so the name a device table gives always
builds the class that model belongs to (the soundness of ``DRIVERS[device.driver](device)`` rests on
that; checked when the class is first resolved, and for all of them in the tests). Hardware libraries
are imported inside the driver modules' ``start``, so this package imports on any machine.

The catalogue is lazy: a driver module is imported the first time its name is looked up, so a house
of GPIO inputs and relays never loads the Modbus, I²C-only, fan or pulse drivers (their modules and
pydantic models: memory a Pi does not pay, docs/performance.md). The names alone (``gateway check``'s
did-you-mean, the list of known drivers) import nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from importlib import import_module
from types import MappingProxyType
from typing import get_args

from core.errors import did_you_mean
from drivers.base import Driver


def catalogue(*classes: type[Driver]) -> Mapping[str, type[Driver]]:
    """Each class under its config model's ``driver`` literal, in the order given; read-only.

    Raises ``TypeError`` at import time for a model whose ``driver`` is not one string literal,
    and ``ValueError`` for two classes claiming one name.
    """
    named: dict[str, type[Driver]] = {}
    for cls in classes:
        names = get_args(cls.Config.model_fields["driver"].annotation)
        if len(names) != 1 or not isinstance(names[0], str):
            raise TypeError(f"{cls.__name__}.Config must narrow driver to one Literal name, not {names!r}")
        name = names[0]
        if name in named:
            raise ValueError(f"driver name {name!r} claimed by {named[name].__name__} and {cls.__name__}")
        named[name] = cls
    return MappingProxyType(named)


PLACES: Mapping[str, str] = MappingProxyType({
    "gpio.input": "drivers.gpio:DigitalInput",
    "gpio.motion": "drivers.gpio:MotionSensor",
    "gpio.relay": "drivers.actuators:Relay",
    "gpio.pwm_light": "drivers.actuators:PwmLight",
    "gpio.siren": "drivers.actuators:Siren",
    "serial.kv": "drivers.serial_line:KeyValueSensor",
    "serial.json": "drivers.serial_line:JsonLinesSensor",
    "serial.nmea": "drivers.serial_line:NmeaSensor",
    "serial.pms5003": "drivers.serial_line:Pms5003Sensor",
    "serial.mhz19": "drivers.serial_line:Mhz19Sensor",
    "analog.mcp3008": "drivers.analog:AnalogInput",
    "analog.mcp3208": "drivers.analog:Mcp3208Input",
    "onewire.ds18b20": "drivers.onewire:Ds18b20",
    "gpio.pulse_meter": "drivers.pulse:PulseMeter",
    "gpio.button": "drivers.button:Button",
    "gpio.rotary_encoder": "drivers.encoder:RotaryEncoder",
    "gpio.fan": "drivers.fan:Fan",
    "gpio.servo": "drivers.fan:Servo",
    "i2c.bme280": "drivers.i2c_sensors:Bme280",
    "i2c.bmp280": "drivers.i2c_sensors:Bmp280",
    "i2c.sht3x": "drivers.i2c_sensors:Sht3x",
    "i2c.sht4x": "drivers.i2c_sensors:Sht4x",
    "i2c.bh1750": "drivers.i2c_sensors:Bh1750",
    "i2c.ads1115": "drivers.i2c_sensors:Ads1115",
    "modbus.rtu": "drivers.modbus:ModbusLine",
})
"""Each driver name and its class as ``"module:Class"``, resolved on first use by :data:`DRIVERS`."""


class LazyCatalogue(Mapping[str, type[Driver]]):
    """A read-only mapping from driver name to class that imports a driver's module on first lookup.

    ``KeyError`` for a name not in ``places``; ``TypeError`` when the class's model does not declare
    the name it is listed under (see :func:`catalogue`). Iterating and ``len`` import nothing.
    """

    __slots__ = ("_loaded", "_places")

    def __init__(self, places: Mapping[str, str]) -> None:
        self._places = places
        self._loaded: dict[str, type[Driver]] = {}

    def __getitem__(self, name: str) -> type[Driver]:
        cls = self._loaded.get(name)
        if cls is None:
            module, _, attr = self._places[name].partition(":")
            cls = getattr(import_module(module), attr)
            declared = catalogue(cls)
            if name not in declared:
                raise TypeError(f"{attr}.Config declares driver {next(iter(declared))!r}, listed as {name!r}")
            self._loaded[name] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(self._places)

    def __len__(self) -> int:
        return len(self._places)

    def __contains__(self, name: object) -> bool:
        return name in self._places  # a name, without importing its module


DRIVERS: Mapping[str, type[Driver]] = LazyCatalogue(PLACES)
"""Every driver a ``config.toml`` may name; ``config.drivers()`` and the config's union of models come from here."""


def driver_class(name: str) -> type[Driver]:
    try:
        return DRIVERS[name]
    except KeyError:
        raise KeyError(unknown_driver_message(name)) from None


def unknown_driver_message(name: str) -> str:
    return f"unknown driver {name!r}{did_you_mean(name, DRIVERS)} (known: {', '.join(sorted(DRIVERS))})"
