"""One entity's path from a raw value to events: conditioning, its timers, and staleness.

A driver makes one :class:`Channel` per entity and calls :meth:`Channel.feed`
from whatever thread sees the raw value (a gpiozero callback, a serial reader,
a poll timer). The channel runs the entity's conditioning
:class:`~drivers.conditioning.Pipeline` under a lock, arms the pipeline's next
deadline on the context's scheduler, and posts:

* a reading for every value that comes out of the pipeline;
* ``availability False`` when a ``stuck`` step says so, or when nothing raw
  arrived for ``stale_after`` seconds; ``availability True`` when values flow again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable

from core.events import Event, Kind
from drivers.base import DriverContext
from drivers.conditioning import Health, Out, Pipeline, Raw, Sample, StepConfig, build_pipeline
from drivers.timing import Handle

log = logging.getLogger(__name__)


class Channel:
    def __init__(
        self,
        ctx: DriverContext,
        entity: str,
        *,
        unit: str | None = None,
        steps: Iterable[StepConfig] = (),
        stale_after: float | None = None,
        kind: Kind = Kind.READING,
    ) -> None:
        self.ctx = ctx
        self.entity = entity
        self.unit = unit
        self.kind = kind
        self.pipeline: Pipeline = build_pipeline(steps)
        self._direct = not self.pipeline.steps
        self._make_at = ctx.events.make_at
        self.stale_after = stale_after
        self.available: bool | None = None
        self._lock = threading.RLock()
        self._timer: Handle | None = None
        self._timer_at: float | None = None
        self._stale_timer: Handle | None = None
        self._last_raw = ctx.clock.monotonic()
        self._closed = False
        if stale_after is not None:
            self._arm_stale(self._last_raw + stale_after)

    def feed(self, value: Raw) -> None:
        """A raw value seen now; safe from any thread."""
        clock = self.ctx.clock
        with self._lock:
            events: list[Event] = []
            self._take(value, clock.monotonic(), clock.time(), events)
            self._rearm()
            if events:
                self.ctx.post_all(events)

    def set_available(self, available: bool, reason: str | None = None) -> None:
        """Post an availability change (the port vanished, it came back); repeated calls post once."""
        with self._lock:
            events: list[Event] = []
            self._availability(available, reason, events)
            if events:
                self.ctx.post(events[0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for handle in (self._timer, self._stale_timer):
                if handle is not None:
                    handle.cancel()
            self._timer = self._stale_timer = None

    # -- inside ------------------------------------------------------------------------------

    def _take(self, value: Raw, now: float, ts: float, events: list[Event]) -> None:
        """Under the lock: ``value`` seen at ``now`` (monotonic; ``ts`` the wall clock then), its events appended
        to ``events`` for the caller to post, in order, before it lets go of the lock (so that a timer's
        output can never overtake them)."""
        if self._closed:
            return
        self._last_raw = now
        if self._direct:  # no conditioning: the value is the reading, without a Sample and a pass through no steps
            if self.available is True:  # _reading's common case, inline: one call less a line (issue 14)
                events.append(self._make_at(self.kind, self.entity, value, ts, now, self.unit))
            else:
                self._reading(value, now, ts, events)
        else:
            self._emit(self.pipeline.feed(Sample(value, now)), now, ts, events)

    def _emit(self, outs: list[Out], now: float, ts: float, events: list[Event]) -> None:
        for out in outs:
            if isinstance(out, Health):
                self._availability(out.available, out.reason, events)
            else:
                self._reading(out.value, now, ts, events)

    def _reading(self, value: Raw, now: float, ts: float, events: list[Event]) -> None:
        """A value out of the pipeline: its reading, after ``availability True`` if the entity was unavailable."""
        if self.available is not True:
            if self.available is False:
                self._availability(True, None, events)
            self.available = True
        events.append(self._make_at(self.kind, self.entity, value, ts, now, self.unit))

    def _availability(self, available: bool, reason: str | None, events: list[Event]) -> None:
        if self._closed or self.available is available:
            return
        self.available = available
        events.append(self.ctx.events.availability(self.entity, available, reason))

    def _rearm(self) -> None:
        if self._closed:
            return
        deadline = self.pipeline.deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.ctx.timers().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._timer = self._timer_at = None
            clock = self.ctx.clock
            now = clock.monotonic()
            events: list[Event] = []
            self._emit(self.pipeline.poll(now), now, clock.time(), events)
            self._rearm()
            if events:
                self.ctx.post_all(events)

    def _arm_stale(self, deadline: float) -> None:
        self._stale_timer = self.ctx.timers().call_at(deadline, self._on_stale)

    def _on_stale(self) -> None:
        with self._lock:
            if self._closed or self.stale_after is None:
                return
            due = self._last_raw + self.stale_after
            if self.ctx.clock.monotonic() >= due:
                self.set_available(False, f"no reading for {self.stale_after:g} s")
                due = self.ctx.clock.monotonic() + self.stale_after
            self._arm_stale(due)


def feed_read(ctx: DriverContext, channels: Collection[Channel], values: Iterable[tuple[Channel, Raw]]) -> None:
    """The values of one read (a serial chunk of many lines), for ``channels`` of one driver, fed in order:
    what :meth:`Channel.feed` of each in turn does, with the clocks read once and the events posted as one
    batch (:meth:`DriverContext.post_all`), in the order the values came, across entities too.

    At 10,000 lines/s a read brings ~80 lines; two clock reads, a lock round of the channel and one of the bus
    per line were a third of the reader thread's Python work (issue 14). Every channel's lock is held until the
    batch is posted, so a channel's timer (conditioning, staleness) cannot post between a value's events
    and the batch: an entity's events stay in pipeline order. No other thread holds two channel locks, so
    taking several cannot deadlock."""
    clock = ctx.clock
    refused: list[tuple[Channel, Raw, Exception]] = []
    locks = _hold([channel._lock for channel in channels])
    try:
        now, ts = clock.monotonic(), clock.time()
        events: list[Event] = []
        try:
            for channel, value in values:
                try:
                    channel._take(value, now, ts, events)
                except Exception as exc:  # one value costs that value, never the read
                    refused.append((channel, value, exc))
        finally:  # the events of the values taken are posted whatever happens: a channel's state has moved with them
            for channel in channels:
                channel._rearm()
            if events:
                ctx.post_all(events)
    finally:
        _let_go(locks)
    if refused:
        first, raw, error = refused[0]
        log.error("%s: value %r refused by its conditioning (%s: %s)%s", first.entity, raw, type(error).__name__,
                  error, f"; {len(refused) - 1} more in the same read" if len(refused) > 1 else "")


def _hold(locks: list[threading.RLock]) -> list[threading.RLock]:
    """Take ``locks`` in order; returns them, for :func:`_let_go`. Should taking one fail, those taken are let go.

    What ``contextlib.ExitStack`` did for :func:`feed_read`, without its Python-level bookkeeping per lock and
    per exit (a tenth of a read's work at ~8 lines a read; issue 14)."""
    taken: list[threading.RLock] = []
    try:
        for lock in locks:
            lock.acquire()
            taken.append(lock)
    except BaseException:
        _let_go(taken)
        raise
    return taken


def _let_go(locks: list[threading.RLock]) -> None:
    """Release ``locks`` (taken by :func:`_hold`), the last taken first."""
    for lock in reversed(locks):
        lock.release()
