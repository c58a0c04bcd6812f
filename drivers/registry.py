"""The closed catalogue from a config ``driver = "..."`` name to a driver class.

New hardware is one module and one line in :data:`DRIVERS`: the class. Its name
is the ``driver`` literal of the class's config model, so the name a device
table gives always builds the class that model belongs to (the soundness of
``DRIVERS[device.driver](device)`` rests on that). Hardware libraries are
imported inside the driver modules' ``start``, so this package imports on any
machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import get_args

from core.errors import did_you_mean
from drivers.actuators import PwmLight, Relay, Siren
from drivers.analog import AnalogInput, Mcp3208Input
from drivers.base import Driver
from drivers.button import Button
from drivers.encoder import RotaryEncoder
from drivers.fan import Fan, Servo
from drivers.gpio import DigitalInput, MotionSensor
from drivers.i2c_sensors import Ads1115, Bh1750, Bme280, Bmp280, Sht3x, Sht4x
from drivers.modbus import ModbusLine
from drivers.onewire import Ds18b20
from drivers.pulse import PulseMeter
from drivers.serial_line import JsonLinesSensor, KeyValueSensor, Mhz19Sensor, NmeaSensor, Pms5003Sensor


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


DRIVERS: Mapping[str, type[Driver]] = catalogue(
    DigitalInput,  # gpio.input
    MotionSensor,  # gpio.motion
    Relay,  # gpio.relay
    PwmLight,  # gpio.pwm_light
    Siren,  # gpio.siren
    KeyValueSensor,  # serial.kv
    JsonLinesSensor,  # serial.json
    NmeaSensor,  # serial.nmea
    Pms5003Sensor,  # serial.pms5003
    Mhz19Sensor,  # serial.mhz19
    AnalogInput,  # analog.mcp3008
    Mcp3208Input,  # analog.mcp3208
    Ds18b20,  # onewire.ds18b20
    PulseMeter,  # gpio.pulse_meter
    Button,  # gpio.button
    RotaryEncoder,  # gpio.rotary_encoder
    Fan,  # gpio.fan
    Servo,  # gpio.servo
    Bme280,  # i2c.bme280
    Bmp280,  # i2c.bmp280
    Sht3x,  # i2c.sht3x
    Sht4x,  # i2c.sht4x
    Bh1750,  # i2c.bh1750
    Ads1115,  # i2c.ads1115
    ModbusLine,  # modbus.rtu
)
"""Every driver a ``config.toml`` may name; ``config.drivers()`` and the config's union of models come from here."""


def driver_class(name: str) -> type[Driver]:
    try:
        return DRIVERS[name]
    except KeyError:
        raise KeyError(unknown_driver_message(name)) from None


def unknown_driver_message(name: str) -> str:
    return f"unknown driver {name!r}{did_you_mean(name, DRIVERS)} (known: {', '.join(sorted(DRIVERS))})"
