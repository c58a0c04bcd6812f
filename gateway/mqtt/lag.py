"""The inlet's lag watch: a flood's backlog in the broker and the sockets is dropped, not read for seconds.

Under a QoS 0 flood on a topic the inlet hears (hub commands, ``homeassistant/status`` births), paho's thread
parses more slowly than the flood arrives, and the broker and the kernel's socket buffers keep the rest for the
inlet: a hub command sent just after a 10 s flood waited ~9 s behind it (docs/reliability.md). Reading that
backlog at any pace only makes the wait longer; what helps is to stop owning it.

While the inlet hears more than :data:`FLOOD_RATE` messages a second, it sends itself a *probe*: a QoS 1
message on ``<base>/set/_marker`` (the backlog marker's topic, so the subscription and the ACL that bring
commands bring it too) carrying a token and the time it was sent. It comes back behind everything queued for
the inlet before it. When one has not come back after :data:`LAG_LIMIT` seconds, whatever stands in front of
it is older than that: the link *purges* — it closes its socket and reconnects at once. QoS 0 messages queued
for a connection die with it (the broker's queue for it and both kernels' buffers); the QoS 1 messages its
session kept are delivered again, in order, after the reconnection, and :class:`~gateway.mqtt.backlog.OfflineBacklog`
refuses those in front of the probe (each waited more than :data:`LAG_LIMIT`) and takes those behind it as live
(each was sent after the probe, so it waited less than the lag that caused the purge).

Guards: no probe and no purge unless a flood is heard (idle and normal traffic never cost anything), but for one
probe when a connection comes up, which proves the probe's way; no purge
until one probe of this process has come back (a broker whose ACL forbids the probe never sees a purge,
whatever the traffic); at most one purge per :data:`PURGE_GAP` seconds; one WARNING per flood, not per purge.
A purge is not a take-over (:mod:`gateway.mqtt.identity`) and not an outage: the uplink (events, PUBACKs, the
last will) is another connection and is not touched.

Used on the inlet's network thread only; time is the injected monotonic clock.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Literal

import paho.mqtt.client as mqtt

from gateway.mqtt.health import BridgeCounters

log = logging.getLogger(__name__)

FLOOD_RATE = 200
"""Messages a second on the inlet above which it probes its lag. Hub commands are rate-limited to 50 a second
in all by default and births are rare: normal traffic stays far below."""
LAG_LIMIT = 1.0
"""Seconds a probe may take to come back while flooded before the inlet's queue is purged."""
PURGE_GAP = 2.0
"""Seconds between two purges at least: a flood that outlasts them costs a reconnection every few seconds."""
FLOOD_QUIET = 10.0
"""Seconds without a flooded second that end a flood: the next one is logged again."""
PROBE_PREFIX = b"probe "
KEPT_TOKENS = 8
"""Probe tokens remembered, so a late one (sent before a reconnection) still proves the probe's way works."""

Verdict = Literal["", "probe", "send", "purge"]
"""What :meth:`LagWatch.observe` asks of the link: nothing; the message was a probe (not a command); send a
probe (:meth:`LagWatch.probe`); purge the inlet's queue now."""


class LagWatch:
    """Fed every message the inlet hears; says when to probe and when to purge (see the module docstring)."""

    def __init__(self, topic: str, counters: BridgeCounters, monotonic: Callable[[], float], *,
                 rate: int = FLOOD_RATE, limit: float = LAG_LIMIT, gap: float = PURGE_GAP) -> None:
        self.topic = topic
        """Where probes go: the backlog marker's topic."""
        self._counters = counters
        self._now = monotonic
        self._rate = rate
        self._limit = limit
        self._gap = gap
        self._window_start = monotonic()
        self._window_count = 0
        self._last_window_count = 0
        self._outstanding: tuple[bytes, float, bytes] | None = None
        """The probe on its way: token, time sent, payload."""
        self._sent: deque[bytes] = deque(maxlen=KEPT_TOKENS)
        self._last_purge: float | None = None
        self._last_flooded: float | None = None
        self._warned = False
        self.proven = False
        """A probe of this process came back: the broker lets the gateway publish it (and it is heard)."""
        self.last_lag: float | None = None
        """Seconds the last probe that came back took."""
        self.boundary: bytes | None = None
        """The payload of the probe outstanding at the last purge: the commands the session kept in front of it
        waited too long; those behind it did not (:meth:`gateway.mqtt.backlog.OfflineBacklog.purged`)."""

    def connected(self) -> bytes:
        """A new connection: nothing is queued in front of us any more. Returns a probe to send at once (it
        proves the probe's way at the first connection, and measures the lag of a flood that goes on)."""
        self._outstanding = None
        return self.probe()

    def probe(self) -> bytes:
        """A new probe's payload, now outstanding."""
        now = self._now()
        token = uuid.uuid4().hex.encode()
        payload = PROBE_PREFIX + token + b" %.3f" % now
        self._outstanding = (token, now, payload)
        self._sent.append(token)
        return payload

    def observe(self, topic: str, payload: bytes | bytearray) -> Verdict:
        """One message the inlet heard (its network thread)."""
        now = self._now()
        if topic == self.topic and payload.startswith(PROBE_PREFIX):
            self._returned(bytes(payload[len(PROBE_PREFIX):].split(b" ", 1)[0]), now)
            return "probe"
        flooded = self._count(now)
        if self._last_flooded is not None and now - self._last_flooded > FLOOD_QUIET:
            self._end_flood()
        if not flooded:
            self._outstanding = None  # a probe the broker shed, or one from a flood that ended: it says nothing
            return ""
        self._last_flooded = now
        if self._outstanding is None:
            return "send"
        if now - self._outstanding[1] <= self._limit or not self.proven:
            return ""
        if self._last_purge is not None and now - self._last_purge < self._gap:
            return ""
        return self._purge(now)

    def _count(self, now: float) -> bool:
        """Count one message in this second's window; whether this or the last full second was flooded."""
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self._last_window_count = self._window_count if elapsed < 2.0 else 0
            self._window_start = now
            self._window_count = 0
        self._window_count += 1
        return self._window_count > self._rate or self._last_window_count > self._rate

    def _returned(self, token: bytes, now: float) -> None:
        if token not in self._sent:
            return  # another process's, or one from long ago
        self.proven = True
        if self._outstanding is not None and self._outstanding[0] == token:
            self.last_lag = now - self._outstanding[1]
            self._outstanding = None

    def _purge(self, now: float) -> Verdict:
        assert self._outstanding is not None
        _, sent, self.boundary = self._outstanding
        self._outstanding = None
        self._last_purge = now
        self._counters.inlet_backlog_purged += 1
        if not self._warned:
            self._warned = True
            log.warning("the inlet is %.1f s behind a flood of messages (more than %d a second): dropping what "
                        "the broker and the socket hold for it by reconnecting; hub commands (QoS 1) that waited "
                        "longer than %g s are refused, QoS 0 ones are lost; repeated at most every %g s while the "
                        "flood lasts, counted in health (shed.inlet_backlog_purged)",
                        now - sent, self._rate, self._limit, self._gap)
        else:
            log.debug("the inlet is %.1f s behind the flood again: purging", now - sent)
        return "purge"

    def _end_flood(self) -> None:
        if self._warned:
            log.info("the flood on the inlet is over (%d purge(s) since start)", self._counters.inlet_backlog_purged)
        self._warned = False
        self._last_flooded = None


REMEMBERED = 64
"""QoS 1 messages remembered as handled: more than paho handles between two writes of its acknowledgements."""


class Redeliveries:
    """QoS 1 messages the inlet handled whose acknowledgement the connection's end may have lost.

    paho acknowledges a QoS 1 message after its callback returns, and writes the PUBACK later in its loop;
    when the connection ends first (a purge closes the socket; a lost connection), the broker resends the
    message with DUP set and the same packet id. Handled twice, a command would be answered twice (the second
    time as one from the backlog) or, with an MQTT 5 expiry, applied twice. So the last :data:`REMEMBERED`
    handled are remembered (packet id, topic, payload hash); after a connection ends, a DUP copy of one of
    them is skipped (paho still acknowledges it), until the first message that is not such a copy (a broker
    resends what it kept before anything new). Used on the inlet's network thread only."""

    def __init__(self) -> None:
        self._recent: deque[tuple[int, str, int]] = deque(maxlen=REMEMBERED)
        self._expected: set[tuple[int, str, int]] = set()

    @staticmethod
    def _key(message: mqtt.MQTTMessage) -> tuple[int, str, int]:
        return message.mid, message.topic, hash(bytes(message.payload))

    def handled(self, message: mqtt.MQTTMessage) -> None:
        if message.qos >= 1:
            self._recent.append(self._key(message))

    def connection_ended(self) -> None:
        self._expected = set(self._recent)
        self._recent.clear()

    def repeat(self, message: mqtt.MQTTMessage) -> bool:
        """Whether ``message`` is a resent copy of one already handled (skip it)."""
        if not self._expected:
            return False
        if message.dup and self._key(message) in self._expected:
            return True
        self._expected = set()
        return False
