"""Small builders shared by tests (not fixtures: plain functions read better at the call site)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.clock import VirtualClock
from core.entities import EntitySpec
from core.events import Event, EventFactory
from gateway.app import HealthSource
from gateway.mqtt.topics import Topics
from rules.commands import Validator

T = TypeVar("T")


def virtual_events() -> tuple[VirtualClock, EventFactory]:
    clock = VirtualClock()
    return clock, EventFactory(clock, boot="test")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll a real-world condition (a broker, a thread) with a deadline, never a fixed sleep;
    returns the predicate's first truthy result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(directory: Path, body: str, rules: str | None = None) -> Path:
    """A config.toml (and optionally one rule file) in ``directory``; returns the config path."""
    (directory / "rules.d").mkdir(exist_ok=True)
    if rules is not None:
        (directory / "rules.d" / "test.toml").write_text(rules)
    path = directory / "config.toml"
    path.write_text(body)
    return path


class Subscriber:
    """A real MQTT client that records every message under ``topic`` (JSON-decoded when it can)."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[tuple[str, Any, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError("subscriber did not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload.decode(errors="replace")
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def on(self, topic: str) -> list[Any]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@dataclass(slots=True, frozen=True)
class Registrations:
    """What a reload told the hub link (the arguments of ``update_registrations``)."""

    entities: dict[str, EntitySpec]
    commands: dict[str, Validator]
    discovery: list[tuple[str, str, Mapping[str, object]]]


class RecordingForwarder:
    """Stands in for the MQTT bridge where a test is about the gateway, not the broker: keeps every event,
    every re-registration after a reload, and reports the health sources the gateway adds. It satisfies
    the gateway's :class:`~gateway.app.HubLink` and :class:`~gateway.app.HealthReporting` as the bridge does."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.topics = Topics("gateway/test")
        self.registrations: list[Registrations] = []
        self.health_sources: dict[str, HealthSource] = {}

    def start(self) -> None: ...

    def forward(self, event: Event) -> None:
        self.events.append(event)

    def stop(self, timeout: float = 1.5) -> None: ...

    def update_registrations(
        self,
        entities: Mapping[str, EntitySpec],
        commands: Mapping[str, Validator],
        discovery: Iterable[tuple[str, str, Mapping[str, object]]],
    ) -> None:
        self.registrations.append(Registrations(dict(entities), dict(commands), list(discovery)))

    def add_health_source(self, name: str, source: HealthSource) -> None:
        self.health_sources[name] = source

    def health(self) -> dict[str, Any]:
        return {name: source() for name, source in self.health_sources.items()}
