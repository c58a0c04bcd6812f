"""Helpers for the MQTT tests: a recording subscriber, polling with a deadline, bridge configs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.clock import SystemClock
from core.entities import Component, EntitySpec
from core.events import Event, EventFactory
from gateway.app import Gateway
from gateway.config import Config
from gateway.mqtt.bridge import MqttBridge
from tests.helpers import wait_until as wait_until  # noqa: PLC0414 (an explicit re-export, for mypy: the MQTT tests import it from here)

ENTITIES = {
    "hall_light": EntitySpec("hall_light", Component.LIGHT, safe_value=False),
    "heater": EntitySpec("heater", Component.SWITCH, safe_value=False),
    "siren": EntitySpec("siren", Component.SIREN, safe_value=False),
    "front_door": EntitySpec("front_door", Component.BINARY_SENSOR, device_class="door"),
    "living_temp": EntitySpec("living_temp", Component.SENSOR, unit="°C", device_class="temperature",
                              minimum=-40, maximum=85, report_interval=60),
}


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Recorder:
    """A real subscriber on the broker that keeps every message it receives."""

    client: mqtt.Client
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on(self, topic: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def matching(self, prefix: str) -> list[Message]:
        with self.lock:
            return [m for m in self.messages if m.topic.startswith(prefix)]

    def wait_for(self, topic: str, count: int = 1, timeout: float = 10.0) -> list[Message]:
        return wait_until(lambda: self.on(topic) if len(self.on(topic)) >= count else [],
                          timeout, f"{count} on {topic}")

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)


@contextmanager
def recorder(host: str, port: int, *topics: str, client_id: str = "",
             credentials: tuple[str, str] | None = None, session: bool = False) -> Iterator[Recorder]:
    """A real subscriber (QoS 1). With ``session``, a kept MQTT 5 session under ``client_id``: the
    broker queues for it while it or the broker is away, and it re-subscribes on every connection."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(1, 1)
    if credentials is not None:
        client.username_pw_set(*credentials)
    rec = Recorder(client)
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with rec.lock:
            rec.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on_connect(client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(t, 1) for t in topics])

    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *args: subscribed.set()
    properties = None
    if session:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's is unannotated
        properties.SessionExpiryInterval = 600
    client.connect(host, port, clean_start=not session, properties=properties)
    client.loop_start()
    assert subscribed.wait(5), "subscription not acknowledged"
    try:
        yield rec
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def running(gateway: Gateway) -> Iterator[Gateway]:
    """A started gateway whose dispatcher runs on a thread of its own; stopped and shut down on exit."""
    gateway.start()
    runner = threading.Thread(target=gateway.run, daemon=True)
    runner.start()
    try:
        yield gateway
    finally:
        gateway.request_stop()
        runner.join(timeout=5)
        gateway.shutdown()


def make_config(gateway_id: str, state_dir: Path, port: int, **mqtt: Any) -> Config:
    outbox = mqtt.pop("outbox", {})
    return Config.model_validate(
        {
            "gateway": {"id": gateway_id, "state_dir": str(state_dir)},
            "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min": 1, "reconnect_max": 2, **mqtt},
            "outbox": {"batch_ms": 5, "synchronous": "OFF", **outbox},
        }
    )


@dataclass
class Harness:
    """A bridge with what the app would give it: a bus stand-in that records posted events."""

    bridge: MqttBridge
    events: EventFactory
    posted: list[Event]

    @property
    def base(self) -> str:
        return self.bridge.topics.base


def bridge_of(gateway: Gateway) -> MqttBridge:
    """The gateway's MQTT bridge (its forwarder when MQTT is configured), for tests that read its counters."""
    assert isinstance(gateway.forwarder, MqttBridge), gateway.forwarder
    return gateway.forwarder


def make_bridge(config: Config, entities: dict[str, EntitySpec] | None = None) -> Harness:
    events = EventFactory(SystemClock())
    posted: list[Event] = []
    bridge = MqttBridge(config, ENTITIES if entities is None else entities, posted.append, events)
    return Harness(bridge, events, posted)


def house_bridge_config(central_port: int, name: str = "uplink", prefix: str = "gateway/#",
                        restart_timeout: int = 1) -> str:
    """The house broker's Mosquitto bridge to a central broker, as docs/fleet.md recommends: the gateway
    tree goes *out* at QoS 1 over a kept session (``cleansession false``), so while the uplink is down
    the house broker queues it (bounded by ``max_queued_messages``) and sends it when the link returns."""
    return (
        f"connection {name}\n"
        f"address 127.0.0.1:{central_port}\n"
        f"topic {prefix} out 1\n"
        "cleansession false\n"
        f"clientid {name}-bridge\n"
        "bridge_protocol_version mqttv311\n"
        "notifications false\n"
        "start_type automatic\n"
        f"restart_timeout {restart_timeout}\n"
        "try_private true\n"
    )


def stream_main(argv: list[str]) -> None:
    """``python -m tests.mqtt_support ID STATE_DIR PORT COUNT RATE``: a gateway process for kill tests.

    Forwards COUNT readings (values 0..COUNT-1) at RATE a second through a real
    bridge and outbox (synchronous NORMAL, as in production) and prints
    ``committed <seq>`` whenever the outbox's committed seq moves, so the test
    knows exactly what was on disk when it killed the process. With COUNT 0 it
    only drains what an earlier run left and prints ``drained``.
    """
    gateway_id, state_dir, port, count, rate = argv[0], Path(argv[1]), int(argv[2]), int(argv[3]), float(argv[4])
    config = make_config(gateway_id, state_dir, port, outbox={"synchronous": "NORMAL", "batch_ms": 10},
                         drain_rate=100_000)
    harness = make_bridge(config)
    bridge = harness.bridge
    bridge.start()
    reported = -1

    def report() -> None:
        nonlocal reported
        committed = bridge.outbox.committed_seq
        if committed != reported:
            reported = committed
            print(f"committed {committed}", flush=True)

    started = time.monotonic()
    for i in range(count):
        bridge.forward(harness.events.reading("living_temp", i))
        if i % 10 == 0:
            report()
            pause = started + (i + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (bridge.outbox.depth > 0 or not bridge.connected):
        report()
        time.sleep(0.01)
    report()
    bridge.stop()
    print("drained", flush=True)


if __name__ == "__main__":
    import sys

    stream_main(sys.argv[1:])
