"""Benchmark parts around the house of tests/houses.py: timed mock pins, and whether MQTT is there."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin


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
