"""Two connections to the broker: the uplink publishes, the inlet (``<client_id>-in``) hears the hub.

Issue 17: on one connection, a flood of QoS 0 hub commands queued in the broker and the socket in front of
the PUBACKs of the gateway's own QoS 1 publishes, and the gateway's publishing stopped for tens of seconds
(docs/reliability.md, benchmark 8). These tests hold the inlet's reader still in the middle of a flood, so
the backlog is certain to be there, and ask what the uplink does meanwhile: ordering, not milliseconds.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.values import is_on
from gateway.control import format_status
from tests.conftest import Broker, free_port
from tests.mqtt_support import Harness, make_bridge, make_config, recorder, wait_until
from tests.test_fleet import fleet_config

FLOOD = 5_000


@pytest.fixture
def gw(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path) -> Iterator[Harness]:
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port))
    yield harness
    harness.bridge.stop()


class HeldReader:
    """A validator for ``hall_light`` that holds the thread reading hub commands until released: the
    stand-in for a reader busy with a flood, with the flood's remainder certain to wait unread."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, value: object) -> bool:
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        return is_on(value) if isinstance(value, bool | int | float | str) else False


def flood(broker: Broker, topic: str, count: int) -> None:
    """``count`` QoS 0 commands as fast as paho sends them, from a hub of its own."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooding-hub")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, "ON", qos=0) for _ in range(count)]
        infos[-1].wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_gateways_events_are_acknowledged_while_a_flood_of_hub_commands_waits_unread(
    broker: Broker, gw: Harness
) -> None:
    bridge = gw.bridge
    reader = HeldReader()
    bridge.register_command("hall_light", reader)
    bridge.start()
    wait_until(lambda: bridge.connected, what="both connections up")
    try:
        with recorder(broker.host, broker.port, f"{gw.base}/event/#") as hub:
            flood(broker, f"{gw.base}/set/hall_light", FLOOD)
            assert reader.entered.wait(10), "the flood's first command reached the gateway"
            for value in range(3):
                bridge.forward(gw.events.reading("living_temp", value))
            wait_until(lambda: bridge.counters.events_out >= 3, 10, "the broker's acknowledgements")
            got = hub.wait_for(f"{gw.base}/event/living_temp", count=3)
            assert not reader.release.is_set() and reader.calls == 1, "the flood's backlog is still unread"
    finally:
        reader.release.set()
    assert [m.json()["value"] for m in got] == [0, 1, 2]


def test_the_inlet_has_a_client_id_of_its_own_and_carries_the_subscriptions(broker: Broker, gw: Harness) -> None:
    bridge = gw.bridge
    uplink_messages: list[str] = []
    bridge.link.client.on_message = lambda client, userdata, message: uplink_messages.append(message.topic)
    bridge.start()
    wait_until(lambda: bridge.connected, what="both connections up")
    with recorder(broker.host, broker.port, f"{gw.base}/result/#") as hub:
        hub.publish(f"{gw.base}/set/hall_light", "ON")
        wait_until(lambda: any(e.entity == "hall_light" for e in gw.posted), what="the command posted")
    assert bridge.inbound.client_id == f"{bridge.config.client_id}-in"
    assert bridge.health()["inlet"]["connection"] == "connected"
    assert uplink_messages == []


def test_a_session_kept_from_one_connection_no_longer_brings_hub_commands_to_the_uplink(
    broker: Broker, gw: Harness
) -> None:
    """A gateway upgraded from one connection finds its old session with ``set/#`` subscribed: the uplink
    unsubscribes it, or a flood would still reach the uplink through it."""
    old = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=gw.bridge.config.client_id, clean_session=False)
    subscribed = threading.Event()
    old.on_connect = lambda client, *args: client.subscribe(gw.bridge.topics.set_filter, 1)
    old.on_subscribe = lambda *args: subscribed.set()
    old.connect(broker.host, broker.port)
    old.loop_start()
    assert subscribed.wait(5), "the old session's subscription"
    old.disconnect()
    old.loop_stop()
    bridge = gw.bridge
    uplink_messages: list[str] = []
    bridge.link.client.on_message = lambda client, userdata, message: uplink_messages.append(message.topic)
    bridge.start()
    wait_until(lambda: bridge.connected, what="both connections up")
    with recorder(broker.host, broker.port, f"{gw.base}/result/#") as hub:
        hub.publish(f"{gw.base}/set/hall_light", "ON")
        hub.wait_for(f"{gw.base}/result/hall_light")
        uplink_messages.clear()
        hub.publish(f"{gw.base}/set/hall_light", "OFF")  # sent once the unsubscribe was surely handled
        hub.wait_for(f"{gw.base}/result/hall_light", count=2)
    assert uplink_messages == []


def drop(client: mqtt.Client) -> None:
    """Cut the connection without a DISCONNECT, as a crash or a pulled cable does: the broker sends the will."""
    sock = client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


def test_the_last_will_says_offline_when_the_uplink_drops_and_online_returns_with_it(
    broker: Broker, gw: Harness
) -> None:
    bridge = gw.bridge
    status = f"{gw.base}/status"
    with recorder(broker.host, broker.port, status) as hub:
        bridge.start()
        wait_until(lambda: bridge.connected, what="both connections up")
        hub.wait_for(status)
        drop(bridge.link.client)
        hub.wait_for(status, count=3, timeout=15)
        assert [m.payload for m in hub.on(status)][:3] == [b"online", b"offline", b"online"]


def test_the_inlet_dropping_alone_leaves_the_gateway_online(broker: Broker, gw: Harness) -> None:
    bridge = gw.bridge
    status = f"{gw.base}/status"
    bridge.start()
    wait_until(lambda: bridge.connected, what="both connections up")
    with recorder(broker.host, broker.port, status, f"{gw.base}/result/#") as hub:
        drop(bridge.inbound.client)
        wait_until(lambda: bridge.inbound_counters.connects >= 2 and bridge.connected, 15, "the inlet back")
        hub.publish(f"{gw.base}/set/hall_light", "ON")
        wait_until(lambda: any(e.entity == "hall_light" for e in gw.posted), what="a command after it")
        assert [m.payload for m in hub.on(status)] == [b"online"]  # the retained one, never "offline"


def test_a_client_taking_the_inlets_id_is_detected_as_a_duplicate(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("dup-inlet", tmp_path / "state", broker.port))
    bridge = harness.bridge
    bridge.start()
    wait_until(lambda: bridge.connected, what="both connections up")
    thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=bridge.inbound.client_id)
    thief.reconnect_delay_set(1, 1)
    thief.connect(broker.host, broker.port)
    thief.loop_start()
    try:
        wait_until(lambda: bridge.health()["inlet"]["identity"]["state"] == "duplicate", 40,
                   "the inlet's guard to trip")
        assert bridge.health()["inlet"]["connection"] == "duplicate client id"
        assert bridge.link.connected and bridge.health()["connection"] == "connected"
    finally:
        thief.disconnect()
        thief.loop_stop()
        bridge.stop()


def test_the_inlet_follows_the_uplink_to_another_broker_and_hears_commands_there(tmp_path: Path) -> None:
    a = Broker(port=free_port(), directory=tmp_path / "broker-a")
    b = Broker(port=free_port(), directory=tmp_path / "broker-b")
    a.start()
    b.start()
    harness = make_bridge(fleet_config("follow", tmp_path / "state", [a, b]))
    bridge = harness.bridge
    bridge.start()
    try:
        wait_until(lambda: bridge.connected, 10, "both connections on A")
        a.stop(kill=True)
        wait_until(lambda: bridge.health()["failovers"] >= 1 and bridge.connected, 20, "both on B")
        assert bridge.health()["inlet"]["broker"] == bridge.health()["broker"] == f"127.0.0.1:{b.port}"
        with recorder(b.host, b.port, f"{harness.base}/result/#") as hub:
            hub.publish(f"{harness.base}/set/hall_light", "ON")
            answer = hub.wait_for(f"{harness.base}/result/hall_light")[0].json()
        assert answer["status"] == "accepted"
    finally:
        bridge.stop()
        a.stop()
        b.stop()


def test_gateway_status_shows_both_connections_and_a_contested_inlet_id() -> None:
    status = {"mqtt": {"enabled": True, "connection": "connected", "inlet": "duplicate client id",
                       "identity": "ok", "inlet_identity": "duplicate", "outbox_depth": 0, "events_out": 5}}
    lines = format_status(status, now=0).splitlines()
    assert any(line.startswith("broker: connected; outbox: 0 queued") for line in lines)
    assert "inlet (the connection hub commands come in on): duplicate client id" in lines
    assert any(line.startswith("broker: KEEPING OFF") and "inlet's client id" in line for line in lines)
