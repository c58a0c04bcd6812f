"""The publisher is not woken once per PUBACK (issue 14: a thread wake-up per message was a fifth of the
CPU): acks wake it only when half the window is acknowledged, or while new rows wait behind a window resent
after a reconnect; otherwise they are taken on its next wake-up, at most one commit window later. Nor once per
event: the forwarding thread hands paho the next row itself when the window lets it (``hand_over``)."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.outbox import Outbox
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
