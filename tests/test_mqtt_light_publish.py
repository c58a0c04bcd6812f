"""The uplink's QoS 1 publishes take a light path that keeps paho's session state as paho's own ``publish`` keeps it
(gateway/mqtt/netloop.py, ``SerialisedClient._publish_qos1`` and ``PublishInfo``; issue 14: paho's ``publish`` was
most of the publisher thread's own CPU at 10,000 lines/s, a ``threading.Condition`` per message included). What the
broker receives is the same bytes; what paho holds (message id, state, in-flight count) is the same, so PUBACKs, the
in-flight window and the re-send after a reconnection stay paho's; ``wait_for_publish`` still works.

Each comparison publishes the same messages through the light path and through paho's own (a client that keeps
paho's DEBUG lines takes paho's path) on real socket pairs; the last test uses Mosquitto."""

from __future__ import annotations

import inspect
import socket as _socket
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.mqtt.netloop import LIGHT_PUBLISH, NetLoop, PublishInfo, SerialisedClient
from tests.conftest import Broker
from tests.mqtt_support import recorder, wait_until
from tests.test_mqtt_puback_fast_path import (
    PROTOCOLS,
    FakeBroker,
    Pair,
    ack_every_one,
    collect,
    drain,
    puback,
    reconnecting_client,
)

ERRORS_ONLY = frozenset({mqtt.MQTT_LOG_ERR})
"""What the link sets (``Link``): paho's per-packet DEBUG lines filtered out, so the light path is taken."""

CASES: list[tuple[str, bytes | bytearray, bool]] = [
    ("gateway/light/alarm", b"1", False),
    ("gateway/light/state", b"on", True),
    ("gateway/light/events", b"x" * 200, False),  # a remaining length of two bytes
    ("gateway/light/big", bytes(range(256)) * 80, True),  # three bytes
    ("gateway/light/\u00e9t\u00e9", bytearray(b"{}"), False),  # a topic in UTF-8, a bytearray payload
]


def light(pair: Pair) -> Pair:
    pair.client.log_levels = ERRORS_ONLY
    return pair


@pytest.fixture(params=PROTOCOLS)
def pairs(request: pytest.FixtureRequest) -> Iterator[tuple[Pair, Pair]]:
    """A client on the light path and one on paho's, same protocol, same in-flight window."""
    made = light(Pair(request.param, inflight=3)), Pair(request.param, inflight=3)
    yield made
    for pair in made:
        pair.close()


def publish_cases(pair: Pair) -> list[mqtt.MQTTMessageInfo]:
    return [pair.client.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in CASES]


def held(client: SerialisedClient) -> list[tuple[object, ...]]:
    return [(m.mid, m.state, m.dup, m.qos, m.retain, m.topic, bytes(m.payload), m.properties)
            for m in client._out_messages.values()]


# -- what the light path relies on in paho (a release that changes it fails here) ---------------------------------


def test_paho_still_has_what_the_light_path_reads_and_sets() -> None:
    assert LIGHT_PUBLISH
    source = inspect.getsource(mqtt.Client.publish)
    for step in ("message = MQTTMessage(local_mid, topic_bytes)", "self._out_messages[message.mid] = message",
                 "self._inflight_messages += 1", "message.state = mqtt_ms_wait_for_puback",
                 "message.state = mqtt_ms_queued", "message.state = mqtt_ms_publish",
                 "self._max_queued_messages > 0 and len(self._out_messages) >= self._max_queued_messages"):
        assert step in source
    assert "_set_as_published()" in inspect.getsource(mqtt.Client._do_on_publish)


def test_a_client_that_keeps_pahos_debug_lines_takes_pahos_publish(pairs: tuple[Pair, Pair]) -> None:
    ours, pahos = pairs
    assert type(pahos.client.publish("gateway/light/alarm", b"1", qos=1)) is mqtt.MQTTMessageInfo
    assert type(ours.client.publish("gateway/light/alarm", b"1", qos=1)) is PublishInfo


# -- the same as paho's ---------------------------------------------------------------------------------------


def test_the_light_path_writes_the_same_bytes_as_pahos_publish(pairs: tuple[Pair, Pair]) -> None:
    ours, pahos = pairs
    for pair in pairs:
        pair.client._max_inflight_messages = len(CASES)  # paho's setter refuses once connected
        publish_cases(pair)
    assert drain(ours.broker) == drain(pahos.broker)


def test_paho_holds_the_same_messages_with_the_same_ids_states_and_in_flight_count(pairs: tuple[Pair, Pair]) -> None:
    ours, pahos = pairs  # in-flight window of 3: two of the five wait queued, as paho queues them
    assert [(i.rc, i.mid) for i in publish_cases(ours)] == [(i.rc, i.mid) for i in publish_cases(pahos)]
    assert held(ours.client) == held(pahos.client)
    assert ours.client._inflight_messages == pahos.client._inflight_messages == 3


def test_acks_free_the_window_for_the_queued_messages_as_with_pahos_publish(pairs: tuple[Pair, Pair]) -> None:
    for pair in pairs:
        mids = [info.mid for info in publish_cases(pair)]
        first = pair.sent()
        pair.answer(puback(mids[0]) + puback(mids[1]))
        assert [p.mid for p in first] + [p.mid for p in pair.sent()] == mids
        assert [ack.mid for ack in pair.acks] == mids[:2]


def test_a_publish_while_not_connected_waits_for_the_connection_as_pahos(pairs: tuple[Pair, Pair]) -> None:
    for pair in pairs:
        pair.client._sock = None
        info = pair.client.publish("gateway/light/alarm", b"1", qos=1)
        assert info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        assert pair.client._inflight_messages == 0
    assert held(pairs[0].client) == held(pairs[1].client)


def test_a_full_queue_refuses_the_message_as_pahos(pairs: tuple[Pair, Pair]) -> None:
    for pair in pairs:
        pair.client._max_queued_messages = 2  # paho's setter refuses once connected
        assert [info.rc for info in publish_cases(pair)[:3]] == [
            MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_QUEUE_SIZE]
        assert len(pair.client._out_messages) == 2


def test_a_topic_with_a_wildcard_is_refused_as_pahos(pairs: tuple[Pair, Pair]) -> None:
    for pair in pairs:
        with pytest.raises(ValueError, match="wildcards"):
            pair.client.publish("gateway/light/#", b"1", qos=1)


# -- the Condition, made only for a waiter ------------------------------------------------------------------------


def test_a_light_publish_makes_no_condition_until_someone_waits() -> None:
    pair = light(Pair(mqtt.MQTTv5))
    try:
        info = pair.client.publish("gateway/light/alarm", b"1", qos=1)
        assert info._condition is None
        pair.answer(puback(info.mid))
        assert info.is_published()
    finally:
        pair.close()


def test_a_waiter_on_another_thread_is_woken_by_the_ack() -> None:
    pair = light(Pair(mqtt.MQTTv311))
    try:
        info = pair.client.publish("gateway/light/status", b"offline", qos=1, retain=True)
        waiting = threading.Thread(target=info.wait_for_publish, args=(10.0,))
        waiting.start()
        wait_until(lambda: info._condition is not None, what="the waiter's condition")
        assert not info.is_published()
        pair.answer(puback(info.mid))
        waiting.join(5)
        assert not waiting.is_alive()
        assert info.is_published()
    finally:
        pair.close()


# -- with a broker ----------------------------------------------------------------------------------------------


def test_a_reconnection_resends_the_light_paths_unacknowledged_messages_with_dup() -> None:
    broker = FakeBroker()
    client, acked = reconnecting_client(broker, "light-re", ERRORS_ONLY)
    try:
        conn = broker.accept(client)
        mids = [client.publish("gateway/light/alarm", str(n).encode(), qos=1).mid for n in range(5)]
        client.loop_write()
        assert [p.mid for p in collect(conn, 3, "the first window")] == mids[:3]
        conn.close()
        conn = broker.accept(client)
        resent = collect(conn, 5, "the re-sent messages")
        assert [(p.mid, p.dup, p.payload) for p in resent] == [
            (mid, n < 3, str(n).encode()) for n, mid in enumerate(mids)]
        ack_every_one(client, conn, mids, acked, mids)
    finally:
        client._sock_close()
        broker.close()


def test_mosquitto_receives_every_light_publish_in_order_and_keeps_the_retained_one(broker: Broker) -> None:
    client = SerialisedClient(CallbackAPIVersion.VERSION2, client_id="light-real", protocol=mqtt.MQTTv5)
    client.log_levels = ERRORS_ONLY
    client.max_inflight_messages_set(10)
    client.connect_async(broker.host, broker.port)
    loop = NetLoop(client, delays=(1.0, 1.0), before_attempt=lambda: None, name="light-real")
    topic, state = "gateway/light-real/alarm", "gateway/light-real/state"
    with recorder(broker.host, broker.port, topic) as hub:
        loop.start()
        wait_until(client.is_connected, what="connection")
        infos = [client.publish(topic, str(n).encode(), qos=1) for n in range(200)]
        retained = client.publish(state, b"on", qos=1, retain=True)
        retained.wait_for_publish(10)
        wait_until(lambda: all(info.is_published() for info in infos), what="every ack")
        received = hub.wait_for(topic, 200)
    with recorder(broker.host, broker.port, state) as late:
        kept = late.wait_for(state, 1)
    loop.disconnect(1.0)
    loop.join(5)
    assert [m.payload for m in received] == [str(n).encode() for n in range(200)]
    assert kept[0].payload == b"on" and kept[0].retain
    assert client._out_messages == {}


def test_a_packet_over_mqtts_largest_remaining_length_is_refused_as_paho_refuses_it() -> None:
    from gateway.mqtt import netloop

    class Huge(bytes):
        """As long as a payload just under paho's own limit, without the 256 MB."""

        def __len__(self) -> int:
            return netloop.MAX_PAYLOAD - 4

    client = netloop.SerialisedClient(CallbackAPIVersion.VERSION2, client_id="big")
    client._sock = _socket.socket()  # the size is checked before anything is queued, as paho's packing does
    try:
        with pytest.raises(ValueError, match="Packet too large"):
            client._send_qos1(1, b"\x00\x01t", Huge(), False, netloop.PublishInfo(1))  # + topic + mid: over
    finally:
        client._sock.close()


def test_an_unknown_paho_release_takes_pahos_own_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    import paho.mqtt

    from gateway.mqtt import netloop

    monkeypatch.setattr(paho.mqtt, "__version__", "2.9.0")
    assert not netloop._paho_keeps_what_the_light_publish_sets()
