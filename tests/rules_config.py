"""A config.toml declaring the demo house (plus a leak sensor), for check/simulate/reload tests."""

from __future__ import annotations

from pathlib import Path

from gateway.config import Config, load_config

DEVICES = """
[[devices]]
id = "hall_motion"
driver = "gpio.motion"
pin = 17

[[devices]]
id = "front_door"
driver = "gpio.input"
pin = 27
device_class = "door"

[[devices]]
id = "water_leak"
driver = "gpio.input"
pin = 5
device_class = "moisture"

[[devices]]
id = "living_room_climate"
driver = "serial.kv"
port = "loop://"
[devices.fields.t]
entity = "living_temperature"
unit = "°C"
device_class = "temperature"

[[devices]]
id = "hall_light"
driver = "gpio.relay"
pin = 22
component = "light"

[[devices]]
id = "heater"
driver = "gpio.relay"
pin = 23

[[devices]]
id = "siren"
driver = "gpio.relay"
pin = 24
component = "siren"
"""


def write_house_config(directory: Path, rules_dir: Path, timezone: str = "Europe/London") -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[gateway]\nid = "test-house"\ntimezone = "{timezone}"\nstate_dir = "{directory / "state"}"\n'
        f'[rules]\ndir = "{rules_dir}"\n' + DEVICES
    )
    return path


def house_config(directory: Path, rules_dir: Path, timezone: str = "Europe/London") -> Config:
    return load_config(write_house_config(directory, rules_dir, timezone))
