"""Events are handed to paho on the forwarding (dispatcher) thread when the publish window has room (issue 14:
the publisher thread's wake-up per event was a fifth of the process). The outbox's contract is unchanged: the
row is in the outbox before paho has it, it is committed within the batch window, and rows go out in ``seq``
order whichever thread hands them over."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.conftest import Broker
from tests.mqtt_support import Harness, make_bridge, make_config, recorder, wait_until


class Handed:
    """Wraps the uplink's real ``publish``: per event row handed to paho, the thread and the outbox then."""

    def __init__(self, harness: Harness) -> None:
        self.outbox = harness.bridge.outbox
        self.calls: list[dict[str, Any]] = []
        client = harness.bridge.link.client
        self._publish = client.publish
        client.publish = self  # type: ignore[method-assign]

    def __call__(self, topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> mqtt.MQTTMessageInfo:
        if "/event/" in topic:
            seq = json.loads(payload)["seq"]
            self.calls.append({"thread": threading.current_thread(), "seq": seq,
                               "in_outbox": [row.seq for row in self.outbox.fetch(seq - 1, 1)] == [seq]})
        return self._publish(topic, payload, *args, **kwargs)


def connected(harness: Harness) -> None:
    harness.bridge.start()
    wait_until(lambda: harness.bridge.connected, what="connection")
    wait_until(lambda: harness.bridge.window.drained, what="the first rows acknowledged")
    wait_until(lambda: not harness.bridge.window.resuming, what="the publisher's first round after the connection")


def test_an_event_forwarded_while_the_window_has_room_is_handed_to_paho_on_the_forwarding_thread(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("direct", tmp_path / "state", broker.port))
    handed = Handed(harness)
    with recorder(broker.host, broker.port, "gateway/direct/event/living_temp") as hub:
        connected(harness)
        harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        hub.wait_for("gateway/direct/event/living_temp")
        harness.bridge.stop()
    assert [call["thread"] for call in handed.calls] == [threading.current_thread()]


def test_an_event_is_in_the_outbox_before_paho_is_handed_it_on_the_forwarding_thread(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("direct-outbox", tmp_path / "state", broker.port))
    handed = Handed(harness)
    with recorder(broker.host, broker.port, "gateway/direct-outbox/event/living_temp") as hub:
        connected(harness)
        for value in (21.0, 21.5, 22.0):
            harness.bridge.forward(harness.events.reading("living_temp", value))
        hub.wait_for("gateway/direct-outbox/event/living_temp", 3)
        harness.bridge.stop()
    assert [call["in_outbox"] for call in handed.calls] == [True, True, True]


def test_an_event_handed_over_on_the_forwarding_thread_is_committed_within_the_batch_window(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("direct-commit", tmp_path / "state", broker.port))
    with recorder(broker.host, broker.port, "gateway/direct-commit/event/living_temp") as hub:
        connected(harness)
        harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        seq = hub.wait_for("gateway/direct-commit/event/living_temp")[0].json()["seq"]
        # the publisher sleeps up to IDLE_WAKE (5 s) when nothing wakes it: the new batch must wake it
        wait_until(lambda: harness.bridge.outbox.committed_seq >= seq, timeout=1.0, what="the commit")
        harness.bridge.stop()


def test_events_beyond_a_full_window_wait_for_the_publisher_and_arrive_in_order(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("direct-full", tmp_path / "state", broker.port, max_inflight=2))
    topic = "gateway/direct-full/event/living_temp"
    with recorder(broker.host, broker.port, topic) as hub:
        connected(harness)
        for n in range(200):
            harness.bridge.forward(harness.events.reading("living_temp", n))
        got = hub.wait_for(topic, 200)
        wait_until(lambda: harness.bridge.window.drained, what="every row acknowledged")
        harness.bridge.stop()
    assert [m.json()["value"] for m in got] == list(range(200))
    seqs = [m.json()["seq"] for m in got]
    assert seqs == sorted(seqs)
