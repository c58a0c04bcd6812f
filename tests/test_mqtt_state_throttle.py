"""A reading's retained state is published at most once per entity per interval, the newest value last,
while the event stream keeps every reading (issue 14: fewer MQTT messages per reading; docs/mqtt.md)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.clock import VirtualClock
from core.events import EventFactory, Kind
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.retained import READING_STATE_INTERVAL, RetainedTopics
from gateway.mqtt.topics import Topics
from tests.conftest import Broker
from tests.mqtt_support import Harness, make_bridge, make_config, recorder, wait_until


class Sent:
    """What :meth:`RetainedTopics.send` hands paho, in order (the timing is the subject here, in virtual
    time; the real broker path is the test below)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        assert qos == 1 and retain
        self.messages.append((topic, payload))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def retained(clock: VirtualClock) -> RetainedTopics:
    topics = RetainedTopics(Topics("gateway/t"), {}, None, BridgeCounters(), lambda topic, payload: True,
                            monotonic=clock.monotonic)
    topics.send(Sent())  # nothing of the entities' availability left waiting
    return topics


def states(sent: Sent) -> list[bytes]:
    return [payload for topic, payload in sent.messages if topic == "gateway/t/state/temp"]


def test_the_first_reading_of_an_entity_is_retained_at_once(retained: RetainedTopics, clock: VirtualClock) -> None:
    events, sent = EventFactory(clock), Sent()
    retained.update_state(events.reading("temp", 21.5))
    retained.send(sent)
    assert states(sent) == [b"21.5"]


def test_readings_within_the_interval_are_held_and_the_newest_is_retained_when_it_ends(
    retained: RetainedTopics, clock: VirtualClock,
) -> None:
    events, sent = EventFactory(clock), Sent()
    retained.update_state(events.reading("temp", 21.0))
    retained.send(sent)
    for value in (21.1, 21.2, 21.3):
        clock.advance(READING_STATE_INTERVAL / 10)
        retained.update_state(events.reading("temp", value))
        retained.send(sent)
    assert states(sent) == [b"21.0"]
    wait = retained.wait()
    assert wait is not None and 0 < wait <= READING_STATE_INTERVAL
    clock.advance(wait)
    retained.send(sent)
    assert states(sent) == [b"21.0", b"21.3"]
    assert retained.wait() is None


def test_a_confirmed_actuator_state_is_never_held(retained: RetainedTopics, clock: VirtualClock) -> None:
    events, sent = EventFactory(clock), Sent()
    retained.update_state(events.reading("temp", 1))
    retained.update_state(events.make(Kind.STATE, "temp", 2))
    retained.send(sent)
    assert states(sent) == [b"1", b"2"] or states(sent) == [b"2"]
    clock.advance(READING_STATE_INTERVAL)
    retained.send(sent)
    assert states(sent)[-1] == b"2"  # a held reading never lands after, and overwrites, the newer state


def test_stopping_flushes_the_held_states(retained: RetainedTopics, clock: VirtualClock) -> None:
    events, sent = EventFactory(clock), Sent()
    retained.update_state(events.reading("temp", 1))
    retained.send(sent)
    retained.update_state(events.reading("temp", 2))
    retained.send(sent, flush=True)
    assert states(sent) == [b"1", b"2"]
    assert not retained.waiting


def test_a_republish_within_the_interval_sends_the_newest_held_reading(
    retained: RetainedTopics, clock: VirtualClock,
) -> None:
    events, sent = EventFactory(clock), Sent()
    retained.update_state(events.reading("temp", 1))
    retained.send(sent)
    retained.update_state(events.reading("temp", 2))
    retained.republish(removals=True)  # a reconnection before the interval ends
    retained.send(sent)
    assert states(sent) == [b"1", b"2"]


def test_a_held_reading_too_large_for_the_broker_is_refused_when_its_interval_ends(clock: VirtualClock) -> None:
    counters = BridgeCounters()
    retained = RetainedTopics(Topics("gateway/t"), {}, None, counters, lambda topic, payload: len(payload) < 100,
                              monotonic=clock.monotonic)
    events, sent = EventFactory(clock), Sent()
    retained.update_state(events.reading("temp", 1))
    retained.send(sent)
    retained.update_state(events.reading("temp", "x" * 200))
    clock.advance(READING_STATE_INTERVAL)
    retained.send(sent)
    assert states(sent) == [b"1"]
    assert counters.retained_refused == 1
    assert not retained.waiting


@pytest.fixture
def gw(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path) -> Iterator[Harness]:
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port))
    yield harness
    harness.bridge.stop()


def test_a_burst_of_readings_keeps_every_event_and_retains_a_few_states_the_newest_last(
    broker: Broker, gw: Harness,
) -> None:
    state, event = f"{gw.base}/state/living_temp", f"{gw.base}/event/living_temp"
    with recorder(broker.host, broker.port, state, event) as hub:
        gw.bridge.start()
        wait_until(lambda: gw.bridge.connected, what="connection")
        for n in range(500):
            gw.bridge.forward(gw.events.reading("living_temp", float(n), unit="°C"))
        assert [m.json()["value"] for m in hub.wait_for(event, count=500)] == [float(n) for n in range(500)]
        wait_until(lambda: bool(hub.on(state)) and hub.on(state)[-1].json() == 499.0, what="the newest state")
        assert len(hub.on(state)) <= 10, f"{len(hub.on(state))} state messages for a burst of 500 readings"


def test_entities_beyond_the_remembered_topics_each_get_their_own_state_topic(
    retained: RetainedTopics, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.mqtt.topics.TOPICS_REMEMBERED", 2)
    events, sent = EventFactory(clock), Sent()
    for entity in ("a", "b", "c", "d", "a", "d"):
        clock.advance(READING_STATE_INTERVAL)
        retained.update_state(events.reading(entity, float(ord(entity))))
    retained.send(sent)
    assert {topic: payload for topic, payload in sent.messages if "/state/" in topic} == {
        f"gateway/t/state/{entity}": f"{float(ord(entity))}".encode() for entity in "abcd"}
