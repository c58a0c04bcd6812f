"""The bridge's contract with the hub: status, events, retained states, connection behaviour."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.events import Kind
from gateway.mqtt.netloop import SerialisedClient
from tests.conftest import Broker, free_port
from tests.mqtt_support import Harness, make_bridge, make_config, recorder, wait_until

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def gw(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path) -> Iterator[Harness]:
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port))
    yield harness
    harness.bridge.stop()


def test_status_is_online_and_retained_once_connected(broker: Broker, gw: Harness) -> None:
    gw.bridge.start()
    wait_until(lambda: gw.bridge.connected, what="connection")
    with recorder(broker.host, broker.port, f"{gw.base}/status") as late_hub:
        message = late_hub.wait_for(f"{gw.base}/status")[0]
    assert (message.payload, message.retain) == (b"online", True)


def test_stop_publishes_offline_retained_within_its_timeout(broker: Broker, gw: Harness) -> None:
    gw.bridge.start()
    wait_until(lambda: gw.bridge.connected, what="connection")
    started = time.monotonic()
    gw.bridge.stop(timeout=1.5)
    assert time.monotonic() - started < 1.5
    with recorder(broker.host, broker.port, f"{gw.base}/status") as late_hub:
        assert late_hub.wait_for(f"{gw.base}/status")[0].payload == b"offline"


def test_every_event_arrives_as_json_with_id_seq_and_utc_timestamp(broker: Broker, gw: Harness) -> None:
    with recorder(broker.host, broker.port, f"{gw.base}/event/#") as hub:
        gw.bridge.start()
        gw.bridge.forward(gw.events.reading("living_temp", 21.5, unit="°C"))
        command = gw.events.make(Kind.COMMAND, "hall_light", True, rule="motion_light", cause="abc-1")
        gw.bridge.forward(command)
        temp = hub.wait_for(f"{gw.base}/event/living_temp")[0].json()
        light = hub.wait_for(f"{gw.base}/event/hall_light")[0].json()
    assert set(temp) == {"id", "seq", "entity", "kind", "value", "unit", "ts"}
    assert (temp["entity"], temp["kind"], temp["value"], temp["unit"]) == ("living_temp", "reading", 21.5, "°C")
    assert ISO_UTC.match(temp["ts"])
    assert (light["rule"], light["cause"], light["kind"]) == ("motion_light", "abc-1", "command")
    assert light["seq"] == temp["seq"] + 1
    assert light["id"] == command.id


def test_entities_beyond_the_remembered_topics_each_get_their_own_event_topic(
    broker: Broker, gw: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.mqtt.topics.TOPICS_REMEMBERED", 2)
    entities = ["a_temp", "b_temp", "c_temp", "d_temp", "a_temp", "d_temp"]
    with recorder(broker.host, broker.port, f"{gw.base}/event/#") as hub:
        gw.bridge.start()
        for n, entity in enumerate(entities):
            gw.bridge.forward(gw.events.reading(entity, float(n)))
        for entity in set(entities):
            hub.wait_for(f"{gw.base}/event/{entity}", count=entities.count(entity))
        received = [(m.topic, m.json()["entity"], m.json()["value"]) for m in hub.messages]
    assert sorted(received, key=lambda m: m[2]) == [(f"{gw.base}/event/{entity}", entity, float(n))
                                                    for n, entity in enumerate(entities)]


def test_commands_to_made_up_entities_take_no_place_among_the_remembered_event_topics(
    gw: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.mqtt.topics.TOPICS_REMEMBERED", 2)
    for n in range(3):
        gw.bridge.forward(gw.events.make(Kind.REJECTED, f"made_up_{n}", "on", detail="unknown entity"))
    gw.bridge.forward(gw.events.reading("living_temp", 21.5))
    assert list(gw.bridge._event_topics) == ["living_temp"]


def test_seq_keeps_increasing_across_a_restart(broker: Broker, tmp_path: Path) -> None:
    config = make_config("seq-restart", tmp_path / "state", broker.port)
    with recorder(broker.host, broker.port, "gateway/seq-restart/event/#") as hub:
        for run in range(2):
            harness = make_bridge(config)
            harness.bridge.start()
            harness.bridge.forward(harness.events.reading("living_temp", 20 + run))
            hub.wait_for("gateway/seq-restart/event/living_temp", count=run + 1)
            harness.bridge.stop()
        seqs = [m.json()["seq"] for m in hub.on("gateway/seq-restart/event/living_temp")]
    assert seqs[1] > seqs[0]


def test_a_confirmed_state_is_retained_and_published_only_when_it_changes(broker: Broker, gw: Harness) -> None:
    topic = f"{gw.base}/state/heater"
    with recorder(broker.host, broker.port, topic, f"{gw.base}/event/#") as hub:
        gw.bridge.start()
        wait_until(lambda: gw.bridge.connected, what="connection")
        for count, value in enumerate((True, True, False), start=1):
            gw.bridge.forward(gw.events.make(Kind.STATE, "heater", value))
            hub.wait_for(f"{gw.base}/event/heater", count=count)
        # the event may be handed to paho on the forwarding thread before the publisher sends its state: wait for
        # the last state; a duplicate of the first would have been published before it
        states = hub.wait_for(topic, count=2)
    assert [s.json() for s in states] == [True, False]
    with recorder(broker.host, broker.port, topic) as late_hub:
        retained = late_hub.wait_for(topic)[0]
    assert retained.retain and retained.json() is False


def test_every_reading_refreshes_the_retained_state(broker: Broker, gw: Harness) -> None:
    topic = f"{gw.base}/state/living_temp"
    with recorder(broker.host, broker.port, topic) as hub:
        gw.bridge.start()
        wait_until(lambda: gw.bridge.connected, what="connection")
        gw.bridge.forward(gw.events.reading("living_temp", 21.0, unit="°C"))
        hub.wait_for(topic, count=1)
        gw.bridge.forward(gw.events.reading("living_temp", 21.0, unit="°C"))
        assert [m.json() for m in hub.wait_for(topic, count=2)] == [21.0, 21.0]


def test_availability_of_each_entity_is_retained_and_follows_events(broker: Broker, gw: Harness) -> None:
    topic = f"{gw.base}/availability/front_door"
    with recorder(broker.host, broker.port, topic) as hub:
        gw.bridge.start()
        assert hub.wait_for(topic)[0].payload == b"online"
        gw.bridge.forward(gw.events.availability("front_door", False, "pin read failed"))
        assert hub.wait_for(topic, count=2)[1].payload == b"offline"
        gw.bridge.forward(gw.events.reading("front_door", True))
        assert hub.wait_for(topic, count=3)[2].payload == b"online"


def test_start_returns_at_once_without_a_broker_and_logs_the_outage_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    harness = make_bridge(make_config("no-broker", tmp_path / "state", port, reconnect_min=1, reconnect_max=1))
    caplog.set_level(logging.WARNING, logger="gateway.mqtt")
    started = time.monotonic()
    harness.bridge.start()
    assert time.monotonic() - started < 0.2
    harness.bridge.forward(harness.events.reading("living_temp", 20.0))
    wait_until(lambda: harness.bridge.health()["connection"] == "unreachable", what="outage noticed")
    wait_until(lambda: harness.bridge.counters.connect_attempts >= 3, what="two more attempts")
    harness.bridge.stop()
    outage_lines = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage_lines) == 1


def test_events_queued_while_the_broker_is_away_arrive_when_it_comes(private_broker: Broker, tmp_path: Path) -> None:
    private_broker.stop()
    harness = make_bridge(make_config("late-broker", tmp_path / "state", private_broker.port))
    harness.bridge.start()
    for value in range(5):
        harness.bridge.forward(harness.events.reading("living_temp", value))
    private_broker.start()
    try:
        with recorder(private_broker.host, private_broker.port, "gateway/late-broker/event/#") as hub:
            got = hub.wait_for("gateway/late-broker/event/living_temp", count=5, timeout=15)
    finally:
        harness.bridge.stop()
    assert [m.json()["value"] for m in got] == [0, 1, 2, 3, 4]


def test_the_socket_has_nagle_turned_off(broker: Broker, gw: Harness) -> None:
    gw.bridge.start()
    wait_until(lambda: gw.bridge.connected, what="connection")
    sock = gw.bridge.link.client.socket()
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_health_is_retained_and_periodic_with_outbox_and_traffic_figures(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("health", tmp_path / "state", broker.port, health_interval=1))
    harness.bridge.add_health_source("drivers", lambda: {"hall_light": "ok"})
    topic = "gateway/health/health"
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        harness.bridge.forward(harness.events.reading("living_temp", 20.0))
        reports = [m.json() for m in hub.wait_for(topic, count=2, timeout=5)]
        harness.bridge.stop()
    latest = reports[-1]
    assert latest["connection"] == "connected" and latest["drivers"] == {"hall_light": "ok"}
    assert latest["events_in"] == 1 and latest["events_out"] == 1
    assert {"depth", "oldest_age", "dropped", "bytes_written", "oversized"} <= set(latest["outbox"])
    assert latest["uptime"] >= reports[0]["uptime"]
    assert ISO_UTC.match(latest["ts"])


@pytest.mark.parametrize("bad", ["gateway/+/x", "gateway/#", "/gateway/x", "gateway//x", "gateway/x/"])
def test_a_base_topic_with_wildcards_or_empty_levels_is_a_config_error(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError, match="base_topic"):
        make_config("x", tmp_path, 1883, base_topic=bad)


def test_a_batch_of_events_the_dispatcher_forwards_reaches_the_uplinks_socket_together(
    broker: Broker, gw: Harness,
) -> None:
    """Issue 14: the dispatcher's hand-over wrote each message in a ``send`` of its own (~5,000 a second at 10,000
    lines/s); inside :meth:`MqttBridge.batch` they wait for its end, and this thread writes them in one."""
    with recorder(broker.host, broker.port, f"{gw.base}/event/#") as hub:
        gw.bridge.start()
        wait_until(lambda: gw.bridge.connected, what="connection")
        client = gw.bridge.link.client
        send = client._sock_send
        senders: list[int] = []

        def counted(data: bytes | bytearray) -> int:
            senders.append(threading.get_ident())
            return send(data)

        client._sock_send = counted  # type: ignore[method-assign,assignment]
        with gw.bridge.batch():
            for n in range(5):
                gw.bridge.forward(gw.events.reading("living_temp", 20.0 + n, unit="°C"))
            inside = senders.count(threading.get_ident())
        values = [m.json()["value"] for m in hub.wait_for(f"{gw.base}/event/living_temp", count=5)]
    assert inside == 0
    assert senders.count(threading.get_ident()) <= 1  # one, unless another thread's write took them first
    assert values == [20.0, 21.0, 22.0, 23.0, 24.0]


def test_the_dispatchers_batch_does_not_wait_for_the_uplinks_connection_attempt(tmp_path: Path) -> None:
    """The uplink's loop holds its client's ``io_lock`` around paho's ``reconnect()`` (NetLoop._attempt): a TCP
    connect that takes up to paho's connect timeout (5 s) while the broker does not answer, plus a DNS lookup. The
    dispatcher enters :meth:`MqttBridge.batch` for every bus batch of more than one event, connected or not: it
    must not wait for that lock (rules, alarms and outputs stop meanwhile)."""
    gw = make_bridge(make_config("batch-lock", tmp_path / "state", free_port()))
    client = gw.bridge.link.client
    assert isinstance(client, SerialisedClient)
    lock = client.io_lock
    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def connection_attempt() -> None:
        with lock:
            held.set()
            release.wait(10)

    def dispatcher_batch() -> None:
        with gw.bridge.batch():
            pass
        done.set()

    attempt = threading.Thread(target=connection_attempt, daemon=True)
    attempt.start()
    assert held.wait(5)
    batch = threading.Thread(target=dispatcher_batch, daemon=True)
    batch.start()
    try:
        assert done.wait(1.0), "the dispatcher's batch waited for the uplink's connection attempt"
    finally:
        release.set()
        attempt.join(5)
        batch.join(5)
        gw.bridge.outbox.close()
