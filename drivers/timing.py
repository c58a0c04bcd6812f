"""Timers for drivers: one seam, a real thread behind it on a board, virtual time in tests.

Conditioning (debounce, hold times, heartbeats), staleness and polled
sensors all need "call me at monotonic time T". Drivers never sleep and
never spin: they ask a :class:`Scheduler` for a callback at a deadline.

* :class:`ThreadScheduler` runs callbacks on one daemon thread that waits on
  a condition until the earliest deadline (no polling). Started lazily, so a
  driver without timers costs no thread; :meth:`ThreadScheduler.close` joins it.
* :class:`VirtualScheduler` runs them when a test calls :meth:`advance`,
  moving a :class:`~core.clock.VirtualClock` to each deadline in turn.

Fixed-rate polling without drift is :func:`every`: deadlines are
``start + k * period``, not "now + period", so the time a poll takes never
accumulates; polls missed while the board was busy are skipped, not bunched.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from core.clock import Clock, VirtualClock
from core.guard import guarded

log = logging.getLogger(__name__)


class Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """``call_at(deadline, fn)``: run ``fn`` once at monotonic time ``deadline`` (or soon after)."""

    @property
    def clock(self) -> Clock: ...

    def call_at(self, deadline: float, fn: Callable[[], None]) -> Handle: ...


@dataclass(order=True, slots=True)
class _Entry:
    deadline: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class _Heap:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()

    def push(self, deadline: float, fn: Callable[[], None]) -> _Entry:
        entry = _Entry(deadline, next(self._seq), guarded(f"timer {getattr(fn, '__qualname__', fn)}")(fn))
        heapq.heappush(self._heap, entry)
        return entry

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].deadline if self._heap else None

    def pop_due(self, now: float) -> _Entry | None:
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return None
        return heapq.heappop(self._heap)

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if not entry.cancelled)


class ThreadScheduler:
    """Timers on one daemon thread, waiting on a condition until the next deadline."""

    def __init__(self, clock: Clock, name: str = "driver-timers") -> None:
        self._clock = clock
        self._name = name
        self._heap = _Heap()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def clock(self) -> Clock:
        return self._clock

    def call_at(self, deadline: float, fn: Callable[[], None]) -> Handle:
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self._name}: scheduler is closed")
            entry = self._heap.push(deadline, fn)
            if self._thread is None:
                self._thread = threading.Thread(target=guarded(self._name)(self._run), name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = self._clock.monotonic()
                    entry = self._heap.pop_due(now)
                    if entry is not None:
                        break
                    deadline = self._heap.next_deadline()
                    self._cond.wait(None if deadline is None else max(0.0, deadline - now))
            entry.fn()

    def close(self) -> None:
        """Drop pending timers and join the thread; idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2)


class VirtualScheduler:
    """Timers that fire only when :meth:`advance` moves the virtual clock past them."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._heap = _Heap()
        self._lock = threading.RLock()

    @property
    def clock(self) -> VirtualClock:
        return self._clock

    def call_at(self, deadline: float, fn: Callable[[], None]) -> Handle:
        with self._lock:
            return self._heap.push(deadline, fn)

    def advance(self, seconds: float) -> None:
        end = self._clock.monotonic() + seconds
        while True:
            with self._lock:
                deadline = self._heap.next_deadline()
                if deadline is None or deadline > end:
                    break
                self._clock.advance(max(0.0, deadline - self._clock.monotonic()))
                entry = self._heap.pop_due(self._clock.monotonic())
            if entry is not None:
                entry.fn()
        self._clock.advance(max(0.0, end - self._clock.monotonic()))

    def pending(self) -> int:
        with self._lock:
            return len(self._heap)

    def close(self) -> None:
        with self._lock:
            self._heap = _Heap()


class Periodic:
    """A fixed-rate repeating call; see :func:`every`."""

    def __init__(self, scheduler: Scheduler, period: float, fn: Callable[[], None], start: float) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self._scheduler = scheduler
        self._period = period
        self._fn = fn
        self._origin = start
        self._k = 0
        self._handle: Handle | None = None
        self._stopped = False
        self.skipped = 0
        """Polls missed because the previous one ran late (a busy board), counted."""
        self._arm(start)

    def _arm(self, deadline: float) -> None:
        self._handle = self._scheduler.call_at(deadline, self._tick)

    def _tick(self) -> None:
        if self._stopped:
            return
        try:
            self._fn()
        finally:
            now = self._scheduler.clock.monotonic()
            k = max(self._k + 1, math.floor((now - self._origin) / self._period) + 1)
            self.skipped += k - self._k - 1
            self._k = k
            if not self._stopped:
                self._arm(self._origin + k * self._period)

    def cancel(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()


def every(scheduler: Scheduler, period: float, fn: Callable[[], None], *, first_delay: float = 0.0) -> Periodic:
    """Call ``fn`` at ``t0 + k * period`` for k = 0, 1, 2 ... until cancelled; never drifts."""
    return Periodic(scheduler, period, fn, scheduler.clock.monotonic() + first_delay)
