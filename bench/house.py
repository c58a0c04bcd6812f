"""A small house for the benchmarks: config and rule files in a directory, built from real parts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

from tests.helpers import write_config

GPIO_RULES = """
version = 1
[[rules]]
id = "light_on_motion"
[[rules.triggers]]
type = "state"
entity = "motion"
to = true
[[rules.actions]]
type = "turn_on"
entity = "light"

[[rules]]
id = "light_off_when_still"
[[rules.triggers]]
type = "state"
entity = "motion"
to = false
[[rules.actions]]
type = "turn_off"
entity = "light"
"""


def house_config(
    directory: Path, *, mqtt_port: int = 1883, serial_port: str | None = None, gateway_id: str = "bench",
    rules: str = GPIO_RULES, extra: str = "",
) -> Path:
    """A config with a motion input on pin 17, a light relay on pin 22, and optionally a serial sensor."""
    serial = ""
    if serial_port is not None:
        serial = f"""
[[devices]]
id = "climate"
driver = "serial.kv"
port = "{serial_port}"
baudrate = 115200
[devices.fields.t]
entity = "temperature"
unit = "°C"
"""
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
{serial}""",
        rules,
    )


class TimedMockPin(MockPin):  # type: ignore[misc]
    """A gpiozero mock pin that stamps each change with ``perf_counter`` and wakes a waiter.

    gpiozero's own history records deltas on its own clock; a latency needs an absolute stamp taken
    at the instant the output changes, on the thread that changes it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.changed_at = 0.0
        self.changed = threading.Event()

    def _change_state(self, value: bool) -> bool:
        changed: bool = super()._change_state(value)
        if changed:
            self.changed_at = time.perf_counter()
            self.changed.set()
        return changed


def timed_pins() -> MockFactory:
    return MockFactory(pin_class=TimedMockPin)


def gateway_has_mqtt() -> bool:
    """True once the MQTT bridge (branch ``mqtt``) is on this tree."""
    return (Path(__file__).resolve().parent.parent / "gateway" / "mqtt" / "bridge.py").exists()
