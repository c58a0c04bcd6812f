"""The publisher window: outbox rows handed to paho in ``seq`` order, a bounded number unacknowledged.

One owner of retransmission: paho re-sends its unacknowledged QoS 1 messages after *every*
reconnect, kept session or not (``_messages_reconnect_reset_out`` in paho's client.py). So within
one process a row is handed to paho exactly once and paho owns its retry; the outbox never
re-sends on reconnect. Across a restart paho's memory is gone, and the outbox re-sends every row
that was not acknowledged. Duplicates therefore come only from the window (at most
``max_inflight`` rows per outage or restart), and the hub drops them by ``id``.

Ordering: rows go out strictly in ``seq`` order, so after an outage live events queue behind the
backlog, which drains at ``drain_rate`` (a :class:`TokenBucket`, burst = the window); live events
are not paced.

Two threads hand rows over, in one order: the publisher thread (:meth:`PublishWindow.send`: the backlog,
rows after a reconnect, rows that found the window full) and the forwarding (dispatcher) thread, which hands
paho the row it has just added to the outbox when that row is the next in ``seq`` order and the window has
room (:meth:`PublishWindow.hand_over`: issue 14, one thread wake-up less per event). A lock keeps the two
apart; the forwarding thread never waits for it (if the publisher holds it, the row is the publisher's).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.outbox import Outbox

log = logging.getLogger(__name__)


class TokenBucket:
    """``rate`` tokens a second up to ``burst``: paces the outbox drain after an outage."""

    __slots__ = ("_burst", "_monotonic", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._monotonic = monotonic
        self._stamp = monotonic()

    def take(self, wanted: int) -> int:
        now = self._monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return max(0, granted)

    def refund(self, count: int) -> None:
        self._tokens = min(self._burst, self._tokens + count)

    def wait(self) -> float:
        """Seconds until the next whole token."""
        return max(0.0, (1.0 - self._tokens) / self._rate)


class PublishWindow:
    """Used on the publisher thread, except :meth:`hand_over` (the forwarding thread), :meth:`on_publish`
    (paho's network thread), which only records the ack, and :meth:`reconnected` (network thread, before
    the link counts as up)."""

    def __init__(
        self, outbox: Outbox, counters: BridgeCounters, *, size: int, drain_rate: float, wake: Callable[[], None]
    ) -> None:
        self._outbox = outbox
        self._counters = counters
        self._size = size
        self._bucket = TokenBucket(drain_rate, size)
        self._wake = wake
        self._acks: deque[tuple[int, ReasonCode]] = deque()
        self._inflight: dict[int, int] = {}
        """paho's message id -> the seq of the row it carries, until its PUBACK is taken."""
        self._handed = 0
        """The newest seq handed to paho."""
        self._catch_up_to = 0
        """The newest seq accepted when the link came up: rows up to it drain at ``drain_rate``."""
        self._more = False
        """The last hand-over used all it was granted: rows may be waiting for the bucket."""
        self._resuming = False
        """Just reconnected: paho re-sends its unacknowledged rows first; new rows wait for their acks."""
        self.acks_wanted: Callable[[], None] = lambda: None
        """Told when a hand-over leaves a quarter of the window or more in flight (:meth:`filling`): the uplink then
        reads acks as they come (bridge.py wires it to ``Link.acks_wanted``)."""
        self._lock = threading.Lock()
        """Held while rows are handed over or acks taken: the publisher's :meth:`send` and :meth:`take_acks`,
        the forwarding thread's :meth:`hand_over`."""

    def on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        # Called under paho's message lock: only record, never publish or take our locks here.
        self._acks.append((mid, reason))
        # Waking the publisher for every PUBACK was one thread wake-up per message (issue 14's profile):
        # an ack is only urgent when rows wait for room in the window (half of it acknowledged) or when
        # new rows wait behind a resent window. Otherwise it is taken on the publisher's next wake-up
        # (the next event, or within one commit window: see :meth:`ack_wait`).
        if self._resuming or 2 * len(self._acks) >= self._size:
            self._wake()

    def reconnected(self) -> None:
        self._resuming = True
        self._catch_up_to = self._outbox.last_seq

    def filling(self) -> bool:
        """A quarter of the window or more is in flight (a flood, a backlog): its acks are wanted now, so the uplink's
        loop reads them as they come rather than gathering them (netloop.py). Any thread."""
        return 4 * len(self._inflight) >= self._size

    @property
    def resuming(self) -> bool:
        """Just reconnected and the publisher has not had its round yet (or the resent window waits for its acks):
        :meth:`hand_over` leaves rows to the publisher meanwhile."""
        return self._resuming

    @property
    def drained(self) -> bool:
        """Nothing in flight and nothing left in the outbox."""
        return not self._inflight and self._outbox.depth == 0

    def wait(self) -> float | None:
        """Seconds until the bucket grants the next row, if rows wait for it and the window has room."""
        if self._more and len(self._inflight) < self._size:
            return self._bucket.wait()
        return None

    @property
    def acks_waiting(self) -> bool:
        """PUBACKs recorded and not yet taken (the publisher bounds its sleep while there are)."""
        return bool(self._acks)

    def take_acks(self) -> None:
        """Acknowledged rows leave the outbox (with its next commit)."""
        with self._lock:
            self._take_acks()

    def _take_acks(self) -> None:
        while self._acks:
            mid, reason = self._acks.popleft()
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue
            self._outbox.ack(seq)
            if reason.is_failure:
                self._counters.broker_refused += 1
                log.error("broker refused event seq %d: %s (not retried)", seq, reason)
            else:
                self._counters.events_out += 1

    def hand_over(self, client: mqtt.Client, seq: int, topic: str, payload: bytes) -> bool:
        """The forwarding thread's short cut: publish the row ``seq`` it has just added to the outbox, if it
        is the next row in ``seq`` order, the window has room, no backlog is being paced and no resent
        window is waiting for its acks. True if paho has it; False leaves it to the publisher thread
        (wake it). Never waits: not for the publisher, not for the outbox's disk.

        The caller checks that the link is up. Acks recorded since the last round are taken first, so a
        steady stream keeps finding room without the publisher."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._resuming or seq != self._handed + 1 or self._handed < self._catch_up_to:
                return False
            if seq > self._outbox.reserved:  # as fetch(): only seqs the reservation on disk covers
                return False
            self._take_acks()
            if len(self._inflight) >= self._size:
                return False
            info = client.publish(topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return False  # still the next row: the publisher hands it over when an ack wakes it
            self._handed = seq
            self._inflight[info.mid] = seq
            if self.filling():
                self.acks_wanted()
            return True
        finally:
            self._lock.release()

    def send(self, client: mqtt.Client) -> None:
        """Hand paho the next rows, as many as the window (and, for a backlog, the bucket) allows."""
        with self._lock:
            self._send(client)

    def _send(self, client: mqtt.Client) -> None:
        if self._resuming:
            # paho re-sends its unacknowledged rows right after on_connect returns; a new row
            # handed over before then could overtake them. So after a reconnect, new rows wait
            # until the re-sent window is acknowledged (one round trip, only after an outage).
            if self._inflight:
                return
            self._resuming = False
        room = self._size - len(self._inflight)
        if room <= 0:
            return
        # Only the backlog found at (re)connection is paced by drain_rate (an outage, a restart);
        # live events go out as fast as the window allows.
        paced = self._handed < self._catch_up_to
        granted = self._bucket.take(room) if paced else room
        newest = self._outbox.last_seq  # before the fetch: a row added after it is not skipped below
        rows = self._outbox.fetch(self._handed, granted)
        if paced:
            self._bucket.refund(granted - len(rows))
        self._more = granted == 0 or len(rows) == granted
        for row in rows:
            self._handed = row.seq
            if not self._outbox.fits(row.topic, row.payload):
                log.error("event seq %d on %s is larger than the broker accepts: removed from the outbox",
                          row.seq, row.topic)
                self._outbox.refuse(row.seq)
                continue
            info = client.publish(row.topic, row.payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                # paho's queue is full (connection.MAX_QUEUED): the row stays in the outbox and is
                # handed again, in order, when an ack wakes the publisher (no busy wait).
                self._handed = row.seq - 1
                self._more = False
                return
            self._inflight[info.mid] = row.seq
        if self.filling():
            self.acks_wanted()
        if len(rows) < granted:
            # Every row up to ``newest`` was fetched (or is gone: acknowledged, shed): the next row is the one
            # after it, which the forwarding thread may hand over itself (:meth:`hand_over`).
            self._handed = max(self._handed, min(newest, self._outbox.reserved))
