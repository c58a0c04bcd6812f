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

Event batches (``[mqtt] event_batches``, docs/mqtt.md *The event stream*): rows on the stream topic
``<base>/events`` hold one event object each and go out as JSON arrays. :meth:`PublishWindow.hand_over` sends
its row alone (an array of one) while fewer than :data:`BATCH_FROM_INFLIGHT` messages (or a quarter of a smaller
window) are in flight; beyond that the rows are left to
the publisher thread, which sends the consecutive stream rows waiting as arrays of up to ``batch_max`` events
and ``batch_bytes`` bytes. A row on any other topic (a rule's ``publish``; rows queued before the option was
turned on) ends the array before it and goes alone, so ``seq`` order holds. One message is one place in the
window whatever it carries; its PUBACK acknowledges all its rows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.netloop import SerialisedClient
from gateway.mqtt.outbox import Outbox, Row
from gateway.mqtt.topics import event_array, event_array_size

log = logging.getLogger(__name__)

SUCCESS = ReasonCode(PacketTypes.PUBACK)
"""The reason :meth:`PublishWindow.on_publish_run` records for each ack of a run (success: paho's for a PUBACK
without one)."""


FETCH_CHUNK = 128
"""Rows read from the outbox at a time, at most, when event batches are on."""


BATCH_FROM_INFLIGHT = 25
"""With ``event_batches``: once this many messages are in flight (or a quarter of a smaller window),
:meth:`PublishWindow.hand_over` leaves rows to the publisher, which sends what waits as arrays. A count, not a share
of the window: arrays pay where paho's per-message cost would (docs/mqtt.md), and with the window of 1,000 a quarter
started them only at 250 in flight: 1.4 to 3 times the messages at 5,000-10,000 events/s (the review of 0c94993)."""

RESEND_PASSES = 2
"""Passes :meth:`PublishWindow.send` makes, at most, after its first, for rows whose hand-over it refused while it
held the lock. A pass is one outbox read (tens of µs); a flood could keep refusing for as long as the publisher
kept sending, and the publisher's next round (woken by the refusal) takes what is left."""


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
        self, outbox: Outbox, counters: BridgeCounters, *, size: int, drain_rate: float, wake: Callable[[], None],
        stream: str | None = None, batch_max: int = 1, batch_bytes: int = 16_384, batching: bool = False,
    ) -> None:
        self._outbox = outbox
        self._stream = stream
        """The topic whose rows go out as arrays (``<base>/events``): also when ``batching`` is off, so rows queued
        with it on still reach the hub as the stream's arrays."""
        self._batch_max = max(1, batch_max)
        self._batch_bytes = batch_bytes
        self._batching = batching
        """``event_batches`` is on: :meth:`hand_over` leaves rows to the publisher once :data:`BATCH_FROM_INFLIGHT`
        messages are in flight."""
        self._counters = counters
        self._size = size
        self._bucket = TokenBucket(drain_rate, size)
        self._wake = wake
        self._acks: deque[tuple[int, ReasonCode]] = deque()
        self._inflight: dict[int, tuple[int, ...]] = {}
        """paho's message id -> the seqs of the rows it carries (one, or an array's), until its PUBACK is taken."""
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
        self._refused = False
        """:meth:`hand_over` found the lock held (set by the forwarding thread without the lock; a bool store is
        atomic under the GIL): :meth:`send` sends again before it releases the lock (issue 14's p99)."""

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

    def on_publish_run(self, mids: list[int]) -> None:
        """:meth:`on_publish` for a run of success PUBACKs read together (the uplink's client calls it once per run:
        ``SerialisedClient.on_publish_run``): the same record and the same wake-up rule, one call for the run."""
        self._acks.extend(zip(mids, repeat(SUCCESS)))
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
        acked: list[int] = []  # handed to the outbox at once: one lock for the round, not one per row
        acks, inflight, refused = self._acks, self._inflight, 0
        while acks:
            mid, reason = acks.popleft()
            seqs = inflight.pop(mid, None)
            if seqs is None:
                continue
            acked.extend(seqs)
            # ``is SUCCESS``: a run's acks (on_publish_run) skip paho's ``is_failure`` property, a call per ack
            if reason is not SUCCESS and reason.is_failure:
                refused += len(seqs)
                log.error("broker refused event seq %d%s: %s (not retried)", seqs[0],
                          f"..{seqs[-1]} ({len(seqs)} events)" if len(seqs) > 1 else "", reason)
        if acked:
            self._counters.broker_refused += refused
            self._counters.events_out += len(acked) - refused
            self._outbox.ack_all(acked)

    def hand_over(self, client: mqtt.Client, seq: int, topic: str, payload: bytes) -> bool:
        """The forwarding thread's short cut: publish the row ``seq`` it has just added to the outbox, if it
        is the next row in ``seq`` order, the window has room, no backlog is being paced and no resent
        window is waiting for its acks. True if paho has it; False leaves it to the publisher thread
        (wake it). Never waits: not for the publisher, not for the outbox's disk.

        The caller checks that the link is up. Acks recorded since the last round are taken first, so a
        steady stream keeps finding room without the publisher."""
        if not self._lock.acquire(blocking=False):
            self._refused = True  # the holder sends again before it lets go (send), or its round does
            return False
        try:
            if self._resuming or seq != self._handed + 1 or self._handed < self._catch_up_to:
                return False
            if seq > self._outbox.reserved:  # as fetch(): only seqs the reservation on disk covers
                return False
            self._take_acks()
            message = self._alone(topic, payload)
            if message is None:
                return False
            info = client.publish(topic, message, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                return False  # still the next row: the publisher hands it over when an ack wakes it
            self._handed = seq
            self._inflight[info.mid] = (seq,)
            if self.filling():
                self.acks_wanted()
            return True
        finally:
            self._lock.release()

    def _alone(self, topic: str, payload: bytes) -> bytes | None:
        """What :meth:`hand_over` publishes for one row: its payload, or for the stream an array of one; None
        leaves the row to the publisher (the window is full; with ``event_batches`` once :data:`BATCH_FROM_INFLIGHT`
        are in flight: a backlog forms and the publisher sends what waits as arrays; an array that does not fit: the
        publisher refuses it, logged)."""
        if len(self._inflight) >= self._size:
            return None
        if topic != self._stream:
            return payload
        if self._batching and 4 * len(self._inflight) >= min(self._size, 4 * BATCH_FROM_INFLIGHT):
            return None
        message = event_array([payload])
        return message if self._outbox.fits(topic, message) else None

    def send(self, client: mqtt.Client) -> None:
        """Hand paho the next rows, as many as the window (and, for a backlog, the bucket) allows; and, before
        the lock is released, the rows whose :meth:`hand_over` it refused meanwhile (they would otherwise wait
        for the publisher's next pass, behind the batch's commit: issue 14's p99 at 1,000 lines/s). Never waits
        for the forwarding thread; the passes are bounded (:data:`RESEND_PASSES`), as a flood keeps refusing.

        The round's messages reach the socket together, in one ``send`` (``SerialisedClient.corked``): one system
        call per round rather than one per message (issue 14). Corked inside the window's lock, so the forwarding
        thread, which never waits for that lock, never waits for the cork either."""
        corked = client.corked() if isinstance(client, SerialisedClient) else contextlib.nullcontext()
        with self._lock, corked:
            self._refused = False  # a row refused before now is in the outbox: this pass reads it
            self._send(client)
            for _ in range(RESEND_PASSES):
                if not self._refused:
                    break
                self._refused = False
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
        # live events go out as fast as the window allows. Tokens count messages (an array is one).
        paced = self._handed < self._catch_up_to
        granted = self._bucket.take(room) if paced else room
        newest = self._outbox.last_seq  # before the fetch: a row added after it is not skipped below
        # With batches the rows are read in chunks, and more only when an array may go on past what was read:
        # under a backlog of events interleaved with rule publishes (which go alone) a window's messages hold few
        # rows, and reading ``granted * batch_max`` rows each round cost more than sending them (measured at 5,000
        # lines/s: rows read back from SQLite and thrown away).
        per = self._batch_max if self._batching else 1
        chunk = granted if per == 1 else min(granted * per, FETCH_CHUNK)
        rows = self._outbox.fetch(self._handed, chunk)
        exhausted = per == 1 or len(rows) < chunk
        sent = 0
        start = 0
        while sent < granted:
            end = self._group_end(rows, start) if start < len(rows) else start
            if end == len(rows) and end - start < per and not exhausted:
                rows = rows[start:]  # the array may go on past what was read: read on
                start = 0
                ahead = self._outbox.fetch(rows[-1].seq if rows else self._handed, FETCH_CHUNK)
                exhausted = len(ahead) < FETCH_CHUNK
                rows.extend(ahead)
                continue
            if start >= len(rows):
                break
            group, payload = self._message(rows, start, end)
            first = group[0]
            start += len(group)
            if not self._outbox.fits(first.topic, payload):
                log.error("event seq %d on %s is larger than the broker accepts: removed from the outbox",
                          first.seq, first.topic)
                self._handed = first.seq
                self._outbox.refuse(first.seq)
                continue
            info = client.publish(first.topic, payload, qos=1)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                # paho's queue is full (connection.MAX_QUEUED): the rows stay in the outbox and are
                # handed again, in order, when an ack wakes the publisher (no busy wait).
                self._handed = first.seq - 1
                self._more = False
                if paced:
                    self._bucket.refund(granted - sent)
                return
            self._handed = group[-1].seq
            self._inflight[info.mid] = (first.seq,) if len(group) == 1 else tuple(row.seq for row in group)
            sent += 1
        if paced:
            self._bucket.refund(granted - sent)
        fetched_all = (len(rows) < chunk if per == 1 else exhausted) and start == len(rows)
        self._more = granted == 0 or not fetched_all
        if self.filling():
            self.acks_wanted()
        if fetched_all:
            # Every row up to ``newest`` was fetched (or is gone: acknowledged, shed): the next row is the one
            # after it, which the forwarding thread may hand over itself (:meth:`hand_over`).
            self._handed = max(self._handed, min(newest, self._outbox.reserved))

    def _message(self, rows: list[Row], start: int, end: int) -> tuple[list[Row], bytes]:
        """The rows of the message ``rows[start:end]`` (:meth:`_group_end`) that the broker's packet limit takes (at
        least the first, which the caller refuses if it does not fit), and its payload."""
        group = rows[start:end]
        if group[0].topic != self._stream:
            return group, group[0].payload
        payload = event_array([row.payload for row in group])
        while len(group) > 1 and not self._outbox.fits(group[0].topic, payload):
            group = group[:-1]
            payload = event_array([row.payload for row in group])
        return group, payload

    def _group_end(self, rows: list[Row], start: int) -> int:
        """The end of the message that begins at ``rows[start]``: consecutive stream rows, up to ``batch_max`` events
        and ``batch_bytes`` bytes of array; any other row alone."""
        if rows[start].topic != self._stream:
            return start + 1
        end = start + 1
        size = len(rows[start].payload)
        stop = min(len(rows), start + self._batch_max)
        while end < stop:
            row = rows[end]
            if row.topic != self._stream:
                break
            if event_array_size(size + len(row.payload), end - start + 1) > self._batch_bytes:
                break
            size += len(row.payload)
            end += 1
        return end
