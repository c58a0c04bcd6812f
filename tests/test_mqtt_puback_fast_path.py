"""The uplink's client takes success PUBACKs without paho's per-packet decode, and asks paho to look for queued
messages only when one can exist (gateway/mqtt/netloop.py, ``SerialisedClient._packet_read`` and
``_update_inflight``; issue 14). What the application sees stays paho's: every ack reaches ``on_publish`` once, in
order, with its message id and reason; failures and properties take paho's own path; messages beyond paho's
in-flight window go out as acks free it; a reconnection re-sends what was not acknowledged.

The broker here is the test itself on the other end of a real socket (a socket pair, or a loopback TCP listener
for the reconnection), so that it can send the exact PUBACK bytes a case needs; the last test uses Mosquitto."""

from __future__ import annotations

import inspect
import random
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt.netloop import NetLoop, SerialisedClient
from tests.conftest import Broker
from tests.mqtt_support import recorder, wait_until

PROTOCOLS = [pytest.param(mqtt.MQTTv5, id="mqtt5"), pytest.param(mqtt.MQTTv311, id="mqtt311")]


@dataclass
class Ack:
    mid: int
    reason: ReasonCode
    properties: Properties | None


@dataclass
class Published:
    mid: int
    dup: bool
    payload: bytes


def puback(mid: int, tail: bytes = b"") -> bytes:
    """A PUBACK: the message id, and under MQTT 5 optionally a reason code and properties (``tail``)."""
    return bytes([0x40, 2 + len(tail)]) + struct.pack("!H", mid) + tail


def read_publishes(data: bytes, protocol: int) -> list[Published]:
    """The QoS 1 PUBLISH packets in ``data`` (what the client wrote), decoded as a broker would."""
    found, pos = [], 0
    while pos < len(data):
        header, length, shift = data[pos], 0, 0
        pos += 1
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 127) << shift
            shift += 7
            if not byte & 128:
                break
        body, pos = data[pos:pos + length], pos + length
        if header & 0xF0 != 0x30:
            continue
        (topic_length,) = struct.unpack("!H", body[:2])
        at = 2 + topic_length
        (mid,) = struct.unpack("!H", body[at:at + 2])
        at += 2
        if protocol == mqtt.MQTTv5:
            at += 1 + body[at]  # properties: one length byte for the short ones paho writes here
        found.append(Published(mid, bool(header & 0x08), body[at:]))
    return found


def drain(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


class Pair:
    """A SerialisedClient connected (as paho sees it) to the test's end of a socket pair."""

    def __init__(self, protocol: int, inflight: int = 20) -> None:
        self.protocol = protocol
        self.client = SerialisedClient(CallbackAPIVersion.VERSION2, client_id="fast-path", protocol=protocol)
        self.client.max_inflight_messages_set(inflight)
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.broker.setblocking(False)
        self.client._sock = self.ours  # what connect() would have set, without a CONNECT/CONNACK exchange
        self.client._state = _ConnectionState.MQTT_CS_CONNECTED
        self.acks: list[Ack] = []
        self.client.on_publish = lambda client, userdata, mid, reason, properties: self.acks.append(
            Ack(mid, reason, properties))

    def publish(self, count: int) -> list[int]:
        return [self.client.publish("gateway/fast/alarm", f"{n}".encode(), qos=1).mid for n in range(count)]

    def answer(self, data: bytes) -> None:
        self.broker.sendall(data)
        assert self.client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS

    def sent(self) -> list[Published]:
        return read_publishes(drain(self.broker), self.protocol)

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


@pytest.fixture(params=PROTOCOLS)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    made = Pair(request.param)
    yield made
    made.close()


# -- what the fast path relies on in paho (a release that changes it fails here) ------------------------------


def test_paho_decodes_a_two_byte_puback_as_the_success_and_empty_properties_the_fast_path_hands_on() -> None:
    for protocol in (mqtt.MQTTv5, mqtt.MQTTv311):
        decoded = _packet.decode_puback(0x40, b"\x01\x02", protocol)
        assert decoded.mid == 0x0102
        assert decoded.reason == ReasonCode(PacketTypes.PUBACK)
        assert not decoded.reason.is_failure
        empty = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]  # paho's is unannotated
        assert str(decoded.properties) == str(empty) == "[]"


def test_paho_still_informs_on_publish_through_the_hooks_the_fast_path_calls() -> None:
    handle = inspect.getsource(mqtt.Client._handle_pubackcomp)
    assert "with self._out_message_mutex:" in handle
    assert "if mid in self._out_messages:" in handle
    assert "self._do_on_publish(mid, reasonCode, properties)" in handle
    assert list(inspect.signature(mqtt.Client._do_on_publish).parameters) == [
        "self", "mid", "reason_code", "properties"]
    read = inspect.getsource(mqtt.Client._packet_read)
    assert "if self._in_packet['command'] == 0:" in read  # no packet half read: the next byte starts one
    assert "self._last_bytes_received = time_func()" in read


def test_paho_still_keeps_only_qos_1_and_2_messages_and_counts_those_in_flight() -> None:
    # SerialisedClient._update_inflight skips paho's walk when it holds no more messages than it has in flight.
    publish = inspect.getsource(mqtt.Client.publish)
    assert "if qos == 0:" in publish and publish.index("if qos == 0:") < publish.index("self._out_messages[")
    update = inspect.getsource(mqtt.Client._update_inflight)
    assert "m.qos > 0 and m.state == mqtt_ms_queued" in update
    assert "self._update_inflight()" in inspect.getsource(mqtt.Client._do_on_publish)
    assert "self._inflight_messages = 0" in inspect.getsource(mqtt.Client._messages_reconnect_reset_out)


# -- behaviour -----------------------------------------------------------------------------------------------


def test_every_success_ack_reaches_on_publish_once_in_order_with_its_message_id(pair: Pair) -> None:
    mids = pair.publish(50)
    pair.answer(b"".join(puback(mid) for mid in mids))
    assert [ack.mid for ack in pair.acks] == mids
    assert all(ack.reason == ReasonCode(PacketTypes.PUBACK) for ack in pair.acks)
    assert pair.client._out_messages == {}
    assert pair.client._inflight_messages == 0


def test_a_second_ack_for_the_same_message_is_not_reported_again(pair: Pair) -> None:
    (mid,) = pair.publish(1)
    pair.answer(puback(mid) + puback(mid))
    assert [ack.mid for ack in pair.acks] == [mid]


def test_an_ack_split_across_two_reads_is_reported_once_whole(pair: Pair) -> None:
    first, second = pair.publish(2)
    pair.answer(puback(first) + puback(second)[:3])
    pair.answer(puback(second)[3:])
    assert [ack.mid for ack in pair.acks] == [first, second]


def test_a_failure_ack_with_properties_keeps_its_reason_and_properties_and_its_place() -> None:
    pair = Pair(mqtt.MQTTv5)
    try:
        first, refused, last = pair.publish(3)
        reason_string = b"\x1f\x00\x04nope"  # property 0x1F ReasonString, "nope"
        not_authorized = bytes([0x87, len(reason_string)]) + reason_string
        pair.answer(puback(first) + puback(refused, not_authorized) + puback(last))
        assert [ack.mid for ack in pair.acks] == [first, refused, last]
        assert pair.acks[1].reason.value == 0x87 and pair.acks[1].reason.is_failure
        assert getattr(pair.acks[1].properties, "ReasonString", None) == "nope"
        assert not pair.acks[0].reason.is_failure and not pair.acks[2].reason.is_failure
    finally:
        pair.close()


def test_an_ack_whose_callback_raised_is_reported_again_at_the_next_read_as_paho_does() -> None:
    """paho leaves a packet it could not report unread (its ``_in_packet`` is not reset) and reports it at the
    next read; the fast path must not drop it, or the message would hold its in-flight place until a reconnect."""
    made = Pair(mqtt.MQTTv311)
    seen: list[int] = []
    fail = [True]

    def on_publish(client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, props: Properties) -> None:
        if fail.pop() if fail else False:
            raise RuntimeError("once")
        seen.append(mid)

    made.client.on_publish = on_publish
    try:
        (mid,) = made.publish(1)
        drain(made.broker)
        made.broker.sendall(puback(mid))
        with pytest.raises(RuntimeError):
            made.client.loop_read()
        made.client.loop_read()
        assert seen == [mid]
        assert made.client._out_messages == {} and made.client._inflight_messages == 0
    finally:
        made.close()


def test_acks_move_the_clock_paho_keeps_alive_by(pair: Pair) -> None:
    (mid,) = pair.publish(1)
    pair.client._last_bytes_received = 0.0
    pair.answer(puback(mid))
    assert pair.client._last_bytes_received > 0.0


def test_messages_queued_beyond_the_in_flight_window_go_out_as_acks_free_it() -> None:
    pair = Pair(mqtt.MQTTv5, inflight=2)
    try:
        mids = pair.publish(5)
        assert [p.mid for p in pair.sent()] == mids[:2]
        pair.answer(puback(mids[0]))
        assert [p.mid for p in pair.sent()] == mids[2:3]
        pair.answer(puback(mids[1]) + puback(mids[2]))
        assert [p.mid for p in pair.sent()] == mids[3:5]
        pair.answer(puback(mids[3]) + puback(mids[4]))
        assert [ack.mid for ack in pair.acks] == mids
        assert pair.client._out_messages == {} and pair.client._inflight_messages == 0
    finally:
        pair.close()


class FakeBroker:
    """A loopback TCP listener the test answers by hand: CONNACK (session present), then what the case needs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self, client: SerialisedClient) -> socket.socket:
        client.reconnect()  # connects and queues CONNECT (written by loop_write)
        conn, _ = self.listener.accept()
        conn.setblocking(False)
        client.loop_write()
        wait_until(lambda: drain_one(conn), what="CONNECT")
        conn.sendall(b"\x20\x03\x01\x00\x00")  # CONNACK: session present, success, no properties
        wait_until(lambda: client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and client.is_connected(),
                   what="CONNACK")
        client.loop_write()
        self.conn = conn
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def collect(conn: socket.socket, count: int, what: str) -> list[Published]:
    """The next ``count`` PUBLISH packets the client writes (TCP may deliver them in pieces)."""
    data = bytearray()

    def enough() -> list[Published]:
        data.extend(drain(conn))
        found = read_publishes(bytes(data), mqtt.MQTTv5) if data else []
        return found if len(found) >= count else []
    return wait_until(enough, what=what)


def drain_one(conn: socket.socket) -> bool:
    try:
        return bool(conn.recv(1 << 16))
    except BlockingIOError:
        return False


def reconnecting_client(broker: FakeBroker, client_id: str,
                        log_levels: frozenset[int] | None = None) -> tuple[SerialisedClient, list[int]]:
    """A client of ``broker`` with 3 messages in flight at most and a kept session, and the mids its
    ``on_publish`` reports, in order."""
    client = SerialisedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.log_levels = log_levels
    client.max_inflight_messages_set(3)
    acked: list[int] = []
    client.on_publish = lambda c, u, mid, reason, properties: acked.append(mid)
    client.connect_async("127.0.0.1", broker.port, clean_start=False)
    return client, acked


def ack_every_one(client: SerialisedClient, conn: socket.socket, mids: list[int], acked: list[int],
                  published: list[int]) -> None:
    """The broker acks ``mids``: then every one of ``published`` has been reported acked, in order, and the
    client holds none of them any more."""
    conn.sendall(b"".join(puback(mid) for mid in mids))
    wait_until(lambda: client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and len(acked) == len(published),
               what="every ack")
    assert acked == published
    assert client._out_messages == {} and client._inflight_messages == 0


def test_a_reconnection_resends_every_unacknowledged_message_and_takes_their_acks() -> None:
    broker = FakeBroker()
    client, acked = reconnecting_client(broker, "fast-path-re")
    try:
        conn = broker.accept(client)
        mids = [client.publish("gateway/fast/alarm", str(n).encode(), qos=1).mid for n in range(6)]
        client.loop_write()
        assert [p.mid for p in collect(conn, 3, "the first window")] == mids[:3]
        conn.sendall(puback(mids[0]))
        wait_until(lambda: client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and acked, what="the first ack")
        conn.close()  # the connection drops with mids[1:4] in flight and mids[4:] queued
        conn = broker.accept(client)
        resent = collect(conn, 5, "the re-sent messages")
        assert [p.mid for p in resent] == mids[1:]
        assert [p.dup for p in resent] == [True, True, True, False, False]  # mids[3] went out with the first ack
        ack_every_one(client, conn, mids[1:], acked, mids)
    finally:
        client._sock_close()
        broker.close()


def test_mosquittos_acks_take_the_fast_path_and_every_message_arrives(broker: Broker) -> None:
    client = SerialisedClient(CallbackAPIVersion.VERSION2, client_id="fast-path-real", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(10)
    reasons: list[ReasonCode] = []
    done = threading.Event()

    def on_publish(c: mqtt.Client, u: object, mid: int, reason: ReasonCode, properties: Properties) -> None:
        reasons.append(reason)
        if len(reasons) == 200:
            done.set()

    client.on_publish = on_publish
    client.connect_async(broker.host, broker.port)
    loop = NetLoop(client, delays=(1.0, 1.0), before_attempt=lambda: None, name="fast-path-real")
    topic = "gateway/fast-real/alarm"
    with recorder(broker.host, broker.port, topic) as hub:
        loop.start()
        wait_until(client.is_connected, what="connection")
        for n in range(200):
            client.publish(topic, str(n).encode(), qos=1)
        assert done.wait(10)
        received = hub.wait_for(topic, 200)
        loop.disconnect(1.0)
        loop.join(5)
    assert [m.payload for m in received] == [str(n).encode() for n in range(200)]
    assert all(reason is client._success for reason in reasons)  # Mosquitto's success PUBACK is 4 bytes


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
    ours.setblocking(False)
    return ours, theirs


def test_a_connection_reset_is_still_reported_by_paho_as_a_failed_read() -> None:
    pair = Pair(mqtt.MQTTv5)
    pair.ours.close()
    pair.ours, broker = tcp_pair()
    pair.client._sock = pair.ours
    errors: list[str] = []
    pair.client.on_log = lambda c, u, level, text: errors.append(text) if level == mqtt.MQTT_LOG_ERR else None
    try:
        broker.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        broker.close()  # with no linger: a reset
        wait_until(lambda: pair.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS, what="the reset read")
        assert any("failed to receive on socket" in text for text in errors)
        assert pair.client._sock is None
    finally:
        pair.close()


def test_the_end_of_the_stream_still_ends_the_connection(pair: Pair) -> None:
    pair.broker.close()
    assert pair.client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert pair.client._sock is None


def test_paho_still_logs_each_packet_through_the_hook_that_filters_levels() -> None:
    assert "self._easy_log(" in inspect.getsource(mqtt.Client._send_publish)
    assert "self._easy_log(" in inspect.getsource(mqtt.Client._packet_read)


def test_a_client_told_to_log_errors_only_hands_on_log_its_errors_and_no_per_packet_lines() -> None:
    pair = Pair(mqtt.MQTTv5)
    pair.ours.close()
    pair.ours, broker = tcp_pair()
    pair.client._sock = pair.ours
    pair.client.log_levels = frozenset({mqtt.MQTT_LOG_ERR})
    lines: list[tuple[int, str]] = []
    pair.client.on_log = lambda c, u, level, text: lines.append((level, text))
    try:
        pair.publish(3)
        broker.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        broker.close()
        wait_until(lambda: pair.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS, what="the reset read")
        assert [level for level, _ in lines] == [mqtt.MQTT_LOG_ERR]
        assert "failed to receive on socket" in lines[0][1]
    finally:
        pair.close()


def test_a_client_left_as_paho_made_it_logs_every_packet(pair: Pair) -> None:
    lines: list[str] = []
    pair.client.on_log = lambda c, u, level, text: lines.append(text)
    (mid,) = pair.publish(1)
    pair.answer(puback(mid))
    assert any(text.startswith("Sending PUBLISH") for text in lines)
    assert f"Received PUBACK (Mid: {mid})" in lines


# -- a run of success acks in one call (``on_publish_run``) ------------------------------------------------------


def test_paho_still_settles_an_ack_as_the_run_path_copies_it() -> None:
    # SerialisedClient._settle_run does what _do_on_publish does, in its order, once per run.
    settle = inspect.getsource(mqtt.Client._do_on_publish)
    steps = ["with self._in_callback_mutex:", "msg = self._out_messages.pop(mid)",
             "msg.info._set_as_published()", "self._inflight_messages -= 1", "rc = self._update_inflight()"]
    assert all(step in settle for step in steps)
    assert [settle.index(step) for step in steps] == sorted(settle.index(step) for step in steps)


class RunPair(Pair):
    """A :class:`Pair` whose client logs errors only and reports runs of success acks to ``on_publish_run``;
    :attr:`reported` holds what either callback was told, in order: ``("run", [mids])`` or ``("one", mid)``."""

    def __init__(self, protocol: int, inflight: int = 20) -> None:
        super().__init__(protocol, inflight)
        self.client.log_levels = frozenset({mqtt.MQTT_LOG_ERR})
        self.reported: list[tuple[str, object]] = []
        self.client.on_publish = lambda client, userdata, mid, reason, properties: self.reported.append(
            ("one", (mid, reason.value)))
        self.client.on_publish_run = lambda mids: self.reported.append(("run", list(mids)))


@pytest.fixture(params=PROTOCOLS)
def run_pair(request: pytest.FixtureRequest) -> Iterator[RunPair]:
    made = RunPair(request.param)
    yield made
    made.close()


def test_success_acks_read_together_reach_on_publish_run_in_one_call_in_order(run_pair: RunPair) -> None:
    infos = [run_pair.client.publish("gateway/fast/alarm", b"x", qos=1) for _ in range(50)]
    mids = [info.mid for info in infos]
    run_pair.answer(b"".join(puback(mid) for mid in mids))
    assert run_pair.reported == [("run", mids)]
    assert all(info.is_published() for info in infos)
    assert run_pair.client._out_messages == {}
    assert run_pair.client._inflight_messages == 0


def test_a_second_ack_for_the_same_message_in_a_run_is_not_reported_again(run_pair: RunPair) -> None:
    first, second = run_pair.publish(2)
    run_pair.answer(puback(first) + puback(second) + puback(first))
    run_pair.answer(puback(second))
    assert run_pair.reported == [("run", [first, second])]
    assert run_pair.client._inflight_messages == 0


def test_an_ack_split_across_two_reads_ends_the_run_and_is_reported_once_whole_by_paho(run_pair: RunPair) -> None:
    first, second = run_pair.publish(2)
    run_pair.answer(puback(first) + puback(second)[:3])
    run_pair.answer(puback(second)[3:])
    assert run_pair.reported == [("run", [first]), ("one", (second, 0))]


def test_a_failure_ack_between_success_runs_goes_to_on_publish_in_its_place() -> None:
    pair = RunPair(mqtt.MQTTv5)
    try:
        first, refused, last = pair.publish(3)
        pair.answer(puback(first) + puback(refused, b"\x87\x00") + puback(last))
        assert pair.reported == [("run", [first]), ("one", (refused, 0x87)), ("run", [last])]
        assert pair.client._out_messages == {} and pair.client._inflight_messages == 0
    finally:
        pair.close()


def test_a_run_whose_callback_raised_is_reported_again_whole_at_the_next_read() -> None:
    """As paho leaves an ack it could not report unread: the messages keep their place until it is reported."""
    pair = RunPair(mqtt.MQTTv311)
    fail = [True]

    def run(mids: list[int]) -> None:
        if fail.pop() if fail else False:
            raise RuntimeError("once")
        pair.reported.append(("run", list(mids)))

    pair.client.on_publish_run = run
    try:
        mids = pair.publish(3)
        drain(pair.broker)
        pair.broker.sendall(b"".join(puback(mid) for mid in mids))
        with pytest.raises(RuntimeError):
            pair.client.loop_read()
        assert len(pair.client._out_messages) == 3
        pair.client.loop_read()
        assert pair.reported == [("run", mids)]
        assert pair.client._out_messages == {} and pair.client._inflight_messages == 0
    finally:
        pair.close()


def test_messages_queued_beyond_the_in_flight_window_go_out_once_a_run_frees_it() -> None:
    pair = RunPair(mqtt.MQTTv5, inflight=2)
    try:
        mids = pair.publish(5)
        assert [p.mid for p in pair.sent()] == mids[:2]
        pair.answer(puback(mids[0]) + puback(mids[1]))
        assert [p.mid for p in pair.sent()] == mids[2:4]
        pair.answer(puback(mids[2]) + puback(mids[3]))
        assert [p.mid for p in pair.sent()] == mids[4:5]
        pair.answer(puback(mids[4]))
        assert pair.reported == [("run", mids[:2]), ("run", mids[2:4]), ("run", mids[4:])]
        assert pair.client._out_messages == {} and pair.client._inflight_messages == 0
    finally:
        pair.close()


def test_a_client_that_logs_every_packet_reports_each_ack_to_on_publish_with_its_debug_line() -> None:
    pair = RunPair(mqtt.MQTTv5)
    lines: list[str] = []
    pair.client.log_levels = None
    pair.client.on_log = lambda c, u, level, text: lines.append(text)
    try:
        first, second = pair.publish(2)
        pair.answer(puback(first) + puback(second))
        assert pair.reported == [("one", (first, 0)), ("one", (second, 0))]
        assert f"Received PUBACK (Mid: {second})" in lines
    finally:
        pair.close()


def test_a_reconnection_resends_what_a_run_left_unacknowledged_and_takes_the_rest_as_runs() -> None:
    broker = FakeBroker()
    client, acked = reconnecting_client(broker, "fast-path-run", log_levels=frozenset({mqtt.MQTT_LOG_ERR}))
    client.on_publish_run = acked.extend
    try:
        conn = broker.accept(client)
        mids = [client.publish("gateway/fast/alarm", str(n).encode(), qos=1).mid for n in range(6)]
        client.loop_write()
        assert [p.mid for p in collect(conn, 3, "the first window")] == mids[:3]
        conn.sendall(puback(mids[0]) + puback(mids[1]))
        wait_until(lambda: client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS and len(acked) == 2,
                   what="the first run")
        conn.close()  # the connection drops with mids[2:5] in flight and mids[5] queued
        conn = broker.accept(client)
        resent = collect(conn, 4, "the re-sent messages")
        assert [p.mid for p in resent] == mids[2:]
        assert [p.dup for p in resent] == [True, True, True, False]
        ack_every_one(client, conn, mids[2:], acked, mids)
    finally:
        client._sock_close()
        broker.close()


def test_mosquittos_acks_reach_a_run_callback_and_every_message_arrives(broker: Broker) -> None:
    client = SerialisedClient(CallbackAPIVersion.VERSION2, client_id="fast-path-run-real", protocol=mqtt.MQTTv5)
    client.log_levels = frozenset({mqtt.MQTT_LOG_ERR})
    client.max_inflight_messages_set(50)
    acked: list[int] = []
    singles: list[int] = []
    client.on_publish = lambda c, u, mid, reason, properties: singles.append(mid)
    client.on_publish_run = acked.extend
    client.connect_async(broker.host, broker.port)
    loop = NetLoop(client, delays=(1.0, 1.0), before_attempt=lambda: None, name="fast-path-run-real")
    topic = "gateway/fast-run-real/alarm"
    with recorder(broker.host, broker.port, topic) as hub:
        loop.start()
        wait_until(client.is_connected, what="connection")
        mids = [client.publish(topic, str(n).encode(), qos=1).mid for n in range(300)]
        wait_until(lambda: len(acked) == 300, what="every ack")
        received = hub.wait_for(topic, 300)
        loop.disconnect(1.0)
        loop.join(5)
    assert acked == mids and singles == []
    assert [m.payload for m in received] == [str(n).encode() for n in range(300)]


class Twin:
    """One client of a :func:`test_a_run_leaves_paho_as_its_own_per_ack_path_would_for_any_acks_of_sent_messages`
    pair: paho's own ``Client``, or the uplink's with a run callback; what it was told, in order."""

    def __init__(self, kind: type[mqtt.Client], protocol: MQTTProtocolVersion, inflight: int) -> None:
        self.client = kind(CallbackAPIVersion.VERSION2, client_id="twin", protocol=protocol)
        self.client.max_inflight_messages_set(inflight)
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.broker.setblocking(False)
        self.client._sock = self.ours
        self.client._state = _ConnectionState.MQTT_CS_CONNECTED
        self.told: list[int] = []
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.client.on_publish = lambda client, userdata, mid, reason, properties: self.told.append(mid)
        if isinstance(self.client, SerialisedClient):
            self.client.log_levels = frozenset({mqtt.MQTT_LOG_ERR})
            self.client.on_publish_run = self.told.extend

    def receive(self, data: bytes) -> None:
        self.broker.sendall(data)
        for _ in range(len(data)):  # paho reads at most as many packets a call as it holds messages
            self.client.loop_read()

    def state(self, protocol: int) -> tuple[object, ...]:
        held = [(mid, m.state, m.dup) for mid, m in self.client._out_messages.items()]
        sent = [(p.mid, p.dup) for p in read_publishes(drain(self.broker), protocol)]
        return held, self.client._inflight_messages, self.told, [i.is_published() for i in self.infos], sent

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


def test_a_run_leaves_paho_as_its_own_per_ack_path_would_for_any_acks_of_sent_messages() -> None:
    """Publishes and reads of PUBACKs in any mix: for messages sent (never-sent ones are a broker's bug, below),
    unknown ids, duplicates, failure reasons and reason codes (MQTT 5), packets split across reads, windows of
    any size (0: unlimited), paho's session, its in-flight count, what it sent, what it told and the waiters'
    flags are the same through the run path as through paho's own."""
    for seed in range(400):
        rnd = random.Random(seed)
        protocol = rnd.choice([mqtt.MQTTv5, mqtt.MQTTv311])
        inflight = rnd.choice([0, 1, 2, 3, 5, 20])
        paho, ours = Twin(mqtt.Client, protocol, inflight), Twin(SerialisedClient, protocol, inflight)
        try:
            for _ in range(rnd.randint(1, 12)):
                if rnd.random() < 0.5:
                    for _ in range(rnd.randint(1, 6)):
                        for twin in (paho, ours):
                            twin.infos.append(twin.client.publish("gateway/fast/alarm", b"x", qos=1))
                else:
                    sent = [mid for mid, m in paho.client._out_messages.items() if m.state != mqtt.mqtt_ms_queued]
                    mids = [rnd.choice([*sent, 60_000 + rnd.randint(0, 9)]) for _ in range(rnd.randint(1, 8))]
                    tails = [b"", b"", b"\x87\x00", b"\x00", b"\x10\x00"] if protocol == mqtt.MQTTv5 else [b""]
                    data = b"".join(puback(mid, rnd.choice(tails)) for mid in mids)
                    cut = rnd.randint(0, len(data))
                    for part in (data[:cut], data[cut:]):
                        if part:
                            paho.receive(part)
                            ours.receive(part)
                assert ours.state(protocol) == paho.state(protocol), f"seed {seed}"
        finally:
            paho.close()
            ours.close()


def test_an_ack_of_a_message_never_sent_frees_no_in_flight_place_in_a_run() -> None:
    """A broker's bug (a compliant broker acks only what it was sent on the connection, and read-ahead from an
    earlier socket is dropped): the message is reported and leaves paho's session, but the window keeps its
    in-flight messages counted. paho's own path differs here: it frees a place the message never held and sends
    one queued message beyond ``max_inflight`` while counting it within."""
    pair = RunPair(mqtt.MQTTv311, inflight=2)
    try:
        first, second, never_sent, waiting = pair.publish(4)
        assert [p.mid for p in pair.sent()] == [first, second]
        pair.answer(puback(never_sent))
        assert pair.reported == [("run", [never_sent])]
        assert pair.sent() == []
        assert pair.client._inflight_messages == 2
        pair.answer(puback(first))
        assert [p.mid for p in pair.sent()] == [waiting]
        assert pair.client._inflight_messages == 2
    finally:
        pair.close()
