"""``[mqtt] event_batches``: the opt-in event stream on ``<base>/events`` (issue 14: paho's cost is per message, so
10,000 lines/s need fewer messages). Every message there is a JSON array of 1..``event_batch_max`` event objects in
``seq`` order; one alone when nothing waits, as many as wait (up to the caps) under a backlog. Delivery is the
outbox's: at least once, in order, one PUBACK for the whole array."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.events import PUBLISH_ENTITY, Kind
from gateway.config import MqttSection
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.window import BATCH_FROM_INFLIGHT, PublishWindow
from tests.conftest import Broker
from tests.mqtt_support import Harness, Message, make_bridge, make_config, recorder, wait_until


def events_in(messages: list[Message]) -> list[dict[str, Any]]:
    """The event objects of the stream's arrays, in the order they arrived."""
    found: list[dict[str, Any]] = []
    for message in messages:
        batch = message.json()
        assert isinstance(batch, list), message.payload
        assert batch, "an empty array"
        found.extend(batch)
    return found


def connected(harness: Harness) -> None:
    harness.bridge.start()
    wait_until(lambda: harness.bridge.connected, what="connection")
    wait_until(lambda: not harness.bridge.window.resuming, what="the publisher's first round after the connection")


def test_with_event_batches_on_events_arrive_as_arrays_on_the_events_topic_in_seq_order(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("batches", tmp_path / "state", broker.port, event_batches=True))
    with recorder(broker.host, broker.port, "gateway/batches/#") as hub:
        connected(harness)
        harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        harness.bridge.forward(harness.events.make(Kind.STATE, "hall_light", True))
        harness.bridge.forward(harness.events.reading("living_temp", 22.0))
        wait_until(lambda: len(events_in(hub.on("gateway/batches/events"))) >= 3, what="three events")
        harness.bridge.stop()
    got = events_in(hub.on("gateway/batches/events"))
    assert [(e["entity"], e["value"]) for e in got] == [("living_temp", 21.5), ("hall_light", True),
                                                        ("living_temp", 22.0)]
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    assert got[0]["kind"] == "reading" and got[0]["id"]
    assert not hub.matching("gateway/batches/event/")


def test_at_a_low_rate_each_array_holds_one_event(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("batches-one", tmp_path / "state", broker.port, event_batches=True))
    topic = "gateway/batches-one/events"
    with recorder(broker.host, broker.port, topic) as hub:
        connected(harness)
        for n in range(3):
            harness.bridge.forward(harness.events.reading("living_temp", 20.0 + n))
            hub.wait_for(topic, n + 1)
        harness.bridge.stop()
    assert [len(m.json()) for m in hub.on(topic)] == [1, 1, 1]


def test_a_backlog_after_an_outage_is_sent_as_arrays_of_at_most_event_batch_max(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("batches-backlog", tmp_path / "state", broker.port, event_batches=True,
                                      event_batch_max=10))
    topic = "gateway/batches-backlog/events"
    for n in range(95):  # not connected yet: every row waits in the outbox
        harness.bridge.forward(harness.events.reading("living_temp", n))
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        wait_until(lambda: len(events_in(hub.on(topic))) >= 95, what="the backlog")
        wait_until(lambda: harness.bridge.window.drained, what="every row acknowledged")
        harness.bridge.stop()
    sizes = [len(m.json()) for m in hub.on(topic)]
    got = events_in(hub.on(topic))
    assert [e["value"] for e in got] == list(range(95))
    assert max(sizes) == 10
    assert len(sizes) == 10  # 9 full arrays and the last 5
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)


def test_a_backlog_longer_than_the_outbox_reads_at_a_time_is_still_sent_as_full_arrays(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("batches-long", tmp_path / "state", broker.port, event_batches=True))
    topic = "gateway/batches-long/events"
    for n in range(1000):
        harness.bridge.forward(harness.events.reading("living_temp", n))
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        wait_until(lambda: len(events_in(hub.on(topic))) >= 1000, what="the backlog")
        harness.bridge.stop()
    assert [len(m.json()) for m in hub.on(topic)] == [50] * 20
    assert [e["value"] for e in events_in(hub.on(topic))] == list(range(1000))


def test_an_array_is_never_larger_than_event_batch_bytes(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("batches-bytes", tmp_path / "state", broker.port, event_batches=True,
                                      event_batch_bytes=1024))
    topic = "gateway/batches-bytes/events"
    for n in range(60):
        harness.bridge.forward(harness.events.reading("living_temp", n))
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        wait_until(lambda: len(events_in(hub.on(topic))) >= 60, what="the backlog")
        harness.bridge.stop()
    sizes = [len(m.payload) for m in hub.on(topic)]
    assert max(sizes) <= 1024
    assert len(sizes) < 60 / 2  # arrays, not one event a message
    assert [e["value"] for e in events_in(hub.on(topic))] == list(range(60))


def test_a_flood_while_connected_goes_out_as_arrays_in_order(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("batches-flood", tmp_path / "state", broker.port, event_batches=True,
                                      max_inflight=4))
    topic = "gateway/batches-flood/events"
    with recorder(broker.host, broker.port, topic) as hub:
        connected(harness)
        for n in range(2000):
            harness.bridge.forward(harness.events.reading("living_temp", n))
        wait_until(lambda: len(events_in(hub.on(topic))) >= 2000, what="the flood")
        harness.bridge.stop()
    assert [e["value"] for e in events_in(hub.on(topic))] == list(range(2000))
    assert len(hub.on(topic)) < 1000


def test_a_rule_publish_in_the_backlog_is_sent_alone_and_in_order(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("batches-publish", tmp_path / "state", broker.port, event_batches=True))
    base = "gateway/batches-publish"
    for n in range(10):
        harness.bridge.forward(harness.events.reading("living_temp", n))
    request = json.dumps({"topic": "notify/leak", "payload": "Water under the sink", "retain": False})
    harness.bridge.forward(harness.events.make(Kind.SYSTEM, PUBLISH_ENTITY, request, rule="leak_notify"))
    for n in range(10, 20):
        harness.bridge.forward(harness.events.reading("living_temp", n))
    with recorder(broker.host, broker.port, f"{base}/events", f"{base}/notify/leak") as hub:
        harness.bridge.start()
        wait_until(lambda: len(events_in(hub.on(f"{base}/events"))) >= 20, what="the backlog")
        hub.wait_for(f"{base}/notify/leak")
        harness.bridge.stop()
    arrival = [("publish", m.payload.decode()) if m.topic.endswith("leak")
               else ("events", [e["value"] for e in m.json()]) for m in hub.messages]
    assert arrival == [("events", list(range(10))), ("publish", "Water under the sink"),
                       ("events", list(range(10, 20)))]


class HeldAcks:
    """Stands between paho and the window: the PUBACKs of the stream's arrays are kept until :meth:`release` (a
    broker slow to acknowledge them); the other acks (retained states, status) pass at once."""

    def __init__(self, harness: Harness) -> None:
        self.window = harness.bridge.window
        self.stream = harness.bridge.topics.events
        self.arrays: set[int] = set()
        """paho's message ids of the arrays published."""
        self.held: list[tuple[Any, ...]] = []
        client = harness.bridge.link.client
        self._publish = client.publish
        client.publish = self.publish  # type: ignore[method-assign]
        harness.bridge.link.acks_to(self.hold)

    def publish(self, topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> mqtt.MQTTMessageInfo:
        info = self._publish(topic, payload, *args, **kwargs)
        if topic == self.stream:
            self.arrays.add(info.mid)
        return info

    def hold(self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
             properties: Properties | None) -> None:
        if mid in self.arrays:
            self.held.append((client, userdata, mid, reason, properties))
        else:
            self.window.on_publish(client, userdata, mid, reason, properties)

    def release(self) -> None:
        for ack in self.held:
            self.window.on_publish(*ack)
        self.held.clear()


def test_with_the_default_window_events_go_alone_until_25_wait_for_their_acks(tmp_path: Path) -> None:
    """A fixed count, not a quarter of the window: with the default window of 1,000 a quarter was 250 messages in
    flight before the rows were left to the publisher's arrays (1.4 to 3 times the messages at 5,000-10,000
    events/s)."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    stream = "gateway/t/events"
    window = PublishWindow(outbox, BridgeCounters(), size=MqttSection().max_inflight, drain_rate=1000.0,
                           wake=lambda: None, stream=stream, batch_max=50, batching=True)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="window-test")  # offline: it keeps what it is given
    window.send(client)  # the publisher has caught up: the forwarding thread may hand rows over
    handed = []
    for _ in range(40):  # no PUBACK comes: every message handed over stays in flight
        seq = outbox.add(stream, lambda seq: b'{"seq": %d}' % seq, ts=0.0)
        assert seq is not None
        handed.append(window.hand_over(client, seq, stream, b"{}"))
    outbox.close()
    assert handed == [True] * BATCH_FROM_INFLIGHT + [False] * (40 - BATCH_FROM_INFLIGHT)


def test_the_rows_of_an_array_leave_the_outbox_only_when_its_puback_arrives(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("batches-ack", tmp_path / "state", broker.port, event_batches=True,
                                      event_batch_max=10))
    topic = "gateway/batches-ack/events"
    acks = HeldAcks(harness)
    for n in range(20):
        harness.bridge.forward(harness.events.reading("living_temp", n))
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        wait_until(lambda: len(events_in(hub.on(topic))) >= 20, what="the arrays")
        wait_until(lambda: len(acks.held) == len(hub.on(topic)), what="a PUBACK for each array")
        assert len(acks.held) < 20
        harness.bridge.outbox.commit()
        assert harness.bridge.outbox.depth == 20
        acks.release()
        wait_until(lambda: harness.bridge.outbox.depth == 0, what="the rows deleted")
        harness.bridge.stop()
    assert harness.bridge.counters.events_out == 20


def test_an_array_never_acknowledged_is_sent_again_after_a_restart(broker: Broker, tmp_path: Path) -> None:
    config = make_config("batches-restart", tmp_path / "state", broker.port, event_batches=True)
    topic = "gateway/batches-restart/events"
    first = make_bridge(config)
    HeldAcks(first)
    for n in range(5):
        first.bridge.forward(first.events.reading("living_temp", n))
    with recorder(broker.host, broker.port, topic) as hub:
        first.bridge.start()
        wait_until(lambda: len(events_in(hub.on(topic))) >= 5, what="the first sending")
        first.bridge.stop(timeout=0.6)
        sent = events_in(hub.on(topic))
        hub.clear()
        second = make_bridge(config)
        second.bridge.start()
        wait_until(lambda: len(events_in(hub.on(topic))) >= 5, what="the rows sent again")
        wait_until(lambda: second.bridge.window.drained, what="acknowledged this time")
        second.bridge.stop()
    again = events_in(hub.on(topic))
    assert [e["id"] for e in again] == [e["id"] for e in sent]  # duplicates by id, which the hub drops
    assert [e["seq"] for e in again] == [e["seq"] for e in sent]


def test_with_event_batches_off_events_go_to_their_entitys_topic_and_nothing_to_the_stream(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("batches-off", tmp_path / "state", broker.port))
    with recorder(broker.host, broker.port, "gateway/batches-off/#") as hub:
        connected(harness)
        harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        got = hub.wait_for("gateway/batches-off/event/living_temp")
        harness.bridge.stop()
    assert got[0].json()["value"] == 21.5
    assert not hub.on("gateway/batches-off/events")


def test_an_overflowing_stream_keeps_the_newest_reading_of_each_entity(tmp_path: Path) -> None:
    """Coalescing keeps each entity's newest reading (docs/mqtt.md, *What is lost first*): all entities sharing the
    stream's topic must not make one entity's reading supersede another's."""
    harness = make_bridge(make_config("batches-shed", tmp_path / "state", 1, event_batches=True,
                                      outbox={"max_events": 100}))
    harness.bridge.forward(harness.events.reading("front_door", True))
    for n in range(150):
        harness.bridge.forward(harness.events.reading("living_temp", n))
    harness.bridge.outbox.commit()
    kept = [json.loads(row.payload) for row in harness.bridge.outbox.fetch(0, 1000)]
    harness.bridge.outbox.close()
    assert len(kept) == 100
    assert [e["value"] for e in kept if e["entity"] == "front_door"] == [True]
    assert [e["value"] for e in kept if e["entity"] == "living_temp"][-1] == 149


def test_an_outbox_reopened_keeps_the_newest_reading_of_each_entity_of_the_stream(tmp_path: Path) -> None:
    config = make_config("batches-shed-again", tmp_path / "state", 1, event_batches=True,
                         outbox={"max_events": 100})
    first = make_bridge(config)
    first.bridge.forward(first.events.reading("front_door", True))
    for n in range(60):
        first.bridge.forward(first.events.reading("living_temp", n))
    first.bridge.outbox.close()
    second = make_bridge(config)
    for n in range(60, 100):
        second.bridge.forward(second.events.reading("living_temp", n))
    second.bridge.outbox.commit()
    kept = [json.loads(row.payload) for row in second.bridge.outbox.fetch(0, 1000)]
    second.bridge.outbox.close()
    assert [e["value"] for e in kept if e["entity"] == "front_door"] == [True]
