"""The closed catalogue from a config ``driver = "..."`` name to a driver class.

New hardware is one module and one line in :data:`DRIVERS`. Hardware
libraries are imported inside the driver modules' ``start``, so this package
imports on any machine.
"""

from __future__ import annotations

import difflib

from drivers.actuators import PwmLight, Relay, Siren
from drivers.analog import AnalogInput, Mcp3208Input
from drivers.base import Driver
from drivers.gpio import DigitalInput, MotionSensor
from drivers.onewire import Ds18b20
from drivers.serial_line import JsonLinesSensor, KeyValueSensor, Mhz19Sensor, NmeaSensor, Pms5003Sensor

DRIVERS: dict[str, type[Driver]] = {
    "gpio.input": DigitalInput,
    "gpio.motion": MotionSensor,
    "gpio.relay": Relay,
    "gpio.pwm_light": PwmLight,
    "gpio.siren": Siren,
    "serial.kv": KeyValueSensor,
    "serial.json": JsonLinesSensor,
    "serial.nmea": NmeaSensor,
    "serial.pms5003": Pms5003Sensor,
    "serial.mhz19": Mhz19Sensor,
    "analog.mcp3008": AnalogInput,
    "analog.mcp3208": Mcp3208Input,
    "onewire.ds18b20": Ds18b20,
}


def driver_class(name: str) -> type[Driver]:
    try:
        return DRIVERS[name]
    except KeyError:
        raise KeyError(unknown_driver_message(name)) from None


def unknown_driver_message(name: str) -> str:
    close = difflib.get_close_matches(name, DRIVERS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown driver {name!r}{hint} (known: {', '.join(sorted(DRIVERS))})"
