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
) -> Path:
    """A config with a motion input on pin 17, a light relay on pin 22, and optionally a serial sensor."""
    serial = ""
    if serial_port is not None:
        serial = "\n" + toml.serial_kv("climate", "temperature", port=serial_port, baudrate=115200, unit="°C")
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
