"""A config.toml declaring the demo house (plus a leak sensor), for check/simulate/reload tests."""

from __future__ import annotations

from pathlib import Path

from gateway.config import Config, load_config
from tests import toml_kit as toml

DEVICES = "\n" + toml.config(
    toml.motion("hall_motion", 17),
    toml.device("front_door", "gpio.input", pin=27, device_class="door"),
    toml.device("water_leak", "gpio.input", pin=5, device_class="moisture"),
    toml.serial_kv("living_room_climate", "living_temperature", unit="°C", device_class="temperature"),
    toml.relay("hall_light", 22, component="light"),
    toml.relay("heater", 23),
    toml.relay("siren", 24, component="siren"),
)


def write_house_config(directory: Path, rules_dir: Path, timezone: str = "Europe/London") -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[gateway]\nid = "test-house"\ntimezone = "{timezone}"\nstate_dir = "{directory / "state"}"\n'
        f'[rules]\ndir = "{rules_dir}"\n' + DEVICES
    )
    return path


def house_config(directory: Path, rules_dir: Path, timezone: str = "Europe/London") -> Config:
    return load_config(write_house_config(directory, rules_dir, timezone))
