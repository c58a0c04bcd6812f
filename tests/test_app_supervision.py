"""The app runs its drivers under supervision: one broken device never takes the house down."""

from __future__ import annotations

from pathlib import Path

from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from core.events import Event, Kind
from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder, write_config


def supervised_config(pin: str) -> str:
    """A relay that starts, and an input on ``pin`` (one that may not exist)."""
    return toml.config(toml.gateway("sup"), toml.relay("light", 22), toml.device("door", "gpio.input", pin=pin))


def test_a_device_that_cannot_start_is_reported_and_the_others_run_on(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, supervised_config("GPIO27"), rules="version = 1\n"))
    recorder = RecordingForwarder()
    pins = MockFactory()
    squatter = DigitalOutputDevice(27, pin_factory=pins)  # GPIO27 is taken: the door cannot open it
    gateway = Gateway(config, pin_factory=pins, forwarder=recorder)
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
        squatter.close()


def test_the_gateway_adds_the_drivers_health_to_a_forwarder_that_reports_health(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, supervised_config("GPIO27"), rules="version = 1\n"))
    recorder = RecordingForwarder()
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=recorder)
    gateway.start()
    try:
        assert recorder.health()["drivers"] == gateway.driver_health()
        assert set(gateway.driver_health()) == {"light", "door"}
    finally:
        gateway.shutdown()


class ForwardOnly:
    """All a forwarder must do: no hub link, no health reports."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def start(self) -> None: ...

    def forward(self, event: Event) -> None:
        self.events.append(event)

    def stop(self, timeout: float = 1.5) -> None: ...


def test_a_forwarder_that_only_forwards_is_enough_to_start_reload_and_stop(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, supervised_config("GPIO27"), rules="version = 1\n"))
    forwarder = ForwardOnly()
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=forwarder)
    gateway.start()
    try:
        assert gateway.reload()
        gateway.dispatcher.drain()
        assert any(e.kind is Kind.STATE and e.entity == "light" for e in forwarder.events)
    finally:
        gateway.shutdown()


def test_a_hub_link_is_told_the_rules_registrations_again_after_a_reload(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, supervised_config("GPIO27"), rules="version = 1\n"))
    recorder = RecordingForwarder()
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=recorder)
    assert gateway.reload()
    assert [set(r.entities) for r in recorder.registrations] == [{"light", "door"}]


def test_the_gateway_adds_the_historys_figures_to_the_health_reports(tmp_path: Path) -> None:
    # What the history thinned or dropped must be visible to the operator, not only counted.
    config = load_config(write_config(tmp_path, supervised_config("GPIO27"), rules="version = 1\n"))
    recorder = RecordingForwarder()
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=recorder)
    gateway.start()
    try:
        assert gateway.history is not None
        assert set(recorder.health()["history"]) >= {"written", "thinned", "dropped"}
    finally:
        gateway.shutdown()
