"""The app runs its drivers under supervision: one broken device never takes the house down."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from core.events import Kind
from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder, write_config


def supervised_config(pin: str) -> str:
    """A relay that starts, and an input on ``pin`` (one that may not exist)."""
    return toml.config(toml.gateway("sup"), toml.relay("light", 22), toml.device("door", "gpio.input", pin=pin))


def test_a_device_that_cannot_start_is_reported_and_the_others_run_on(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, supervised_config("GPIO99"), rules="version = 1\n"))
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
