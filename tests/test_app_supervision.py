"""The app runs its drivers under supervision: one broken device never takes the house down."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from core.events import Kind
from gateway.app import Gateway
from gateway.config import load_config
from tests.helpers import RecordingForwarder, write_config

CONFIG = """
[gateway]
id = "sup"
state_dir = "state"

[[devices]]
id = "light"
driver = "gpio.relay"
pin = 22

[[devices]]
id = "door"
driver = "gpio.input"
pin = "{pin}"
"""


def test_a_device_that_cannot_start_is_reported_and_the_others_run_on(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, CONFIG.format(pin="GPIO99"), rules="version = 1\n"))
    recorder = RecordingForwarder()
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=recorder)
    gateway.start()
    try:
        gateway.dispatcher.drain()
        assert [d.id for d in gateway.running] == ["light"]
        assert "door" in gateway.failed
        unavailable = [e for e in recorder.events if e.kind is Kind.AVAILABILITY and e.entity == "door"]
        assert unavailable and unavailable[-1].value is False
        assert gateway.driver_health()["door"]["status"] in {"failed", "restarting"}
    finally:
        gateway.shutdown()
