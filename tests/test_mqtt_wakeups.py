"""The publisher is not woken once per PUBACK (issue 14: a thread wake-up per message was a fifth of the
CPU): acks wake it only when half the window is acknowledged, or while new rows wait behind a window resent
after a reconnect; otherwise they are taken on its next wake-up, at most one commit window later."""

from __future__ import annotations

from pathlib import Path

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
