"""examples/fleet_consumer.py: a shared subscription spreads the fleet's events over the consumer
instances, and the check by event id lets each event through once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from core.clock import SystemClock
from core.events import EventFactory
from examples.fleet_consumer import FleetConsumer, SeenIds
from gateway.mqtt.topics import event_payload
from tests.conftest import Broker
from tests.mqtt_support import make_bridge, make_config, recorder, wait_until


class Sink:
    """Where the consumers write (a database, in real life): what arrived, by consumer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[str, str, Any]] = []

    def writer(self, name: str) -> Any:
        def write(gateway: str, event: dict[str, Any]) -> None:
            with self.lock:
                self.rows.append((name, gateway, event["id"]))
        return write


def test_two_consumers_share_the_fleets_events_and_none_is_handled_twice(broker: Broker, tmp_path: Path) -> None:
    sink, seen = Sink(), SeenIds()
    consumers = [FleetConsumer(broker.host, broker.port, "fleet-test", sink.writer(name), seen=seen)
                 for name in ("c1", "c2")]
    gateways = [make_bridge(make_config(f"fleet-{n}", tmp_path / f"state-{n}", broker.port, drain_rate=100_000))
                for n in range(3)]
    for consumer in consumers:
        consumer.start()
        assert consumer.subscribed.wait(5)
    try:
        for harness in gateways:
            harness.bridge.start()
        for i in range(100):
            for harness in gateways:
                harness.bridge.forward(harness.events.reading("living_temp", i))
        wait_until(lambda: len(sink.rows) >= 300, 20, "300 events through the consumers")
    finally:
        for harness in gateways:
            harness.bridge.stop()
        for consumer in consumers:
            consumer.stop()
    ids = [row[2] for row in sink.rows]
    assert len(ids) == len(set(ids)) == 300
    per_consumer = {name: sum(1 for row in sink.rows if row[0] == name) for name in ("c1", "c2")}
    assert min(per_consumer.values()) >= 50, per_consumer  # both took a real share of the load
    assert {row[1] for row in sink.rows} == {"fleet-0", "fleet-1", "fleet-2"}


def test_a_redelivered_event_is_handled_once(broker: Broker) -> None:
    sink = Sink()
    consumer = FleetConsumer(broker.host, broker.port, "fleet-dup", sink.writer("c1"))
    consumer.start()
    assert consumer.subscribed.wait(5)
    event = EventFactory(SystemClock()).reading("living_temp", 21.5)
    payload = event_payload(event, 1)
    try:
        with recorder(broker.host, broker.port, "gateway/dup-gw/#") as gateway:
            gateway.publish("gateway/dup-gw/event/living_temp", payload)
            gateway.publish("gateway/dup-gw/event/living_temp", payload)  # an at-least-once re-send
            wait_until(lambda: consumer.received >= 2, 10, "both copies delivered")
    finally:
        consumer.stop()
    assert sink.rows == [("c1", "dup-gw", event.id)]
    assert consumer.seen.duplicates == 1
