"""The latency tail at 1,000 lines/s (issue 14: p99 line -> broker <= 2 ms). A row the forwarding thread could not
hand to paho itself (the window's lock busy, the window full) is the publisher thread's: it goes to paho as soon as
the publisher wakes, not after the publisher has written its batch to disk (a commit: 0.3 ms typical, several ms at
the tail, more on an SD card). The durability contract is unchanged: the row is in the outbox before paho has it,
and committed within the same round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.conftest import Broker
from tests.mqtt_support import Harness, make_bridge, make_config, recorder, wait_until


class CommittedWhenHanded:
    """Wraps the uplink's real ``publish``: per event row handed to paho, whether its commit had been written."""

    def __init__(self, harness: Harness) -> None:
        self.outbox = harness.bridge.outbox
        self.committed: list[bool] = []
        self.in_outbox: list[bool] = []
        client = harness.bridge.link.client
        self._publish = client.publish
        client.publish = self  # type: ignore[method-assign]

    def __call__(self, topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> mqtt.MQTTMessageInfo:
        if "/event/" in topic:
            seq = json.loads(payload)["seq"]
            self.committed.append(self.outbox.committed_seq >= seq)
            self.in_outbox.append([row.seq for row in self.outbox.fetch(seq - 1, 1)] == [seq])
        return self._publish(topic, payload, *args, **kwargs)


def idle(harness: Harness) -> None:
    """Connected, every row acknowledged and committed, nothing due: the publisher thread is asleep."""
    harness.bridge.start()
    wait_until(lambda: harness.bridge.connected, what="connection")
    wait_until(lambda: harness.bridge.window.drained and not harness.bridge.window.resuming,
               what="the first rows acknowledged")
    wait_until(lambda: harness.bridge.outbox.due_in() is None and not harness.bridge.window.acks_waiting,
               what="the acks committed")


def test_a_row_left_to_the_publisher_is_handed_to_paho_before_the_publisher_commits_its_batch(
    broker: Broker, tmp_path: Path
) -> None:
    # batch_ms = 0: the batch is due the moment the publisher wakes, as it is for a row left to it at the end
    # of a batch window.
    harness = make_bridge(make_config("tail", tmp_path / "state", broker.port, outbox={"batch_ms": 0}))
    handed = CommittedWhenHanded(harness)
    with recorder(broker.host, broker.port, "gateway/tail/event/living_temp") as hub:
        idle(harness)
        with harness.bridge.window._lock:  # the publisher's hand-over in progress: the row is left to it
            harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        hub.wait_for("gateway/tail/event/living_temp")
        harness.bridge.stop()
    assert handed.committed == [False]


def test_a_row_left_to_the_publisher_is_in_the_outbox_before_paho_has_it_and_committed_in_the_same_round(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("tail-durable", tmp_path / "state", broker.port, outbox={"batch_ms": 0}))
    handed = CommittedWhenHanded(harness)
    with recorder(broker.host, broker.port, "gateway/tail-durable/event/living_temp") as hub:
        idle(harness)
        with harness.bridge.window._lock:
            harness.bridge.forward(harness.events.reading("living_temp", 21.5))
        seq = hub.wait_for("gateway/tail-durable/event/living_temp")[0].json()["seq"]
        wait_until(lambda: harness.bridge.outbox.committed_seq >= seq, timeout=1.0, what="the commit")
        harness.bridge.stop()
    assert handed.in_outbox == [True]
