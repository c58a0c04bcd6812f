"""Whether the wall clock can be trusted, and what the schedules do about it.

A board without a real-time clock boots with a wrong time until NTP syncs.
Until :attr:`WallClock.check` says the clock is synchronised, the policy
decides: ``wait`` keeps the schedules stopped and makes :meth:`local_now`
None (time conditions are false, a thermostat follows its plain setpoint);
``run`` uses the clock as it is (traces say so). A step of the wall clock
against the monotonic one (more than :data:`CLOCK_STEP` s between two polls)
makes the scheduler recompute its next runs. The engine calls :meth:`poll`
at start and then every ``rules.engine.CLOCK_POLL`` seconds.

An unsynchronised clock is logged once (WARNING), not at every poll, and once
more when it becomes synchronised, with the number of checks it took
(:class:`core.logonce.LogOnce`); the checks in between are at DEBUG.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Literal
from zoneinfo import ZoneInfo

from core.clock import Clock
from core.logonce import LogOnce
from rules.schedule import Schedules

log = logging.getLogger("rules.engine")  # the installer's log has always said this under the engine's name

CLOCK_STEP = 2.0
"""Seconds the wall clock may move against the monotonic clock between polls before it counts as a step."""

Policy = Literal["wait", "run"]


class WallClock:
    """The gateway's view of wall time: synchronised or not, local time in its zone, and the scheduler's start."""

    def __init__(self, clock: Clock, tz: ZoneInfo, policy: Policy, check: Callable[[], bool],
                 schedules: Schedules) -> None:
        self.clock = clock
        self.tz = tz
        self.policy: Policy = policy
        self.check = check
        """True once the clock is synchronised (``schedule.clock_synchronised`` on a board)."""
        self.schedules = schedules
        self.synced = False
        self._offset: float | None = None
        self._unsynced = LogOnce(log)
        """Said once when the clock is found unsynchronised, and once more when it becomes synchronised."""

    def local_now(self) -> dt.datetime | None:
        """Local wall time, or None while the clock is not trusted (policy ``wait``)."""
        if not self.synced and self.policy == "wait":
            return None
        return dt.datetime.fromtimestamp(self.clock.time(), self.tz)

    def poll(self) -> None:
        """Check synchronisation (until it holds), start the schedules when allowed, and notice a step."""
        if not self.synced:
            self.synced = bool(self.check())
            if not self.synced:
                waits = "schedules and time conditions wait" if self.policy == "wait" else "schedules run on it"
                self._unsynced.holds(logging.WARNING, "wall clock not synchronised yet: %s", waits)
            elif not self._unsynced.ended(logging.INFO, "wall clock synchronised after %d checks: "
                                                        "schedules and time conditions active"):
                log.info("wall clock synchronised: schedules and time conditions active")
        if (self.synced or self.policy == "run") and not self.schedules.running:
            self.schedules.start()
        offset = self.clock.time() - self.clock.monotonic()
        if self._offset is not None and abs(offset - self._offset) > CLOCK_STEP:
            log.warning("wall clock stepped by %+.1fs: schedules recomputed", offset - self._offset)
            self.schedules.wakeup()
        self._offset = offset
