"""A small house of real parts for tests and benchmarks: a PIR, a light relay, optionally a serial sensor."""

from __future__ import annotations

from pathlib import Path

from tests import toml_kit as toml
from tests.helpers import write_config

GPIO_RULES = ("version = 1\n" + toml.state_rule("light_on_motion", "motion", True, "turn_on", "light")
              + toml.state_rule("light_off_when_still", "motion", False, "turn_off", "light"))


def house_config(
    directory: Path, *, mqtt_port: int = 1883, serial_port: str | None = None, gateway_id: str = "bench",
    rules: str = GPIO_RULES, extra: str = "", light_active_low: bool = False, light_envelope: str = "",
    serial_rate: float | None = None,
) -> Path:
    """A config with a motion input on pin 17, a light relay on pin 22, and optionally a serial sensor
    (``serial_rate``: its declared ``max_lines_per_s``; beyond the default a stream is a flood, read coalesced)."""
    serial = ""
    if serial_port is not None:
        serial = "\n" + (
            toml.serial_kv("climate", "temperature", port=serial_port, baudrate=115200, unit="°C")
            if serial_rate is None else
            toml.serial_kv("climate", "temperature", port=serial_port, baudrate=115200, unit="°C",
                           max_lines_per_s=serial_rate))
    return write_config(
        directory,
        f"""
[gateway]
id = "{gateway_id}"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
reconnect_max = 1
{extra}
[[devices]]
id = "motion"
driver = "gpio.motion"
pin = 17

[[devices]]
id = "light"
driver = "gpio.relay"
pin = 22
component = "light"
active_high = {"false" if light_active_low else "true"}
{f"envelope = {light_envelope}" if light_envelope else ""}
{serial}""",
        rules,
    )


DRIVERS_HOUSE = """
[[devices]]
id = "house_energy"
driver = "gpio.pulse_meter"
pin = 19
meter = "energy"
pulses_per_unit = 1000
initial_total = 12345.6

[[devices]]
id = "cold_water"
driver = "gpio.pulse_meter"
pin = 26
meter = "water"
unit = "L"
pulses_per_unit = 1
debounce_ms = 50

[[devices]]
id = "hall_button"
driver = "gpio.button"
pin = 16

[[devices]]
id = "lounge_knob"
driver = "gpio.rotary_encoder"
a_pin = 23
b_pin = 25
step = 5
unit = "%"

[[devices]]
id = "attic_fan"
driver = "gpio.fan"
pin = 12
min_duty = 25
kick_start_ms = 500

[[devices]]
id = "vent_flap"
driver = "gpio.servo"
pin = 13
limits = [0, 90]
safe_angle = 0

[[devices]]
id = "lounge"
driver = "i2c.bme280"
address = 0x76

[[devices]]
id = "adc"
driver = "i2c.ads1115"
address = 0x49
channels = [
  { id = "supply_5v", input = "A0", full_scale = 6.144, scale = 2, unit = "V" },
  { id = "water_tank", input = "A1", full_scale = 4.096, scale = 25, offset = -12.5, unit = "%" },
]

[[devices]]
id = "rs485"
driver = "modbus.rtu"
port = "/dev/ttyUSB0"

[[devices.slaves]]
slave = 1
name = "house meter"
preset = "sdm120"
prefix = "mains"

[[devices.slaves]]
slave = 2
name = "heat pump"

[[devices.slaves.setpoints]]
entity = "heatpump_flow_setpoint"
address = 300
scale = 0.1
minimum = 25
maximum = 55
safe_value = 35
unit = "°C"
device_class = "temperature"
"""
"""One of each driver of issue 13 (pulse meters for energy and water, a button, a rotary encoder, a fan, a
servo, a BME280, an ADS1115, a Modbus line with an SDM120 and a heat pump's setpoint): the house
``scripts/ha_check.py --house drivers`` runs against a real Home Assistant."""


def drivers_house(directory: Path, *, mqtt_port: int = 1883, gateway_id: str = "drivers") -> Path:
    """A config with :data:`DRIVERS_HOUSE`'s devices and no rules, for ``--simulate``."""
    return write_config(
        directory,
        f'[gateway]\nid = "{gateway_id}"\nstate_dir = "state"\n\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
        '\n[rules]\ndir = "rules.d"\n' + DRIVERS_HOUSE,
    )
