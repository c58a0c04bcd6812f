"""A round of publishes reaches the socket in one ``send`` (gateway/mqtt/netloop.py, ``SerialisedClient.corked`` and
``_packet_write``; issue 14: one system call per message was ~6 % of the process at 10,000 lines/s). What paho keeps
and what the broker receives stay paho's: every message in its session state at ``publish``, the packets byte for
byte and in order, what the socket does not take left for the loop, a QoS 0 publish reported once written.

The broker is the test's end of a real socket pair (tests/test_mqtt_puback_fast_path.py's ``Pair``); the client's end
is a real socket that counts its ``send`` calls."""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
import pytest

from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.outbox import Outbox, Row
from gateway.mqtt.window import PublishWindow
from tests.test_mqtt_puback_fast_path import PROTOCOLS, Pair, drain, read_publishes

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class CountingSocket(socket.socket):
    """A real socket that counts the ``send`` calls made on it."""

    sends = 0

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        self.sends += 1
        return super().send(data, flags)


def counting(pair: Pair) -> CountingSocket:
    sock = CountingSocket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=pair.ours.detach())
    sock.setblocking(False)
    pair.ours = sock
    pair.client._sock = sock
    return sock


@pytest.fixture(params=PROTOCOLS)
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    made = Pair(request.param, inflight=100)
    yield made
    made.close()


# -- what the joined write relies on in paho (a release that changes it fails here) --------------------------------


def test_paho_still_acts_once_written_only_on_qos_0_publishes_and_disconnect() -> None:
    write = inspect.getsource(mqtt.Client._packet_write)
    assert write.count("packet['command']") == 2
    assert "if (packet['command'] & 0xF0) == PUBLISH and packet['qos'] == 0:" in write
    assert "if (packet['command'] & 0xF0) == DISCONNECT:" in write
    assert "self._last_msg_out = time_func()" in write


def test_paho_still_queues_rather_than_writes_while_a_socket_write_callback_is_set() -> None:
    queue = inspect.getsource(mqtt.Client._packet_queue)
    assert "self._on_socket_register_write is None" in queue
    assert "self._out_packet.append(mpkt)" in queue
    assert '"to_process": len(packet),' in queue and '"pos": 0,' in queue  # the fields the joined write advances


# -- behaviour ---------------------------------------------------------------------------------------------------


def test_a_corked_round_of_publishes_reaches_the_socket_in_one_send(pair: Pair) -> None:
    sock = counting(pair)
    with pair.client.corked():
        mids = pair.publish(20)
        assert sock.sends == 0
    assert sock.sends == 1
    sent = pair.sent()
    assert [p.mid for p in sent] == mids
    assert [p.payload for p in sent] == [f"{n}".encode() for n in range(20)]
    assert not pair.client.want_write()


def test_a_publish_outside_a_cork_is_written_at_once(pair: Pair) -> None:
    sock = counting(pair)
    (mid,) = pair.publish(1)
    assert sock.sends == 1
    assert [p.mid for p in pair.sent()] == [mid]


def test_every_published_message_is_in_pahos_session_state_before_the_round_is_written(pair: Pair) -> None:
    counting(pair)
    with pair.client.corked():
        mids = pair.publish(5)
        assert sorted(pair.client._out_messages) == sorted(mids)


def test_what_the_socket_buffer_does_not_take_waits_in_order_and_goes_out_whole_once(pair: Pair) -> None:
    pair.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payloads = [bytes([65 + n % 26]) * 3000 for n in range(60)]
    with pair.client.corked():
        mids = [pair.client.publish("gateway/fast/alarm", payload, qos=1).mid for payload in payloads]
    assert pair.client.want_write()  # 180 kB do not fit: the rest waits for the loop
    received = b""
    while pair.client.want_write():
        received += drain(pair.broker)
        pair.client.loop_write()
    received += drain(pair.broker)
    sent = read_publishes(received, pair.protocol)
    assert [p.mid for p in sent] == mids
    assert [p.payload for p in sent] == payloads


def test_a_qos_0_publish_in_a_round_is_still_reported_published_once_written(pair: Pair) -> None:
    counting(pair)
    with pair.client.corked():
        first = pair.client.publish("gateway/fast/alarm", b"1", qos=1)
        quick = pair.client.publish("gateway/fast/state", b"2", qos=0)
        last = pair.client.publish("gateway/fast/alarm", b"3", qos=1)
        assert not quick.is_published()
    assert quick.is_published()
    assert [ack.mid for ack in pair.acks] == [quick.mid]
    received = drain(pair.broker)
    assert received.index(b"alarm\x00") < received.index(b"state") < received.rindex(b"alarm\x00")
    assert first.mid != last.mid


def numbered(n: int) -> Callable[[int], bytes]:
    return lambda seq: f'{{"n":{n}}}'.encode()


def test_the_publisher_window_hands_paho_a_round_of_rows_in_one_send(tmp_path: Path, pair: Pair) -> None:
    sock = counting(pair)
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    w = PublishWindow(outbox, BridgeCounters(), size=50, drain_rate=1000.0, wake=lambda: None)
    for n in range(30):
        outbox.add("gateway/t/event/x", numbered(n), ts=0.0)
    w.send(pair.client)
    assert sock.sends == 1
    assert [p.payload for p in pair.sent()] == [f'{{"n":{n}}}'.encode() for n in range(30)]


def test_a_corked_round_does_not_wake_the_network_loop_for_packets_it_writes_itself(pair: Pair) -> None:
    counting(pair)
    pokes: list[int] = []
    pair.client.poke = lambda: pokes.append(1)
    with pair.client.corked():
        pair.publish(20)
    assert pokes == []


def test_a_corked_round_wakes_the_network_loop_once_when_the_socket_did_not_take_it_all(pair: Pair) -> None:
    pair.ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    pokes: list[int] = []
    pair.client.poke = lambda: pokes.append(1)
    with pair.client.corked():
        for _ in range(60):
            pair.client.publish("gateway/fast/alarm", b"x" * 3000, qos=1)
    assert pokes == [1]
    assert pair.client.want_write()


def test_a_round_reading_its_rows_from_the_disk_leaves_the_client_free_for_the_network_and_other_publishes(
    tmp_path: Path, pair: Pair,
) -> None:
    """The cork queues this thread's packets; it does not hold the client's lock while the round reads the outbox
    (on an SD card, a backlog's rows): the network thread (acks, PINGREQ) and other publishes (results, states)
    go on meanwhile."""
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    for n in range(10):
        outbox.add("gateway/t/event/x", numbered(n), ts=0.0)
    fetch = outbox.fetch
    reading, read_on = threading.Event(), threading.Event()

    def slow_fetch(after: int, limit: int) -> list[Row]:
        reading.set()
        read_on.wait(5)
        return fetch(after, limit)

    outbox.fetch = slow_fetch  # type: ignore[method-assign]
    w = PublishWindow(outbox, BridgeCounters(), size=50, drain_rate=1000.0, wake=lambda: None)
    round_ = threading.Thread(target=w.send, args=(pair.client,))
    round_.start()
    try:
        assert reading.wait(5)
        free = pair.client.io_lock.acquire(timeout=2)
        if free:
            pair.client.io_lock.release()
    finally:
        read_on.set()
        round_.join()
        outbox.close()
    assert free, "the client's lock was held while the round read the outbox"
    assert [p.payload for p in pair.sent()] == [f'{{"n":{n}}}'.encode() for n in range(10)]


def test_another_threads_cork_ending_does_not_end_this_threads_cork(pair: Pair) -> None:
    """The dispatcher corks each batch of events and the publisher each round, at the same time: one thread's cork
    ending must not uncork the other's, whose later publishes would go out one ``send`` each (issue 14)."""
    sock = counting(pair)
    with pair.client.corked():
        pair.publish(3)

        def other_round() -> None:
            with pair.client.corked():
                pair.client.publish("gateway/fast/state", b"other", qos=1)

        other = threading.Thread(target=other_round)
        other.start()
        other.join()
        sends = sock.sends  # the other round wrote the queue, ours first: one queue, in order
        pair.publish(5)
        assert sock.sends == sends
    assert sock.sends == sends + 1
    payloads = [p.payload for p in pair.sent()]
    assert payloads[:4] == [b"0", b"1", b"2", b"other"]
    assert payloads[4:] == [f"{n}".encode() for n in range(5)]


def test_a_publish_on_another_thread_during_a_cork_is_written_at_once_with_what_the_cork_queued(pair: Pair) -> None:
    sock = counting(pair)
    with pair.client.corked():
        pair.publish(2)
        other = threading.Thread(target=lambda: pair.client.publish("gateway/fast/state", b"other", qos=1))
        other.start()
        other.join()
        assert sock.sends == 1
    assert [p.payload for p in pair.sent()] == [b"0", b"1", b"other"]


def test_a_batchs_messages_are_not_held_behind_an_actuator_write_later_in_the_batch(pair: Pair) -> None:
    """A bus batch holding an alarm reading, then a command to an output whose write blocks (a Modbus RTU slave
    that does not answer: ``timeout_s``, 0.5 s by default, on the dispatcher thread). The reading was handed to paho
    first; its message must be on the wire when the write starts, not wait in the batch's cork until it ends."""
    from core.events import Event, Kind, Value
    from gateway.bus import Bus
    from gateway.dispatcher import Dispatcher
    from tests.helpers import virtual_events
    from tests.test_dispatcher import FakeRelay

    on_wire_when_applied: list[list[bytes]] = []

    class SlowRelay(FakeRelay):
        def apply(self, entity: str, value: Value) -> Value:
            on_wire_when_applied.append([p.payload for p in pair.sent()])  # (the write would block here)
            return super().apply(entity, value)

    def forward(event: Event) -> None:
        if event.kind is Kind.READING:
            pair.client.publish(f"gateway/event/{event.entity}", str(event.value).encode(), qos=1)

    counting(pair)
    _, events = virtual_events()
    dispatcher = Dispatcher(Bus(), events, actuators={"relay": SlowRelay()}, forward=forward)
    dispatcher.batch_scope = pair.client.batch  # as gateway/app.py wires MqttBridge.batch
    dispatcher.on_idle.append(dispatcher.stop)
    dispatcher.bus.post(events.reading("smoke", 1.0, ""))
    dispatcher.bus.post(events.make(Kind.COMMAND, "relay", True))
    dispatcher.run(tick=0.01)
    assert on_wire_when_applied == [[b"1.0"]]


def test_a_corks_end_does_not_wait_for_the_clients_lock_and_leaves_its_packets_to_the_network_loop(pair: Pair) -> None:
    """The network thread holds the client's lock around a connection attempt (up to paho's connect timeout): the
    dispatcher's batch, which ends in a cork's end, must not wait for it."""
    sock = counting(pair)
    pokes: list[int] = []
    pair.client.poke = lambda: pokes.append(1)
    held, release = threading.Event(), threading.Event()

    def connection_attempt() -> None:
        with pair.client.io_lock:
            held.set()
            release.wait(10)

    attempt = threading.Thread(target=connection_attempt)
    with pair.client.corked():
        pair.publish(3)
        attempt.start()
        assert held.wait(5)
    try:
        assert sock.sends == 0
        assert pokes == [1]
    finally:
        release.set()
        attempt.join(5)
    assert pair.client.want_write()
    pair.client.loop_write()  # what the woken loop does
    assert [p.payload for p in pair.sent()] == [b"0", b"1", b"2"]
