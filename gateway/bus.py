"""The bounded event bus between producer threads and the single dispatcher.

Drivers, paho's network thread and the scheduler only ever *post*; the
dispatcher is the only consumer. The bus must not let a chattering contact or
a serial device spewing lines eat the memory of a 512 MB board, and it must
never lose a change that matters. The overflow policy:

* While the queue holds fewer than ``capacity`` events, every event is queued.
* When it is full, a *reading* is coalesced: it waits in a side table that keeps
  only the newest reading per entity, and each reading it replaces is counted
  in ``coalesced``. The newest value of every entity therefore always arrives,
  and memory is bounded by ``capacity`` plus the number of entities.
* Readings of an entity that already has one waiting in the side table go
  there too, so readings of one entity are never reordered.
* Critical events (commands, confirmed states, alarm, availability, system)
  are never dropped or coalesced; they are queued past ``capacity`` up to
  ``hard_limit``. Beyond that (a runaway producer, not a house) they are
  dropped and counted in ``dropped`` and the drop is logged once per burst.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from core.events import Event

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BusCounters:
    posted: int = 0
    coalesced: int = 0
    dropped: int = 0
    high_water: int = 0


class Bus:
    __slots__ = ("_cond", "_hard_limit", "_overflow", "_queue", "_wake", "capacity", "counters")

    def __init__(self, capacity: int = 10_000, hard_limit: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._hard_limit = hard_limit if hard_limit is not None else capacity * 2
        self._queue: deque[Event] = deque()
        self._overflow: dict[str, Event] = {}
        self._cond = threading.Condition(threading.Lock())
        self._wake = False
        self.counters = BusCounters()

    def post(self, event: Event) -> None:
        """Queue an event; never blocks, safe from any thread."""
        with self._cond:
            self.counters.posted += 1
            if not event.critical and (
                len(self._queue) >= self.capacity or event.entity in self._overflow
            ):
                if event.entity in self._overflow:
                    self.counters.coalesced += 1
                self._overflow[event.entity] = event
            elif event.entity in self._overflow:
                # A critical event must not overtake an older reading of its entity.
                self._queue.append(self._overflow.pop(event.entity))
                self._queue.append(event)
            elif len(self._queue) >= self._hard_limit:
                if self.counters.dropped == 0 or len(self._queue) == self._hard_limit:
                    log.error("bus over its hard limit (%d): dropping %s", self._hard_limit, event.kind)
                self.counters.dropped += 1
                return
            else:
                self._queue.append(event)
                self.counters.high_water = max(self.counters.high_water, len(self._queue))
            self._cond.notify()

    def get(self, timeout: float | None) -> Event | None:
        """The next event, or None on timeout or after :meth:`wake`."""
        with self._cond:
            if not self._queue and not self._overflow and not self._wake:
                self._cond.wait(timeout)
            self._wake = False
            return self._pop()

    def get_nowait(self) -> Event | None:
        with self._cond:
            return self._pop()

    def wake(self) -> None:
        """Make a waiting :meth:`get` return now (signal handlers use this)."""
        with self._cond:
            self._wake = True
            self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._overflow)

    def _pop(self) -> Event | None:
        if self._overflow and len(self._queue) < self.capacity:
            self._refill()
        if self._queue:
            return self._queue.popleft()
        return None

    def _refill(self) -> None:
        """Move coalesced readings back into the queue, oldest first, as room allows."""
        room = self.capacity - len(self._queue)
        for entity in list(self._overflow)[:room]:
            self._queue.append(self._overflow.pop(entity))
