"""Messages that do not come from an entity's own events: rule ``publish`` actions and oversized states."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.clock import VirtualClock
from core.events import PUBLISH_ENTITY, EventFactory, Kind, PublishRequest, publish_request
from tests.conftest import Broker
from tests.mqtt_support import make_bridge, make_config, recorder, wait_until


def test_a_rules_publish_action_arrives_on_its_topic_under_the_base(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("publish", tmp_path / "state", broker.port))
    topic = "gateway/publish/notify/leak"
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        message = json.dumps({"topic": "notify/leak", "payload": "Water under the sink", "retain": False})
        harness.bridge.forward(harness.events.make(Kind.SYSTEM, PUBLISH_ENTITY, message, rule="leak_notify"))
        got = hub.wait_for(topic)
        harness.bridge.stop()
    assert [m.payload for m in got] == [b"Water under the sink"]
    assert not got[0].retain


def test_a_rules_publish_action_costs_its_message_alone_not_a_copy_on_the_event_stream(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("publish-once", tmp_path / "state", broker.port))
    with recorder(broker.host, broker.port, "gateway/publish-once/#") as hub:
        harness.bridge.start()
        message = json.dumps({"topic": "notify/leak", "payload": "Water under the sink", "retain": False})
        harness.bridge.forward(harness.events.make(Kind.SYSTEM, PUBLISH_ENTITY, message, rule="leak_notify"))
        harness.bridge.forward(harness.events.reading("living_temp", 21.5))  # after it, in order
        hub.wait_for("gateway/publish-once/event/living_temp")
        harness.bridge.stop()
    assert hub.on("gateway/publish-once/notify/leak")
    assert not hub.on(f"gateway/publish-once/event/{PUBLISH_ENTITY}")
    assert harness.bridge.outbox.depth == 0


def test_a_state_too_large_for_the_broker_is_refused_and_the_link_stays_up(
    private_broker: Broker, tmp_path: Path
) -> None:
    private_broker.stop()
    private_broker.extra_config = "max_packet_size 4096\n"
    private_broker.start()
    harness = make_bridge(make_config("big-state", tmp_path / "state", private_broker.port))
    topic = "gateway/big-state/state/living_temp"
    with recorder(private_broker.host, private_broker.port, topic) as hub:
        harness.bridge.start()
        wait_until(lambda: harness.bridge.connected, what="connection")
        harness.bridge.forward(harness.events.reading("living_temp", "x" * 10_000))
        harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        wait_until(lambda: any(m.payload == b"21.5" for m in hub.on(topic)), what="the next state")
        harness.bridge.stop()
    assert harness.bridge.counters.retained_refused == 1
    assert harness.bridge.counters.disconnects == 0


def test_a_publish_request_travels_as_the_json_text_the_rules_have_always_emitted() -> None:
    request = PublishRequest("notify/leak", "Water under the sink", retain=True)
    wire = json.dumps({"topic": "notify/leak", "payload": "Water under the sink", "retain": True})
    assert request.to_json() == wire
    assert PublishRequest.from_json(wire) == request


def test_a_publish_event_is_read_into_its_request_and_any_other_event_into_none() -> None:
    events = EventFactory(VirtualClock())
    wire = json.dumps({"topic": "notify/leak", "payload": "Water under the sink", "retain": False})
    assert publish_request(events.make(Kind.SYSTEM, PUBLISH_ENTITY, wire)) == PublishRequest(
        "notify/leak", "Water under the sink", retain=False)
    assert publish_request(events.make(Kind.SYSTEM, "gateway", "started")) is None
    assert publish_request(events.make(Kind.STATE, PUBLISH_ENTITY, wire)) is None


@pytest.mark.parametrize(
    "value",
    ["not json", '["notify/leak"]', '{"payload": "no topic"}', '{"topic": ""}', '{"topic": 5}',
     '{"topic": "a", "payload": {"x": 1}}', '{"topic": "a", "retain": "yes"}', "[" * 100_000, None, 3],
)
def test_a_malformed_publish_event_is_refused_with_a_reason(value: str | int | None) -> None:
    event = EventFactory(VirtualClock()).make(Kind.SYSTEM, PUBLISH_ENTITY, value)
    with pytest.raises(ValueError, match=r"."):
        publish_request(event)


def test_a_malformed_publish_event_is_logged_and_the_bridge_carries_on(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = make_bridge(make_config("publish-bad", tmp_path / "state", broker.port))
    bad = harness.events.make(Kind.SYSTEM, PUBLISH_ENTITY, '{"payload": "no topic"}', rule="leak_notify")
    with caplog.at_level(logging.ERROR):
        harness.bridge.forward(bad)
    harness.bridge.stop()
    assert any("malformed" in r.getMessage() and bad.id in r.getMessage() for r in caplog.records)
    assert harness.bridge.counters.events_in == 1
