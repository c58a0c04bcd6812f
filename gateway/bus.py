"""The bounded event bus between producer threads and the single dispatcher.

Drivers, paho's network thread and the scheduler only ever *post*; the
dispatcher is the only consumer. The bus must not let a chattering contact or
a serial device spewing lines eat the memory of a 512 MB board, and it must
never lose a change that matters. The overflow policy:

* While the queue holds fewer than ``capacity`` events, and fewer than
  ``per_entity`` readings of the event's entity, every event is queued.
* When it is full, or the entity already has ``per_entity`` readings queued (one
  chattering sensor or a serial device spewing lines), a *reading* is coalesced: it waits in a side table that keeps
  only the newest reading per entity, and each reading it replaces is counted
  in ``coalesced``. The newest value of every entity therefore always arrives,
  and memory is bounded by ``capacity`` plus the number of entities. The quota
  keeps the newest value of a flooding entity at most ``per_entity`` of its own
  readings behind (about one dispatcher cycle), instead of behind a queue of
  ``capacity`` stale readings; a burst within the quota arrives whole, so
  edge-triggered rules still see every crossing of a normal device.
* A device that declares its rate (a serial device's ``max_lines_per_s``, or the rate its report interval
  implies: :class:`drivers.supervision.DeclaresRate`) is no flood while it keeps to it: each of its entities
  gets a quota of :data:`QUOTA_SECONDS` of that rate (:func:`rate_quotas`), not ``per_entity``. At 10,000
  lines/s, 256 readings were 26 ms: any pause of the dispatcher longer than that (a collection, a busy core)
  coalesced readings the device was declared to send (issue 14). A device beyond its rate is coalesced by its
  own link first (``drivers.serial_link``); the bus's ``capacity`` still bounds the whole.
* Readings of an entity that already has one waiting in the side table go
  there too, so readings of one entity are never reordered.
* Critical events (commands, confirmed states, alarm, availability, system)
  are never dropped or coalesced; they are queued past ``capacity`` up to
  ``hard_limit``. Beyond that (a runaway producer, not a house) they are
  dropped and counted in ``dropped`` and the drop is logged once per burst.

What was shed is counted by kind (``coalesced_by_kind``, ``dropped_by_kind``)
for health and ``gateway status``.

How the consumer is woken (issue 14: the dispatcher was woken about 1.5 times
per line at 1,000 lines/s). There is one consumer. It waits on a raw lock used
as a one-shot signal, not on a ``threading.Condition``: before it blocks it sets
``_sleeping`` under the bus lock; a producer that finds it set clears it and
releases the signal *after* letting go of the bus lock, so the woken consumer
does not find the lock still held and block a second time, and a post nobody
waits for costs one flag test (``Condition.notify`` tried the lock and walked
its waiters on every post; ``Condition.wait`` allocated a lock per wait).
Exactly one party clears the flag, so the signal is released at most once per
wait: a wait that times out while a producer is between the two steps takes
the release that is coming, and no stale signal is left to cut the next wait
short.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from core.events import CRITICAL_KINDS, Event

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BusCounters:
    posted: int = 0
    coalesced: int = 0
    dropped: int = 0
    high_water: int = 0
    coalesced_by_kind: dict[str, int] = field(default_factory=dict)
    dropped_by_kind: dict[str, int] = field(default_factory=dict)

    def shed(self, kind: str, *, dropped: bool) -> None:
        """Count one event coalesced away (or dropped), in total and by its kind."""
        if dropped:
            self.dropped += 1
            self.dropped_by_kind[kind] = self.dropped_by_kind.get(kind, 0) + 1
        else:
            self.coalesced += 1
            self.coalesced_by_kind[kind] = self.coalesced_by_kind.get(kind, 0) + 1


def waker(event: threading.Event) -> Callable[[], None]:
    """``event.set`` for a thread that waits on ``event`` and clears it when it wakes (the MQTT publisher, the
    history's writer), skipped while the signal is still set: that thread has not woken yet, or has not cleared
    it yet, so it has still to run its round, which sees what the caller queued before calling.

    The same effect as ``event.set``, for a flag test instead of a lock, a flag write and a walk of the waiters
    (issue 14: the forwarding thread signalled the publisher once per event, 20,000 times a second at 10,000
    lines/s, nearly all of them while the signal was still set)."""
    is_set, signal = event.is_set, event.set

    def wake() -> None:
        if not is_set():
            signal()

    return wake


PER_ENTITY = 256
"""Readings of one entity queued before the newer ones are coalesced (see the module docstring): one cycle of
the dispatcher (:data:`gateway.dispatcher.BATCH` events a :meth:`Bus.get_batch`), so a stream the dispatcher keeps
up with (a 1,000 lines/s serial device) is never coalesced, and a flood's newest value is one cycle old."""


QUOTA_SECONDS = 0.5
"""Seconds of its declared rate an entity may have queued before its readings are coalesced: a pause of the
dispatcher this long loses nothing a device sends within its declaration (the module docstring)."""


def rate_quotas(rates: Mapping[str, float], per_entity: int = PER_ENTITY) -> dict[str, int]:
    """Each entity's quota from the readings per second its device declares: :data:`QUOTA_SECONDS` of them,
    never fewer than ``per_entity``."""
    return {entity: max(per_entity, math.ceil(rate * QUOTA_SECONDS)) for entity, rate in rates.items()}


class Bus:
    __slots__ = ("_hard_limit", "_lock", "_overflow", "_queue", "_queued", "_quotas", "_signal", "_sleeping", "_wake",
                 "capacity", "counters", "per_entity")

    def __init__(self, capacity: int = 10_000, hard_limit: int | None = None, per_entity: int = PER_ENTITY,
                 quotas: Mapping[str, int] | None = None) -> None:
        """``quotas``: the entities whose quota is not ``per_entity`` (:func:`rate_quotas`)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if per_entity < 1:
            raise ValueError("per_entity must be at least 1")
        self.capacity = capacity
        self.per_entity = per_entity
        self._quotas: dict[str, int] = dict(quotas or {})
        self._queued: dict[str, int] = {}
        """Non-critical events queued, per entity (the quota's count)."""
        self._hard_limit = hard_limit if hard_limit is not None else capacity * 2
        self._queue: deque[Event] = deque()
        self._overflow: dict[str, Event] = {}
        self._lock = threading.Lock()
        self._signal = threading.Lock()
        """Held except while a producer hands the sleeping consumer its wake-up (the module docstring)."""
        self._signal.acquire()
        self._sleeping = False
        """The consumer waits (or is about to) on ``_signal``; set by it and cleared by whoever releases it,
        both under ``_lock``."""
        self._wake = False
        self.counters = BusCounters()

    def quota(self, entity: str) -> int:
        """Readings of ``entity`` queued before newer ones are coalesced."""
        return self._quotas.get(entity, self.per_entity)

    def post(self, event: Event) -> None:
        """Queue an event; never blocks, safe from any thread."""
        with self._lock:
            self._place(event)
            self._high_water()
            sleeping = self._sleeping
            self._sleeping = False
        if sleeping:
            self._signal.release()

    def post_many(self, events: Iterable[Event]) -> None:
        """Queue events in their order, exactly as :meth:`post` of each in turn would (the same overflow and
        coalescing rules, event by event), under one lock round and with at most one wake-up: a serial read
        brings dozens of lines at 10,000 lines/s, and a lock round and a wake-up test per line were a
        fifth of the reader thread's Python work (issue 14). Never blocks, safe from any thread."""
        with self._lock:
            self._place_all(events)
            self._high_water()
            sleeping = self._sleeping
            self._sleeping = False
        if sleeping:
            self._signal.release()

    def _place_all(self, events: Iterable[Event]) -> None:
        """Under the lock: :meth:`_place` of each event in turn, with its common case inline (no reading waits in
        the side table, the queue has room, the entity is within its quota: the event is queued). Two calls and
        a ``max`` per event were a quarter of the serial reader's work at 10,000 lines/s (issue 14). From the
        first event that is not that case on, each goes through :meth:`_place` (tests/test_serial_read_batches.py
        checks the whole against posting one by one: the same events out, the same counters)."""
        rest = iter(events)
        first_other: Event | None = None
        if not self._overflow:  # and it stays empty: the common case only queues
            first_other = self._queue_common(rest)
        if first_other is not None:
            self._place(first_other)
        for event in rest:
            self._place(event)

    def _queue_common(self, events: Iterator[Event]) -> Event | None:
        """Under the lock, the side table empty: queue ``events`` while each is the common case; the first that
        is not is returned, unplaced (None: all were queued)."""
        queue, queued, quotas = self._queue, self._queued, self._quotas
        capacity, hard_limit, per_entity = self.capacity, self._hard_limit, self.per_entity
        posted = 0
        other: Event | None = None
        for event in events:
            entity = event.entity
            if event.kind in CRITICAL_KINDS:
                if len(queue) >= hard_limit:
                    other = event
                    break
            else:
                count = queued.get(entity, 0)
                if len(queue) >= capacity or count >= quotas.get(entity, per_entity):
                    other = event
                    break
                queued[entity] = count + 1
            queue.append(event)
            posted += 1
        self.counters.posted += posted
        return other

    def _high_water(self) -> None:
        """Under the lock, after placing: the longest the queue has been (it only grows while events are placed)."""
        self.counters.high_water = max(self.counters.high_water, len(self._queue))

    def _place(self, event: Event) -> None:
        """Under the lock: queue, coalesce or drop one event (the module docstring's policy)."""
        self.counters.posted += 1
        entity = event.entity
        if event.kind not in CRITICAL_KINDS and (  # event.critical, without a property call a post

            len(self._queue) >= self.capacity or entity in self._overflow
            or self._queued.get(entity, 0) >= self._quotas.get(entity, self.per_entity)
        ):
            replaced = self._overflow.get(entity)
            if replaced is not None:
                self.counters.shed(str(replaced.kind), dropped=False)
            self._overflow[entity] = event
        elif entity in self._overflow:
            # A critical event must not overtake an older reading of its entity.
            self._append(self._overflow.pop(entity))
            self._append(event)
        elif len(self._queue) >= self._hard_limit:
            if self.counters.dropped == 0 or len(self._queue) == self._hard_limit:
                log.error("bus over its hard limit (%d): dropping %s", self._hard_limit, event.kind)
            self.counters.shed(str(event.kind), dropped=True)
        else:
            self._append(event)

    def get(self, timeout: float | None) -> Event | None:
        """The next event, or None on timeout or after :meth:`wake`: :meth:`get_batch` of one."""
        batch = self.get_batch(timeout, 1)
        return batch[0] if batch else None

    def get_batch(self, timeout: float | None, limit: int) -> list[Event]:
        """Up to ``limit`` events in order, under one lock: waits (like :meth:`get`) only when there is
        none; empty on timeout or after :meth:`wake`. One lock round and one wake-up per batch rather
        than per event (issue 14: the producers post while the dispatcher drains). The quota counts of
        what is taken are released at once, so at most ``limit`` more readings than ``capacity`` are
        held in memory."""
        with self._lock:
            if self._ready(timeout):  # events wait (a busy stream): one lock round, no wait
                return self._take(limit)
            self._sleeping = True
        self._sleep(timeout)
        with self._lock:
            return self._take(limit)

    def _take(self, limit: int) -> list[Event]:
        self._wake = False
        if self._overflow:  # readings wait in the side table: they move into the queue as room is made
            batch: list[Event] = []
            while len(batch) < limit and (event := self._pop()) is not None:
                batch.append(event)
            return batch
        # Nothing to refill from: :meth:`_pop`'s work for the whole batch at once, without a call per event (issue 14).
        popleft, queued = self._queue.popleft, self._queued
        batch = [popleft() for _ in range(min(limit, len(self._queue)))]
        for event in batch:
            if event.kind not in CRITICAL_KINDS:
                entity = event.entity
                left = queued[entity] - 1
                if left:
                    queued[entity] = left
                else:
                    del queued[entity]
        return batch

    def get_nowait(self) -> Event | None:
        with self._lock:
            return self._pop()

    def wake(self) -> None:
        """Make a waiting :meth:`get` return now, or the next one if none waits. Not from a signal handler:
        the bus lock is not re-entrant (``gateway.service`` wakes the loop from a thread of its own)."""
        with self._lock:
            self._wake = True
            sleeping = self._sleeping
            self._sleeping = False
        if sleeping:
            self._signal.release()

    def _ready(self, timeout: float | None) -> bool:
        """Under the lock: the consumer need not wait (something to take, a :meth:`wake`, no time to wait)."""
        return bool(self._queue or self._overflow or self._wake or (timeout is not None and timeout <= 0))

    def _sleep(self, timeout: float | None) -> None:
        """The consumer's wait, once it has set ``_sleeping`` under the lock: returns when a producer or
        :meth:`wake` released the signal, or ``timeout`` seconds (None: no limit) passed. One consumer only."""
        signalled = False
        try:
            # True: released by the producer that cleared ``_sleeping``; the signal is ours (held) again.
            signalled = self._signal.acquire(True, -1 if timeout is None else min(timeout, threading.TIMEOUT_MAX))
        finally:  # the wait ran out (or a signal handler raised in it)
            if not signalled:
                with self._lock:
                    coming = not self._sleeping  # a producer cleared it after the wait ran out: its release follows
                    self._sleeping = False
                if coming:
                    self._signal.acquire()  # take that release, so that no stale signal cuts the next wait short

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._overflow)

    def _pop(self) -> Event | None:
        if self._overflow and len(self._queue) < self.capacity:
            self._refill()
        if self._queue:
            event = self._queue.popleft()
            if not event.critical:
                left = self._queued[event.entity] - 1
                if left:
                    self._queued[event.entity] = left
                else:
                    del self._queued[event.entity]
            return event
        return None

    def _append(self, event: Event) -> None:
        self._queue.append(event)
        if event.kind not in CRITICAL_KINDS:
            self._queued[event.entity] = self._queued.get(event.entity, 0) + 1

    def _refill(self) -> None:
        """Move coalesced readings back into the queue, oldest first, as room allows."""
        room = self.capacity - len(self._queue)
        for entity in list(self._overflow)[:room]:
            self._append(self._overflow.pop(entity))
