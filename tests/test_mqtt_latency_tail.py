"""The latency tail at 1,000 lines/s (issue 14: p99 line -> broker <= 2 ms). A row the forwarding thread could not
hand to paho itself (the window's lock busy, the window full) is the publisher thread's: it goes to paho as soon as
the publisher wakes, not after the publisher has written its batch to disk (a commit: 0.3 ms typical, several ms at
the tail, more on an SD card). The durability contract is unchanged: the row is in the outbox before paho has it,
and committed within the same round."""

from __future__ import annotations

import json
import linecache
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.window import PublishWindow
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


# -- the forwarding thread and the publisher's round -------------------------------------------------------------


def unconnected_client() -> mqtt.Client:
    """A real paho client that never connects: it numbers and keeps QoS 1 messages as it would offline."""
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tail-test")


def blocked_in_the_lock_wait(thread: threading.Thread) -> bool:
    """``thread`` is inside ``hand_over``, on the line that waits for the window's lock."""
    frame = sys._current_frames().get(thread.ident or -1)
    return (frame is not None and frame.f_code.co_name == "hand_over"
            and "acquire(" in linecache.getline(frame.f_code.co_filename, frame.f_lineno))


def test_a_hand_over_that_meets_the_publishers_round_waits_for_it_and_hands_the_row_over(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    window = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None,
                           hand_over_wait=30.0)
    client = unconnected_client()
    window.send(client)  # the publisher has caught up
    seq = outbox.add("gateway/t/event/x", lambda seq: b"{}", ts=0.0)
    assert seq is not None
    forwarding = threading.current_thread()
    done = threading.Event()

    def publishers_round() -> None:
        # holds the window's lock (a round in progress) until the forwarding thread waits for it
        while not blocked_in_the_lock_wait(forwarding) and not done.is_set():
            threading.Event().wait(0.001)
        window._lock.release()

    window._lock.acquire()
    publisher = threading.Thread(target=publishers_round)
    publisher.start()
    try:
        handed = window.hand_over(client, seq, "gateway/t/event/x", b"{}")
    finally:
        done.set()
        publisher.join()
    assert handed


def test_a_hand_over_leaves_the_row_to_the_publisher_when_its_round_outlasts_the_wait(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    window = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None,
                           hand_over_wait=0.001)
    client = unconnected_client()
    window.send(client)
    seq = outbox.add("gateway/t/event/x", lambda seq: b"{}", ts=0.0)
    assert seq is not None
    with window._lock:  # a round that does not end (a backlog read from disk)
        assert not window.hand_over(client, seq, "gateway/t/event/x", b"{}")
