"""The publisher is not woken once per PUBACK (issue 14: a thread wake-up per message was a fifth of the
CPU): acks wake it only when half the window is acknowledged, or while new rows wait behind a window resent
after a reconnect; otherwise they are taken on its next wake-up, at most one commit window later. Nor once per
event: the forwarding thread hands paho the next row itself when the window lets it (``hand_over``)."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.outbox import Outbox, Row
from gateway.mqtt.window import PublishWindow

SUCCESS = ReasonCode(PacketTypes.PUBACK, "Success")


def window(tmp_path: Path, wakes: list[int], size: int = 100) -> PublishWindow:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    return PublishWindow(outbox, BridgeCounters(), size=size, drain_rate=1000.0, wake=lambda: wakes.append(1))


def test_an_ack_does_not_wake_the_publisher_while_the_window_has_room(tmp_path: Path) -> None:
    wakes: list[int] = []
    w = window(tmp_path, wakes)
    for mid in range(1, 49):
        w.on_publish(None, None, mid, SUCCESS, None)  # type: ignore[arg-type]
    assert wakes == []
    assert w.acks_waiting


def test_half_a_window_of_acks_wakes_the_publisher(tmp_path: Path) -> None:
    wakes: list[int] = []
    w = window(tmp_path, wakes)
    for mid in range(1, 51):
        w.on_publish(None, None, mid, SUCCESS, None)  # type: ignore[arg-type]
    assert wakes == [1]


def test_after_a_reconnect_every_ack_wakes_the_publisher(tmp_path: Path) -> None:
    wakes: list[int] = []
    w = window(tmp_path, wakes)
    w.reconnected()
    w.on_publish(None, None, 1, SUCCESS, None)  # type: ignore[arg-type]
    assert wakes == [1]


def test_a_run_of_acks_under_half_a_window_does_not_wake_the_publisher_and_half_does(tmp_path: Path) -> None:
    wakes: list[int] = []
    w = window(tmp_path, wakes)
    w.on_publish_run(list(range(1, 49)))
    assert wakes == [] and w.acks_waiting
    w.on_publish_run([49, 50])
    assert wakes == [1]


def test_after_a_reconnect_a_run_of_acks_wakes_the_publisher(tmp_path: Path) -> None:
    wakes: list[int] = []
    w = window(tmp_path, wakes)
    w.reconnected()
    w.on_publish_run([1, 2])
    assert wakes == [1]


def test_the_rows_of_a_run_of_acks_leave_the_outbox_with_the_next_commit(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=100, drain_rate=1000.0, wake=lambda: None)
    client = unconnected_client()
    added(w, outbox, 3)
    outbox.commit()
    w.send(client)
    w.on_publish_run(sorted(client._out_messages))
    w.take_acks()
    outbox.commit()
    assert outbox.depth == 0
    outbox.close()


def unconnected_client() -> mqtt.Client:
    """A real paho client that never connects: it numbers and keeps QoS 1 messages as it would offline."""
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id="window-test")


def added(w: PublishWindow, outbox: Outbox, count: int) -> list[int]:
    seqs = [outbox.add("gateway/t/event/x", lambda seq: b"{}", ts=0.0) for _ in range(count)]
    return [seq for seq in seqs if seq is not None]


def test_the_forwarding_thread_hands_over_the_next_row_once_the_publisher_has_caught_up(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None)
    client = unconnected_client()
    w.send(client)  # nothing waits: the publisher has caught up with every seq given so far
    (seq,) = added(w, outbox, 1)
    assert w.hand_over(client, seq, "gateway/t/event/x", b"{}")


def test_a_row_that_is_not_next_in_seq_order_is_left_to_the_publisher(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None)
    client = unconnected_client()
    w.send(client)
    _first, second = added(w, outbox, 2)
    assert not w.hand_over(client, second, "gateway/t/event/x", b"{}")  # the first has not gone yet


def test_a_row_finding_the_window_full_is_left_to_the_publisher(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=1, drain_rate=1000.0, wake=lambda: None)
    client = unconnected_client()
    w.send(client)
    first, second = added(w, outbox, 2)
    assert w.hand_over(client, first, "gateway/t/event/x", b"{}")
    assert not w.hand_over(client, second, "gateway/t/event/x", b"{}")


def test_after_a_reconnect_new_rows_are_left_to_the_publisher_until_the_resent_window_is_acknowledged(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None)
    client = unconnected_client()
    w.send(client)
    (first,) = added(w, outbox, 1)
    assert w.hand_over(client, first, "gateway/t/event/x", b"{}")
    w.reconnected()
    (second,) = added(w, outbox, 1)
    assert not w.hand_over(client, second, "gateway/t/event/x", b"{}")


class HandOverDuringTheRound:
    """A real paho client whose ``publish`` of the first row lets the forwarding thread (a real second thread)
    add the next row and try to hand it over while the publisher's :meth:`PublishWindow.send` holds the lock."""

    def __init__(self, w: PublishWindow, outbox: Outbox) -> None:
        self.client = unconnected_client()
        self.window = w
        self.outbox = outbox
        self.published: list[bytes] = []
        self.refused: list[int] = []
        self._publish = self.client.publish
        self.client.publish = self.publish  # type: ignore[method-assign]

    def publish(self, topic: str, payload: str | bytes | bytearray | int | float | None = None, qos: int = 0,
                retain: bool = False, properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        assert isinstance(payload, bytes)
        self.published.append(payload)
        if len(self.published) == 1:
            forwarding = threading.Thread(target=self._forward)
            forwarding.start()
            forwarding.join()
        return self._publish(topic, payload, qos=qos, retain=retain, properties=properties)

    def _forward(self) -> None:
        seq = self.outbox.add("gateway/t/event/x", lambda seq: b'{"n": 2}', ts=0.0)
        assert seq is not None
        if not self.window.hand_over(self.client, seq, "gateway/t/event/x", b'{"n": 2}'):
            self.refused.append(seq)


def test_a_row_refused_while_the_publisher_holds_the_lock_is_handed_over_before_the_publishers_round_ends(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None)
    paho = HandOverDuringTheRound(w, outbox)
    w.send(paho.client)  # caught up: the forwarding thread's rows are next
    outbox.add("gateway/t/event/x", lambda seq: b'{"n": 1}', ts=0.0)  # left to the publisher
    w.send(paho.client)  # its round; the second row arrives (and is refused) meanwhile
    assert len(paho.refused) == 1
    assert paho.published == [b'{"n": 1}', b'{"n": 2}']


def test_a_round_without_a_refused_hand_over_reads_the_outbox_once(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=10, drain_rate=1000.0, wake=lambda: None)
    client = unconnected_client()
    w.send(client)
    added(w, outbox, 1)
    fetches: list[int] = []
    fetch = outbox.fetch

    def counted_fetch(after: int, limit: int) -> list[Row]:
        fetches.append(after)
        return fetch(after, limit)

    outbox.fetch = counted_fetch  # type: ignore[method-assign]
    w.send(client)
    assert len(fetches) == 1
