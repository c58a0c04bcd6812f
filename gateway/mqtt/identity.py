"""A duplicate client id: two gateways that knock each other off the broker in a loop.

A broker allows one session per client id. When a second client connects with the id of a
connected one, the broker closes the first (MQTT 5: DISCONNECT with reason 0x8E *Session taken
over*; MQTT 3.1.1: the socket just closes). Both reconnect with backoff, each taking the session
from the other, for ever: the hub sees the gateway flap, and each one's events and states overwrite
the other's under the same topics. This happens when an image is cloned to a second board, or an
installer copies a config.toml without changing ``gateway.id``.

:class:`TakeoverGuard` counts session take-overs: each MQTT 5 disconnection with reason 0x8E, and
under MQTT 3.1.1 each connection lost within :data:`SHORT_SESSION` seconds of being accepted. At
:data:`TAKEOVER_LIMIT` of them within :data:`TAKEOVER_WINDOW` seconds the link stops reconnecting
until the gateway is restarted (after the installer gave one of the boards its own id), logs one
clear error, and says so in ``gateway status`` and in health. The other gateway, whose connection
is then no longer taken, stays connected; its retained ``<base>/health`` shows the take-overs it
suffered under ``identity`` (docs/fleet.md, *Duplicate identities*).

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
"""Under MQTT 3.1.1 (no reason code), a connection lost this soon after its CONNACK counts as taken over."""


class TakeoverGuard:
    """Fed by the link's callbacks (paho's thread); :attr:`stopped` says whether to give up."""

    def __init__(self, monotonic: Callable[[], float], *, mqtt5: bool, limit: int = TAKEOVER_LIMIT,
                 window: float = TAKEOVER_WINDOW, short: float = SHORT_SESSION) -> None:
        self._now = monotonic
        self._mqtt5 = mqtt5
        self._limit = limit
        self._window = window
        self._short = short
        self._connected_at: float | None = None
        self._recent: deque[float] = deque()
        self.takeovers = 0
        """Since start."""
        self.stopped = False
        """The limit was reached: the link does not reconnect until restart."""

    def connected(self) -> None:
        self._connected_at = self._now()

    def lost(self, reason: ReasonCode | int | None) -> bool:
        """A connected link dropped (not by our own stop): True when this makes the link give up."""
        now = self._now()
        since, self._connected_at = self._connected_at, None
        code = reason.value if isinstance(reason, ReasonCode) else reason
        # MQTT 5 names the cause; under 3.1.1 a connection dropped right after its CONNACK stands for it
        taken = code == SESSION_TAKEN_OVER if self._mqtt5 else since is not None and now - since <= self._short
        if not taken:
            return False
        self.takeovers += 1
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self._window:
            self._recent.popleft()
        if len(self._recent) >= self._limit:
            self.stopped = True
        return self.stopped

    def report(self) -> dict[str, object]:
        """For health: ``ok``, ``contested`` (taken over recently) or ``duplicate`` (gave up)."""
        now = self._now()
        recent = sum(1 for t in self._recent if now - t <= self._window)
        state = "duplicate" if self.stopped else "contested" if recent else "ok"
        return {"state": state, "takeovers": self.takeovers}
