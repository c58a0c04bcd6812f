"""A duplicate client id: two gateways that knock each other off the broker in a loop.

A broker allows one session per client id. When a second client connects with the id of a
connected one, the broker closes the first (MQTT 5: DISCONNECT with reason 0x8E *Session taken
over*; MQTT 3.1.1: the socket just closes). Both reconnect with backoff, each taking the session
from the other, for ever: the hub sees the gateway flap, and each one's events and states overwrite
the other's under the same topics. This happens when an image is cloned to a second board, or an
installer copies a config.toml without changing ``gateway.id``.

:class:`TakeoverGuard` counts session take-overs: each disconnection with the MQTT 5 reason 0x8E
*Session taken over*, and each connection lost within :data:`SHORT_SESSION` seconds of its CONNACK
(Mosquitto 2.0 closes the socket of the replaced client without a reason, whatever the protocol).
At :data:`TAKEOVER_LIMIT` of them within :data:`TAKEOVER_WINDOW` seconds the link stops fighting: it
makes no attempt for :data:`TAKEOVER_HOLD` seconds, logs one clear error (the first time), and says so
in ``gateway status`` and in health (``connection: duplicate client id``, ``identity.state:
duplicate``). The other gateway, whose session is then left alone, stays connected; its retained
``<base>/health`` shows ``identity.state: contested``. After the hold the link tries again: if the
duplicate is still there the loop trips again within a few attempts; if the "take-overs" were
a broker dropping every new connection, the gateway is back after the hold (a bounded cost for a
false alarm, where stopping until restart would not be). Restarting the gateway clears the hold
(docs/fleet.md, *Duplicate identities*).

The gateway has two connections, each with its own client id (``<client_id>`` and ``<client_id>-in``,
docs/mqtt.md, *Two connections*) and its own guard: a take-over of either is seen, and health reports
the inlet's under ``inlet.identity``.

Time is the monotonic clock, injected (tests count take-overs in virtual time).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from paho.mqtt.reasoncodes import ReasonCode

SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 reason code: another connection using the same client id."""
TAKEOVER_LIMIT = 3
"""Take-overs within :data:`TAKEOVER_WINDOW` that make the link give up."""
TAKEOVER_WINDOW = 300.0
"""Seconds."""
SHORT_SESSION = 10.0
"""A connection lost this soon after its CONNACK counts as taken over (brokers rarely give the reason)."""
TAKEOVER_HOLD = 900.0
"""Seconds without a connection attempt once the limit is reached."""


class TakeoverGuard:
    """Fed by the link's callbacks (paho's thread); :meth:`hold` says how long to keep off the broker."""

    def __init__(self, monotonic: Callable[[], float], *, limit: int = TAKEOVER_LIMIT,
                 window: float = TAKEOVER_WINDOW, short: float = SHORT_SESSION, hold: float = TAKEOVER_HOLD) -> None:
        self._now = monotonic
        self._limit = limit
        self._window = window
        self._short = short
        self._hold = hold
        self._connected_at: float | None = None
        self._recent: deque[float] = deque()
        self._hold_until: float | None = None
        self.takeovers = 0
        """Since start."""
        self.trips = 0
        """Times the limit was reached since start."""

    def connected(self) -> None:
        self._connected_at = self._now()

    def lost(self, reason: ReasonCode | int | None) -> bool:
        """A connected link dropped (not by our own stop): True when this trips the guard."""
        now = self._now()
        since, self._connected_at = self._connected_at, None
        code = reason.value if isinstance(reason, ReasonCode) else reason
        if code != SESSION_TAKEN_OVER and (since is None or now - since > self._short):
            return False
        self.takeovers += 1
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self._window:
            self._recent.popleft()
        if len(self._recent) < self._limit:
            return False
        self._recent.clear()
        self.trips += 1
        self._hold_until = now + self._hold
        return True

    def hold(self) -> float:
        """Seconds to keep off the broker from now (0 unless the guard tripped less than the hold ago)."""
        return 0.0 if self._hold_until is None else max(0.0, self._hold_until - self._now())

    @property
    def stopped(self) -> bool:
        return self.hold() > 0

    def report(self) -> dict[str, object]:
        """For health: ``state`` ``ok``, ``contested`` (taken over within the window) or ``duplicate``
        (holding off), ``takeovers`` since start, and while holding ``retry_in`` seconds."""
        now = self._now()
        hold = self.hold()
        if hold > 0:
            return {"state": "duplicate", "takeovers": self.takeovers, "retry_in": round(hold)}
        recent = any(now - t <= self._window for t in self._recent)
        return {"state": "contested" if recent else "ok", "takeovers": self.takeovers}
