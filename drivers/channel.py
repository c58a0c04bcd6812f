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

import threading
from collections.abc import Iterable

from core.events import Kind
from drivers.base import DriverContext
from drivers.conditioning import Health, Out, Pipeline, Raw, Sample, StepConfig, build_pipeline
from drivers.timing import Handle


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
        with self._lock:
            if self._closed:
                return
            now = self.ctx.clock.monotonic()
            self._last_raw = now
            self._post(self.pipeline.feed(Sample(value, now)))
            self._rearm()

    def set_available(self, available: bool, reason: str | None = None) -> None:
        """Post an availability change (the port vanished, it came back); repeated calls post once."""
        with self._lock:
            if self._closed or self.available is available:
                return
            self.available = available
            self.ctx.post(self.ctx.events.availability(self.entity, available, reason))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for handle in (self._timer, self._stale_timer):
                if handle is not None:
                    handle.cancel()
            self._timer = self._stale_timer = None

    # -- inside ------------------------------------------------------------------------------

    def _post(self, outs: list[Out]) -> None:
        for out in outs:
            if isinstance(out, Health):
                self.set_available(out.available, out.reason)
                continue
            if self.available is False:
                self.set_available(True)
            self.available = True
            self.ctx.post(self.ctx.events.make(self.kind, self.entity, out.value, unit=self.unit))

    def _rearm(self) -> None:
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
            self._post(self.pipeline.poll(self.ctx.clock.monotonic()))
            self._rearm()

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
