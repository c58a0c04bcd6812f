"""The uplink's own network loop: paho's external-loop API instead of ``loop_start`` (issue 14).

With ``loop_start``, every ``publish`` made on another thread (the dispatcher's hand-over, the publisher's rows,
retained states, results, health) queued the packet and wrote one byte to paho's socket pair to wake paho's
thread, which then wrote the packet: one thread wake-up per message, on top of the one per PUBACK. Here the
thread that publishes writes the packet itself (paho does that when no loop thread is registered: ``publish`` →
``loop_write``), and our thread (:class:`NetLoop`) wakes only for what the broker sends (PUBACKs, CONNACK,
PINGRESP), for keepalive (when it is due: :meth:`~gateway.mqtt.connection.GatewayClient.keepalive_due_in`;
paho's loop woke once a second) and when a write did not fit in the socket's buffer.

**One lock serialises every call into paho's I/O** (:class:`SerialisedClient`: ``publish``, ``subscribe``,
``unsubscribe``, ``disconnect`` from any thread; ``reconnect``, ``loop_read``, ``loop_write``, ``loop_misc`` on
our thread), because paho's packet queue and socket writes take no lock of their own: two writers could
interleave two packets' bytes. The lock is re-entrant: paho's callbacks run inside ``loop_read`` on our thread,
holding it, and publish (``online`` in ``on_connect``). A publish never waits on the network: the socket is
non-blocking, and what does not fit stays in paho's queue for our thread to write when the socket is writable.
The one long hold is ``reconnect`` (the TCP connect and the TLS handshake, up to paho's connect timeout), which
runs only while the link is down, when the dispatcher and the publisher do not publish (they check
``Link.connected``); a stop does not wait for it (:meth:`NetLoop.disconnect`).

**Reconnection is paho's ``loop_forever``'s, step for step**: the first attempt at once, then before every other
attempt paho's backoff (``reconnect_delay_set``'s minimum, doubling to its maximum, back to the minimum after a
CONNACK that accepts), then ``before_attempt`` (the link's jitter and take-over hold, outside the lock), then
``reconnect`` (which calls ``on_pre_connect``: failover aims the client there), ``on_connect_fail`` when the
socket cannot be opened; paho's own ``loop_read``/``loop_misc`` call ``on_connect``/``on_disconnect`` as before.
The inlet keeps paho's ``loop_start``: it publishes almost nothing, and its purge (lag.py) relies on paho's loop.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import paho.mqtt as paho_mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.guard import guarded
from gateway.mqtt.connection import GatewayClient

if TYPE_CHECKING:
    from paho.mqtt.client import PayloadType, SocketLike

log = logging.getLogger(__name__)



READ_AHEAD = 65536
"""Bytes :meth:`SerialisedClient._sock_recv` asks the socket for at a time."""
ACK_GATHER = 0.005
"""Seconds our thread lets what the broker sends gather after each read, once connected: at 1,500 messages a second
it reads ~7 PUBACKs a wake-up instead of one. Not while a quarter of the publish window or more is in flight
(``hurry``; :meth:`NetLoop.acks_wanted` cuts a pause short): under a flood the acks are read as they come, or the
gathering would cap the rate at a window per pause."""

PUBACK = 0x40
"""A PUBACK's first byte (packet type 4, no flags)."""
SUCCESS_PUBACK = 2
"""The remaining length of a PUBACK that says success with no properties: the message id alone (MQTT 3.1.1 always;
MQTT 5 leaves the reason code and properties out when they are success and none, as Mosquitto does)."""


WRITE_RUN = 65536
"""Bytes, at most, :meth:`SerialisedClient._packet_write` joins into one ``send``: several publishes of a round cost one
system call (and one GIL hand-over) instead of one each, and the copy stays small."""


TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux's switch out of delayed acknowledgements (tcp(7)); None elsewhere."""


def _ack_now(sock: object) -> None:
    """Acknowledge at once, at the TCP level, what the broker sent (``TCP_QUICKACK``), rather than with our next
    segment. A broker with Nagle's algorithm on (Mosquitto's default: ``set_tcp_nodelay false``) holds a PUBACK while
    its previous one is unacknowledged; a kernel that sees us send as often as we receive delays its ACKs to ride on
    our next segment. A reading's second PUBACK (its alarm's) then came with the next line, 10 ms later at 100 lines/s,
    after the outbox's commit had written its row: a 4 kB page, and another for its deletion (issue 14). The switch is
    not permanent (the kernel goes back to delaying), so it is set again after each read that brought data."""
    if TCP_QUICKACK is None:
        return
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        with contextlib.suppress(OSError):
            setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)


def _later(client: mqtt.Client, userdata: object, sock: SocketLike) -> None:
    """paho's socket-write callback while a connection attempt is made: our loop writes what waits."""


MAX_PAYLOAD = 268_435_455
"""paho's limit on a payload (MQTT's largest remaining length): larger ones raise ``ValueError`` there too."""
TOPIC_CACHE = 1024
"""Topics whose encoded, checked bytes :meth:`SerialisedClient._topic_tail` keeps (emptied when full: bounded)."""
CACHED_TOPIC_BYTES = 256
"""Only topics up to this long are kept (the gateway's are far shorter): the cache stays under 300 kB."""
PAHO_VERSIONS = ("2.1.", "2.2.")
"""The paho releases whose ``publish`` the light path was checked against, step by step
(``tests/test_mqtt_light_publish.py``); any other takes paho's own ``publish``."""


class PublishInfo(mqtt.MQTTMessageInfo):
    """paho's ``MQTTMessageInfo`` whose ``threading.Condition`` is made only when someone waits on it.

    paho makes a Condition (and its RLock) for every message, and takes it to mark the message published when its
    PUBACK comes; no message of the light path is waited on today (the publish window tracks message ids; the status
    messages link.py waits for are ``str`` and take paho's own path), but a caller may. So the light publish path
    (:meth:`SerialisedClient.publish`) hands out this:
    the same ``mid``, ``rc``, ``is_published`` and ``wait_for_publish``, with the Condition made on first use.

    Race-free under the GIL: :meth:`_set_as_published` sets the flag *before* it looks for a Condition, and a waiter
    makes the Condition *before* it looks at the flag (under the Condition, as paho's ``wait_for_publish`` does), so
    either the setter sees the waiter's Condition and notifies it, or the waiter sees the flag set."""

    __slots__ = ()
    _making = threading.Lock()
    """Makes one Condition per info when two threads want it at once (rare: only waiters make one)."""

    def __init__(self, mid: int) -> None:  # paho's, without the Condition
        self.mid = mid
        self._published = False
        self._condition = None  # type: ignore[assignment]  # made by _waitable
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._iterpos = 0

    def _waitable(self) -> None:
        if self._condition is None:
            with self._making:
                if self._condition is None:
                    self._condition = threading.Condition()

    def _set_as_published(self) -> None:
        self._published = True
        condition: threading.Condition | None = self._condition
        if condition is not None:
            with condition:
                condition.notify()

    def wait_for_publish(self, timeout: float | None = None) -> None:
        self._waitable()
        super().wait_for_publish(timeout)

    def is_published(self) -> bool:
        self._waitable()
        return super().is_published()


def _paho_keeps_what_the_light_publish_sets() -> bool:
    """What :meth:`SerialisedClient._publish_qos1` relies on in paho 2.x's classes is there (else paho's ``publish``
    is used; the client's own state is checked per client, :attr:`SerialisedClient._light`)."""
    message = {"_topic", "dup", "info", "mid", "payload", "properties", "qos", "retain", "state", "timestamp"}
    info = {"_condition", "_iterpos", "_published", "mid", "rc"}
    return (str(getattr(paho_mqtt, "__version__", "")).startswith(PAHO_VERSIONS)
            and all(callable(getattr(mqtt.Client, name, None))
                for name in ("_mid_generate", "_pack_remaining_length", "_packet_queue", "_raise_for_invalid_topic"))
            and set(getattr(mqtt.MQTTMessage, "__slots__", ())) == message
            and set(getattr(mqtt.MQTTMessageInfo, "__slots__", ())) == info
            and all(hasattr(mqtt, name) for name in ("mqtt_ms_queued", "mqtt_ms_wait_for_puback", "mqtt_ms_publish",
                                                      "mqtt_ms_invalid", "time_func")))


PAHO_STATE = ("_out_message_mutex", "_out_messages", "_inflight_messages", "_max_inflight_messages",
              "_max_queued_messages", "_protocol", "_sock")
"""The session state of a paho client that :meth:`SerialisedClient._publish_qos1` reads and updates as paho does."""


LIGHT_PUBLISH = _paho_keeps_what_the_light_publish_sets()
""":meth:`SerialisedClient.publish` may take its light QoS 1 path (paho's internals are as it expects)."""


def _new_message() -> mqtt.MQTTMessage:
    """An ``MQTTMessage`` without its ``__init__`` (which makes an ``MQTTMessageInfo``, and its Condition, that the
    light path replaces at once): the caller sets every slot, as paho's ``__init__`` and ``publish`` do."""
    return mqtt.MQTTMessage.__new__(mqtt.MQTTMessage)


class SerialisedClient(GatewayClient):
    """A paho client whose I/O calls, from any thread, hold :attr:`io_lock` (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.io_lock = threading.RLock()
        """Held around every call into paho's packet queue and socket."""
        self.poke: Callable[[], None] = lambda: None
        """Wakes the network loop: set by :class:`NetLoop` (a write that did not fit waits for the socket)."""
        self.loop_thread: threading.Thread | None = None
        self._rx = b""
        self._rx_pos = 0
        self._rx_sock: object = None
        """:meth:`_sock_recv`'s read-ahead, and the socket it came from."""
        self.log_levels: frozenset[int] | None = None
        """The paho log levels (``MQTT_LOG_ERR``, ...) handed to ``on_log``; None: all, as paho (:meth:`_easy_log`)."""
        self._rx_held: OSError | None = None
        """A read error met by :meth:`_packet_read`'s fill, raised to paho's own read so that paho reports it."""
        self.disconnect_requested = False
        """:meth:`disconnect` was called: the loop ends rather than reconnect."""
        self._corks: set[int] = set()
        """The threads inside :meth:`corked` (the publisher's round, the dispatcher's batch): their publishes queue
        their packets, written together when their block ends. A thread's cork is its own: another thread's cork
        neither ends it nor is ended by it."""
        self._paho_state = LIGHT_PUBLISH and all(hasattr(self, name) for name in PAHO_STATE)
        self._tails: dict[str, bytes] = {}
        """:meth:`_topic_tail`'s cache."""
        self._success = ReasonCode(PacketTypes.PUBACK)
        self._no_properties = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]
        """What paho hands ``on_publish`` for a :data:`SUCCESS_PUBACK` (it builds both anew for each; see
        :meth:`_packet_read`): shared, so ``on_publish`` must not change them (ours only reads them)."""
        self.on_publish_run: Callable[[list[int]], None] | None = None
        """Told the message ids of a run of :data:`SUCCESS_PUBACK` packets read together, in order, in one call
        *instead of* ``on_publish`` for each (:meth:`_settle_run`); None: ``on_publish`` for each, as paho. Taken only
        when paho's per-packet DEBUG lines are filtered out (:attr:`_light`); failures and properties still go to
        ``on_publish``. Like ``on_publish``, it runs under paho's message lock: it must only record."""

    def publish(
        self, topic: str, payload: PayloadType = None, qos: int = 0, retain: bool = False,
        properties: Properties | None = None,
    ) -> mqtt.MQTTMessageInfo:
        """paho's ``publish``, under :attr:`io_lock`; a QoS 1 message of bytes without properties takes
        :meth:`_publish_qos1` when paho's per-packet DEBUG lines are not wanted (:attr:`log_levels`)."""
        with self.io_lock:
            if threading.get_ident() in self._corks:
                self._on_socket_register_write = _later  # paho's _packet_queue then queues rather than writes
                try:
                    info = self._publish(topic, payload, qos, retain, properties)
                finally:
                    self._on_socket_register_write = None
            else:
                info = self._publish(topic, payload, qos, retain, properties)
                self._left_over()
        return info

    def _publish(
        self, topic: str, payload: PayloadType, qos: int, retain: bool, properties: Properties | None
    ) -> mqtt.MQTTMessageInfo:
        if qos == 1 and properties is None and topic and isinstance(payload, (bytes, bytearray)) and self._light:
            return self._publish_qos1(topic, payload, retain)
        return super().publish(topic, payload, qos, retain, properties)

    @property
    def _light(self) -> bool:
        return self._paho_state and self.log_levels is not None and mqtt.MQTT_LOG_DEBUG not in self.log_levels

    def _publish_qos1(self, topic: str, payload: bytes | bytearray, retain: bool) -> mqtt.MQTTMessageInfo:
        """paho 2.x's ``publish`` for a QoS 1 message, step for step, with ~29,000 fewer instructions a message (of
        ~92,000 for paho's publish, its PUBACK and its write: docs/performance.md; issue 14, the uplink's messages are
        nearly all QoS 1). The same message id, the same ``MQTTMessage`` in ``_out_messages`` (paho's PUBACK
        handling, in-flight count and re-send after a reconnection use it unchanged), the same queue limits and the
        same packet, queued through paho's own ``_packet_queue``. What it leaves out: the topic's encoding and
        checks on every call (kept per topic, :meth:`_topic_tail`), paho's ``Condition`` per message
        (:class:`PublishInfo`), a DEBUG line nobody reads (only taken when they are filtered out) and the generic
        packing. Leans on paho's private session state: :data:`LIGHT_PUBLISH` is False, and paho's own ``publish``
        is used, if what it relies on is not there; tests/test_mqtt_light_publish.py fails if paho changes it."""
        if len(payload) > MAX_PAYLOAD:
            raise ValueError("Payload too large.")
        tail = self._topic_tail(topic)
        mid = self._mid_generate()
        info = PublishInfo(mid)
        message = _new_message()
        message.timestamp = mqtt.time_func()
        message.state = mqtt.mqtt_ms_invalid
        message.dup = False
        message.mid = mid
        message._topic = tail[2:]
        message.payload = payload
        message.qos = 1
        message.retain = retain
        message.info = info
        message.properties = None
        with self._out_message_mutex:
            if (self._max_queued_messages > 0 and len(self._out_messages) >= self._max_queued_messages) \
                    or mid in self._out_messages:
                info.rc = MQTTErrorCode.MQTT_ERR_QUEUE_SIZE
                return info
            self._out_messages[mid] = message
            if self._max_inflight_messages and self._inflight_messages >= self._max_inflight_messages:
                message.state = mqtt.mqtt_ms_queued
                return info
            self._inflight_messages += 1
            message.state = mqtt.mqtt_ms_wait_for_puback
            rc = self._send_qos1(mid, tail, payload, retain, info)
            if rc == MQTTErrorCode.MQTT_ERR_NO_CONN:  # paho's: sent when a connection is made
                self._inflight_messages -= 1
                message.state = mqtt.mqtt_ms_publish
            info.rc = rc
            return info

    def _send_qos1(
        self, mid: int, tail: bytes, payload: bytes | bytearray, retain: bool, info: PublishInfo
    ) -> MQTTErrorCode:
        """paho's ``_send_publish`` for a first QoS 1 send (no DUP), without its DEBUG line: the same bytes."""
        if self._sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        v5 = self._protocol == mqtt.MQTTv5
        length = len(tail) + 2 + v5 + len(payload)
        command = 0x32 | retain  # PUBLISH, QoS 1, no DUP
        if length < 128:
            head = bytes((command, length))
        elif length < 16_384:  # an event's usual size: two length bytes
            head = bytes((command, length & 0x7F | 0x80, length >> 7))
        else:  # paho's own packing, with its "Packet too large" past MQTT's largest remaining length
            head = bytes(self._pack_remaining_length(bytearray((command,)), length))
        packet = b"".join((head, tail, struct.pack("!H", mid), b"\x00" if v5 else b"", payload))
        return self._packet_queue(mqtt.PUBLISH, packet, mid, 1, info)

    def _topic_tail(self, topic: str) -> bytes:
        """The topic as a PUBLISH carries it (two length bytes, then UTF-8), checked as paho checks it (the same
        ``ValueError``): once per topic, kept in a bounded cache."""
        tail = self._tails.get(topic)
        if tail is None:
            encoded = topic.encode("utf-8")
            self._raise_for_invalid_topic(encoded)
            tail = struct.pack("!H", len(encoded)) + encoded
            if len(encoded) <= CACHED_TOPIC_BYTES:
                if len(self._tails) >= TOPIC_CACHE:
                    self._tails.clear()
                self._tails[topic] = tail
        return tail

    @contextlib.contextmanager
    def corked(self) -> Iterator[None]:
        """The packets published on this thread meanwhile are queued, and written when the block ends, joined into
        as few ``send`` calls as :data:`WRITE_RUN` allows (:meth:`_packet_write`). For a round of publishes (the
        publisher's window): one system call and one GIL hand-over for the round instead of one per message (issue
        14). Nothing else changes: paho has each message in its session state at ``publish``, as before, and what
        the socket does not take waits for the loop, as any write that does not fit. Nested, the outer block writes.

        :attr:`io_lock` is held for each publish and for the final write, not for the block: the round reads its
        rows from the outbox (from the SD card, in a backlog) in between, and the network thread (acks, PINGREQ) and
        other threads' publishes must not wait for that. Another thread's publish meanwhile writes the queue, this
        round's packets first: one queue, in order."""
        ident = threading.get_ident()
        if ident in self._corks:
            yield
            return
        self._corks.add(ident)  # this thread's own entry: read only by this thread (publish, _left_over)
        try:
            yield
        finally:
            self._corks.discard(ident)
            self.write_queued()

    @contextlib.contextmanager
    def batch(self) -> Iterator[Callable[[], None]]:
        """:meth:`corked`, handing the block :meth:`write_queued` to write what it queued so far without ending the
        cork (the dispatcher's batch does before an output's write, which may block on a slow device)."""
        with self.corked():
            yield self.write_queued

    def write_queued(self) -> None:
        """Write the packets waiting in paho's queue now if the client's lock is free; else leave them to the network
        loop, woken for them. Never waits for the lock: the network thread holds it for seconds around a connection
        attempt (:meth:`NetLoop._attempt`), and the dispatcher, whose batches end here, must not wait for the
        network. Like any write, what the socket does not take waits for the loop."""
        if not self.io_lock.acquire(blocking=False):
            self.poke()
            return
        try:
            if self._out_packet and self._sock is not None:
                self.loop_write()
        finally:
            try:
                self._left_over()  # even if a callback raised in the write: what is left waits for the loop
            finally:
                self.io_lock.release()

    def subscribe(
        self,
        topic: str | tuple[str, int] | tuple[str, SubscribeOptions] | list[tuple[str, int]]
        | list[tuple[str, SubscribeOptions]],
        qos: int = 0, options: SubscribeOptions | None = None, properties: Properties | None = None,
    ) -> tuple[MQTTErrorCode, int | None]:
        with self.io_lock:
            result = super().subscribe(topic, qos, options, properties)
            self._left_over()
        return result

    def unsubscribe(
        self, topic: str | list[str], properties: Properties | None = None
    ) -> tuple[MQTTErrorCode, int | None]:
        with self.io_lock:
            result = super().unsubscribe(topic, properties)
            self._left_over()
        return result

    def disconnect(self, reasoncode: ReasonCode | None = None,
                   properties: Properties | None = None) -> MQTTErrorCode:
        """As paho's; the network loop ends instead of reconnecting (paho's ``loop_forever`` did the same)."""
        with self.io_lock:
            self.disconnect_requested = True
            return super().disconnect(reasoncode, properties)

    def _packet_write(self) -> MQTTErrorCode:
        """Write the packets at the front of paho's queue that need nothing once written (every packet but a QoS 0
        PUBLISH and a DISCONNECT: tests/test_mqtt_write_coalescing.py fails if paho's ``_packet_write`` starts acting
        on others) in one ``send`` per :data:`WRITE_RUN` bytes, then the rest as paho does (paho 2.x's private
        write; paho sends each packet alone). A partial write leaves the rest of its packet at the front, and its
        errors are paho's: the same return codes, the packet kept for the next write."""
        queue = self._out_packet
        wrote = False
        while len(queue) > 1:
            run = self._plain_run()
            if len(run) < 2:
                break
            try:
                written = self._sock_send(b"".join(packet["packet"][packet["pos"]:] for packet in run))
            except (AttributeError, ValueError):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except BlockingIOError:
                return MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return MQTTErrorCode.MQTT_ERR_CONN_LOST
            if written <= 0:
                break
            wrote = True
            for packet in run:
                taken = min(written, packet["to_process"])
                packet["to_process"] -= taken
                packet["pos"] += taken
                written -= taken
                if packet["to_process"]:
                    break
                queue.popleft()
        if wrote and not queue:
            with self._msgtime_mutex:
                self._last_msg_out = mqtt.time_func()
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_write()

    def _plain_run(self) -> list[Any]:
        """The packets at the front of the queue, up to :data:`WRITE_RUN` bytes (at least one), that paho does
        nothing with once written. The same queue gives the same run or a longer one (a TLS write that must be
        retried is retried with at least the bytes it had)."""
        run: list[Any] = []
        size = 0
        for packet in self._out_packet:
            command = packet["command"] & 0xF0
            if command == mqtt.DISCONNECT or (command == mqtt.PUBLISH and packet["qos"] == 0):
                break
            if run and size + packet["to_process"] > WRITE_RUN:
                break
            run.append(packet)
            size += packet["to_process"]
        return run

    def _sock_recv(self, bufsize: int) -> bytes:
        """paho reads a packet in 3 ``recv`` calls (type, length, body) and one more to find the socket empty: 4
        system calls per PUBACK. Read what waits in one call and hand paho its pieces from memory (paho 2.x's
        private read hook; tests/test_mqtt_uplink_loop.py fails if a release renames it)."""
        if self.read_ahead == 0:
            self._fill()
            if not self._rx:
                return b""
        start = self._rx_pos
        self._rx_pos = min(len(self._rx), start + bufsize)
        return self._rx[start:self._rx_pos]

    def _fill(self) -> None:
        """Read what waits into the read-ahead (b"" at the end of the stream); raises what ``recv`` raised
        (``BlockingIOError``: nothing waits), or what it raised when :meth:`_packet_read` filled and kept it."""
        held, self._rx_held = self._rx_held, None
        if held is not None:
            raise held
        self._rx = super()._sock_recv(READ_AHEAD)
        self._rx_pos = 0
        self._rx_sock = self._sock
        if self._rx:
            _ack_now(self._sock)

    def _packet_read(self) -> MQTTErrorCode:
        """Handle the success PUBACKs waiting whole in the read-ahead without paho's packet machinery, then read on
        as paho does (paho 2.x's private per-packet read; tests/test_mqtt_puback_fast_path.py fails if what this
        relies on changes).

        paho spends ~20 µs on each PUBACK: its per-packet dict bookkeeping, then a new ``Properties`` and
        ``ReasonCode`` for a packet that carries neither. A :data:`SUCCESS_PUBACK` (four bytes) says all it says in
        its message id: this hands ``on_publish`` a shared success reason and empty properties, through paho's own
        ``_do_on_publish`` (its callback, the message's removal, the in-flight count). Anything else (a failure
        reason, properties, another packet, a packet split across reads) goes to paho's code, in arrival order."""
        if self._in_packet["command"] == 0:
            if self.read_ahead == 0:
                try:
                    self._fill()
                except BlockingIOError:
                    return MQTTErrorCode.MQTT_ERR_AGAIN
                except OSError as exc:
                    self._rx_held = exc  # paho's read below meets it and reports it as its own
            # (at the end of the stream, b"": paho's read below asks the socket again and gets b"" again)
            taken, rc = self._success_pubacks()
            if taken:
                return rc
        return super()._packet_read()

    def _success_pubacks(self) -> tuple[int, MQTTErrorCode]:
        """Take the whole :data:`SUCCESS_PUBACK` packets at the front of the read-ahead: how many, and paho's
        result for the last (an error, from a queued message sent as the window opened, ends the run). The packets
        taken move paho's keepalive clock, as its own reads do."""
        if self.read_ahead < 4:
            return 0, MQTTErrorCode.MQTT_ERR_SUCCESS
        start = self._rx_pos
        run = self.on_publish_run
        try:
            with self._out_message_mutex:
                rc = self._settle_run(run) if run is not None and self._light else self._settle_each()
        finally:
            if self._rx_pos != start:
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
        return (self._rx_pos - start) // 4, rc

    def _settle_each(self) -> MQTTErrorCode:
        """The success PUBACKs at the front of the read-ahead through paho's ``_do_on_publish``, one by one (its
        ``on_publish``, the message's removal, the in-flight count): paho's order, paho's logging."""
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        rx, pos, end = self._rx, self._rx_pos, len(self._rx)
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and pos + 4 <= end and rx[pos] == PUBACK \
                and rx[pos + 1] == SUCCESS_PUBACK:
            mid = rx[pos + 2] << 8 | rx[pos + 3]
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received PUBACK (Mid: %d)", mid)
            if mid in self._out_messages:  # only inform the client once (paho's _handle_pubackcomp)
                rc = self._do_on_publish(mid, self._success, self._no_properties)
            pos += 4
            self._rx_pos = pos  # after: a callback that raises leaves its packet to be read again, as paho
        return rc

    def _settle_run(self, run: Callable[[list[int]], None]) -> MQTTErrorCode:
        """The success PUBACKs at the front of the read-ahead as one run: what paho's ``_do_on_publish`` does for
        each, with its locks, its callback and its look for queued messages once per run (issue 14: ~1.5 acks a
        line at 10,000 lines/s). Called with paho's message lock held (paho 2.x's private session state, as
        :meth:`_publish_qos1`; tests/test_mqtt_puback_fast_path.py checks it against paho's own path).

        In paho's order: the callback first (``run``, under paho's callback lock), then each message leaves
        ``_out_messages``, is marked published and frees its in-flight place; then paho's
        :meth:`_update_inflight` sends what waited beyond the window, once. A callback that raises (unless
        ``suppress_exceptions``) leaves the whole run unread, to be reported again at the next read, as paho
        leaves its packet; a second ack of the same message is reported once."""
        rx, pos, end = self._rx, self._rx_pos, len(self._rx)
        out = self._out_messages
        mids: list[int] = []
        while pos + 4 <= end and rx[pos] == PUBACK and rx[pos + 1] == SUCCESS_PUBACK:
            mid = rx[pos + 2] << 8 | rx[pos + 3]
            if mid in out:
                mids.append(mid)
            pos += 4
        if len(mids) > 1:
            unique = dict.fromkeys(mids)
            if len(unique) != len(mids):
                mids = list(unique)
        if mids:
            with self._in_callback_mutex:
                try:
                    run(mids)
                except Exception as err:
                    self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_publish: %s", err)
                    if not self.suppress_exceptions:
                        raise
        self._rx_pos = pos
        pop, unsent = out.pop, 0
        for mid in mids:
            message = pop(mid)
            message.info._set_as_published()
            if message.state == mqtt.mqtt_ms_queued:  # acked before it was sent (a broker's bug): not in flight
                unsent += 1
        # paho's held messages are all QoS 1 or 2, and those sent are counted in flight. (paho's own path also
        # uncounts an acked queued one, a place it never held, and sends the next queued one beyond max_inflight,
        # or leaves its count one low: a broker's bug only; here the count stays the sent messages.)
        self._inflight_messages -= len(mids) - unsent
        if mids and self._max_inflight_messages > 0:
            return self._update_inflight()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _easy_log(self, level: int, fmt: str, *args: Any) -> None:
        """paho's, for the levels in :attr:`log_levels` only (paho 2.x's private log hook; a test fails if paho
        stops logging through it). paho formats a DEBUG line for every packet it sends or reads ("Sending
        PUBLISH ...", "Received PUBACK ...") and hands it to ``on_log``: two lines per message that the link, which
        keeps errors only, threw away."""
        if self.log_levels is None or level in self.log_levels:
            super()._easy_log(level, fmt, *args)  # type: ignore[arg-type]  # paho annotates its own LogLevel enum

    def _update_inflight(self) -> MQTTErrorCode:
        """paho's, only when a message waits outside the window (paho 2.x's private hook, called after each
        acknowledgement; tests/test_mqtt_puback_fast_path.py fails if what this relies on changes).

        paho walks every message it holds on each PUBACK to find queued ones: O(window) per ack, though ours are
        almost never queued (the publish window hands paho at most ``max_inflight`` rows; its own window has
        headroom). Every message paho holds is QoS 1 or 2 (QoS 0 is sent at once, never held), and
        ``_inflight_messages`` counts those it has sent and awaits an answer for: so a queued message exists
        only if paho holds more messages than that count."""
        if len(self._out_messages) <= self._inflight_messages:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._update_inflight()

    @property
    def read_ahead(self) -> int:
        """Bytes read from the socket that paho has not taken yet (our loop does not wait for the socket then)."""
        return len(self._rx) - self._rx_pos if self._rx_sock is self._sock else 0

    def _left_over(self) -> None:
        """Bytes paho could not write here (a full socket buffer, or queued inside a callback on our thread)
        wait for the loop: wake it, unless this is the loop's own thread, which looks after every call, or the
        packets are corked (:meth:`corked` writes them when it ends, and wakes the loop then if some did not fit)."""
        corking = threading.get_ident() in self._corks
        if not corking and self.want_write() and threading.current_thread() is not self.loop_thread:
            self.poke()


class NetLoop:
    """The uplink's network thread around a :class:`SerialisedClient` (``connect_async`` called first)."""

    def __init__(self, client: SerialisedClient, *, delays: tuple[float, float],
                 before_attempt: Callable[[], None], name: str,
                 hurry: Callable[[], bool] = lambda: False) -> None:
        """``hurry``: acks are wanted now (the publish window is filling): no gathering (:data:`ACK_GATHER`)."""
        self._client = client
        self._hurry = hurry
        self._lock = client.io_lock
        self._delays = delays
        self._before_attempt = before_attempt
        self._stop = threading.Event()
        self._cut = threading.Event()
        """Ends a gathering pause at once (:meth:`acks_wanted`, :meth:`stop`)."""
        self._waker, self._wakee = socket.socket(), socket.socket()
        """The wake-up pair, opened by :meth:`start` and closed when the thread ends (a link built and never
        started holds no descriptor)."""
        self._waker.close()
        self._wakee.close()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        client.loop_thread = self.thread
        client.poke = self._poke
        client.on_socket_close = guarded("mqtt on_socket_close")(self._on_socket_close)

    def start(self) -> None:
        self._waker, self._wakee = socket.socketpair()
        self._waker.setblocking(False)
        self._wakee.setblocking(False)
        self.thread.start()

    def stop(self) -> None:
        """End the thread (it disconnects a connection it still has); :meth:`join` waits for it. Any thread."""
        self._stop.set()
        self._cut.set()
        self._poke()

    def acks_wanted(self) -> None:
        """The publish window is filling: end a gathering pause now (:data:`ACK_GATHER`). Any thread."""
        if not self._cut.is_set():
            self._cut.set()

    def join(self, timeout: float | None = None) -> None:
        if self.thread.ident is not None:
            self.thread.join(timeout)

    def disconnect(self, timeout: float) -> None:
        """Send DISCONNECT and close the socket, if the lock comes within ``timeout`` s; else (our thread is in a
        connection attempt) the thread disconnects once the attempt ends. Stops the loop either way."""
        if self._lock.acquire(timeout=max(0.0, timeout)):
            try:
                self._client.disconnect()
            finally:
                self._lock.release()
        self.stop()

    def _poke(self) -> None:
        with contextlib.suppress(OSError):  # full (the loop is waking anyway) or closed (stopped)
            self._waker.send(b"\0")

    def _on_socket_close(self, client: mqtt.Client, userdata: object, sock: SocketLike) -> None:
        # Closed on another thread (a write that failed, disconnect): our select must not wait on it.
        if threading.current_thread() is not self.thread:
            self._poke()

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            delay: float | None = None
            first = True
            while not self._ended():
                if not first:
                    delay = self._delays[0] if delay is None else min(delay * 2, self._delays[1])
                    if self._stop.wait(delay):
                        break
                first = False
                self._before_attempt()
                if self._ended():
                    break
                if not self._attempt():
                    continue
                if self._serve():
                    delay = None  # accepted: the next outage starts from the minimum again, as paho's
            with self._lock:
                if self._client.socket() is not None:
                    self._client.disconnect()
        finally:
            self._waker.close()
            self._wakee.close()

    def _ended(self) -> bool:
        return self._stop.is_set() or self._client.disconnect_requested

    def _attempt(self) -> bool:
        """One connection attempt; False if the socket could not be opened (``on_connect_fail`` was called)."""
        client = self._client
        with self._lock:
            # CONNECT waits for the first select, as in paho's loop: what the broker sent at once (a TLS alert,
            # "unknown ca") is read before anything is written, and the failure says why. While a socket-write
            # callback is set, paho queues rather than writes.
            client.on_socket_register_write = _later
            try:
                client.reconnect()
            except OSError:
                callback = client.on_connect_fail  # inside the except: the callback reads the error
                if callback is not None:
                    callback(client, client.user_data_get())
                return False
            finally:
                client.on_socket_register_write = None
        return True

    def _serve(self) -> bool:
        """Run the connection until its socket closes or the loop stops; True if a CONNACK accepted it."""
        client = self._client
        sock = client.socket()
        accepted = False
        if sock is None:
            return False
        with selectors.DefaultSelector() as selector:
            selector.register(self._wakee, selectors.EVENT_READ)
            selector.register(sock, selectors.EVENT_READ)
            interest = selectors.EVENT_READ
            while not self._stop.is_set():
                with self._lock:
                    if client.socket() is not sock:
                        break
                    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
                    pending = getattr(sock, "pending", None)
                    buffered = client.read_ahead + (pending() if callable(pending) else 0)  # TLS: decrypted bytes
                if wanted != interest:
                    selector.modify(sock, wanted)
                    interest = wanted
                ready = selector.select(0.0 if buffered else client.keepalive_due_in())
                readable, writable = self._events(ready, sock)
                with self._lock:
                    if client.socket() is not sock:
                        break
                    if readable or buffered:
                        client.loop_read()
                        if client.socket() is not sock:
                            break
                    if writable or client.want_write():
                        client.loop_write()
                        if client.socket() is not sock:
                            break
                    client.loop_misc()
                    accepted = accepted or client.is_connected()
                if readable and accepted and not self._hurry():
                    # PUBACKs are not urgent (the window takes acks lazily): let them gather for a moment, so that
                    # one wake-up reads several rather than each waking the thread (issue 14).
                    self._cut.wait(ACK_GATHER)
                    if not self._stop.is_set():
                        self._cut.clear()
        return accepted

    def _events(self, ready: Sequence[tuple[selectors.SelectorKey, int]], sock: SocketLike) -> tuple[bool, bool]:
        readable = writable = False
        for key, mask in ready:
            if key.fileobj is self._wakee:
                with contextlib.suppress(OSError):
                    self._wakee.recv(4096)
            elif key.fileobj is sock:
                readable = readable or bool(mask & selectors.EVENT_READ)
                writable = writable or bool(mask & selectors.EVENT_WRITE)
        return readable, writable

