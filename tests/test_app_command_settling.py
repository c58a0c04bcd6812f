"""The gateway tells its forwarder that a bus command and everything it caused were processed (the MQTT bridge then
answers a hub command that changed nothing ``done``), and tells it of nothing else: not of each reading (issue 14)."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from core.events import Event, Kind
from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder, write_config


class SettlingForwarder(RecordingForwarder):
    """A forwarder that, like the bridge, wants to hear when a command settled; notes how far forwarding was then."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: list[tuple[Event, int]] = []

    def settle(self, event: Event) -> None:
        self.settled.append((event, len(self.events)))


def test_the_forwarder_hears_a_command_settle_after_its_outcome_and_never_a_reading(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, toml.config(toml.gateway("settle"), toml.relay("light", 22)),
                                      rules="version = 1\n"))
    forwarder = SettlingForwarder()
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=forwarder)
    gateway.start()
    try:
        gateway.dispatcher.drain()
        before = len(forwarder.settled)
        gateway.bus.post(gateway.events.reading("outside", 4.5, "°C"))
        command = gateway.events.make(Kind.COMMAND, "light", True)
        gateway.bus.post(command)
        gateway.dispatcher.drain()
        [(settled, forwarded)] = forwarder.settled[before:]
        assert settled is command
        states = [i for i, e in enumerate(forwarder.events) if e.kind is Kind.STATE and e.cause == command.id]
        assert states and states[-1] < forwarded  # the command's outcome went out before it settled
    finally:
        gateway.shutdown()
