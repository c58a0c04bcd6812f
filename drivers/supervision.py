"""Failure isolation: a driver that fails is stopped, its outputs made safe, and restarted with backoff.

One bad sensor must not take the house down. :class:`Supervisor` owns the
life cycle of every driver:

* ``start_all()`` starts each driver with its own context (``ctx_factory``); a
  driver whose ``start`` raises is isolated like any other failure;
* a running driver reports a failure through ``ctx.fail(reason)`` (its own
  threads never raise into gpiozero or pyserial), and the gateway may call
  :meth:`Supervisor.report_failure` (e.g. when ``apply`` raised in the dispatcher);
* on a failure the driver's actuators go to their safe state, the driver is
  stopped, its entities become unavailable, a ``Kind.SYSTEM`` health event says
  what happened, and a restart is tried after ``backoff_min_s``, doubling up to
  ``backoff_max_s``; a driver that ran ``stable_s`` without failing starts
  over at the shortest backoff;
* ``stop_all()`` stops everything (actuators end safe) and joins every timer thread;
* ``health()`` lists each driver's status, failures, restarts and last error.

Health events: ``Kind.SYSTEM``, ``entity`` = the device id, ``value`` one of
``"running"``, ``"failed"``, ``"stopped"``, ``detail`` the reason.

A driver that started but whose hardware is not there yet (a serial port not
plugged in: the driver keeps trying on its own, :class:`WaitsForPort`) is
reported by :meth:`Supervisor.health` as ``"waiting for port"``, not
``"running"``: it is not a failure (nothing is restarted), but it is not
working either, and ``gateway status`` must not count it as running.

A driver may add notes to its health (:class:`HasHealthNotes`), e.g. a serial
device sending far beyond its declared rate: ``flooding: 27000 lines/s,
expected ≤ 20``. A note does not change the status: the driver runs.

Wiring (``gateway/app.py``)::

    supervisor = Supervisor(drivers, lambda d: DriverContext(post=bus.post, events=events, ...),
                            clock, post=bus.post, events=events)
    supervisor.start_all()
    ...
    supervisor.stop_all()

Restarts run on the supervisor's scheduler thread, never on the failing
driver's own thread (a reader thread cannot join itself).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

from core.clock import Clock
from core.events import Event, EventFactory, Kind
from drivers.base import Actuator, Driver, DriverContext
from drivers.timing import Handle, Scheduler, ThreadScheduler

log = logging.getLogger(__name__)

Status = Literal["new", "running", "waiting for port", "failed", "restarting", "stopped"]


@runtime_checkable
class WaitsForPort(Protocol):
    """A driver whose port may be absent while it runs (``drivers.serial_line.SerialSensor``)."""

    @property
    def waiting_for_port(self) -> bool:
        """Started, but its port is not open now; it reopens it by itself."""
        ...


@runtime_checkable
class DeclaresRate(Protocol):
    """A driver that says how many lines (or frames) a second its device sends at most (``drivers.serial_line
    .SerialSensor``): the bus gives each of its entities room for that rate (``gateway.bus.rate_quotas``)."""

    @property
    def expected_rate(self) -> float:
        """Lines (or frames) a second beyond which this device floods."""
        ...


@runtime_checkable
class HasHealthNotes(Protocol):
    """A driver with something to say in health besides its status (``drivers.serial_line.SerialSensor``)."""

    def health_notes(self) -> list[str]: ...


@dataclass(slots=True)
class DriverHealth:
    id: str
    status: Status = "new"
    failures: int = 0
    """Failures since the driver last ran ``stable_s`` without one (sets the backoff)."""
    total_failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    started_at: float | None = None
    next_restart_at: float | None = None
    stats: dict[str, int] = field(default_factory=dict)
    """The driver's own counters (:meth:`drivers.base.Driver.stats`) at the time of :meth:`Supervisor.health`."""
    notes: list[str] = field(default_factory=list)
    """What the driver says besides its status (:class:`HasHealthNotes`), e.g. ``flooding: N lines/s, expected ≤ M``."""


@dataclass(slots=True)
class _Slot:
    driver: Driver
    health: DriverHealth
    ctx: DriverContext | None = None
    restart: Handle | None = None


class Supervisor:
    def __init__(
        self,
        drivers: Sequence[Driver],
        ctx_factory: Callable[[Driver], DriverContext],
        clock: Clock,
        *,
        post: Callable[[Event], None] | None = None,
        events: EventFactory | None = None,
        scheduler: Scheduler | None = None,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 300.0,
        stable_s: float = 600.0,
    ) -> None:
        self._slots = {driver.id: _Slot(driver, DriverHealth(driver.id)) for driver in drivers}
        self._ctx_factory = ctx_factory
        self._clock = clock
        self._post = post
        self._events = events
        self._own_scheduler: ThreadScheduler | None = None
        if scheduler is None:
            scheduler = self._own_scheduler = ThreadScheduler(clock, name="driver-supervisor")
        self._scheduler: Scheduler = scheduler
        self._backoff_min = backoff_min_s
        self._backoff_max = backoff_max_s
        self._stable = stable_s
        self._lock = threading.RLock()
        self._stopping = False

    # -- the API --------------------------------------------------------------------------------

    def start_all(self) -> None:
        self._stopping = False
        for slot in self._slots.values():
            self._start(slot)

    def stop_all(self) -> None:
        """Stop every driver (actuators end safe), cancel pending restarts, join timer threads."""
        with self._lock:
            self._stopping = True
            for slot in self._slots.values():
                if slot.restart is not None:
                    slot.restart.cancel()
                    slot.restart = None
                self._stop(slot)
                slot.health.status = "stopped"
                slot.health.next_restart_at = None
        if self._own_scheduler is not None:
            self._own_scheduler.close()

    def health(self) -> list[DriverHealth]:
        with self._lock:
            return [replace(slot.health, status=self._status(slot), stats=self._stats(slot.driver),
                            notes=self._notes(slot.driver))
                    for slot in self._slots.values()]

    def report_failure(self, driver_id: str, reason: str) -> None:
        """Safe from any thread: the driver is made safe and restarted on the supervisor's thread."""
        slot = self._slots.get(driver_id)
        if slot is None:
            return
        if isinstance(slot.driver, Actuator):
            self._safe(slot.driver)  # at once, not after the hop to the supervisor's thread
        self._scheduler.call_at(self._clock.monotonic(), lambda: self._failed(slot, reason))

    # -- inside ---------------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        with self._lock:
            if self._stopping:
                return
            ctx = slot.ctx = self._ctx_factory(slot.driver)
            driver_id = slot.driver.id

            def fail(reason: str) -> None:
                self.report_failure(driver_id, reason)

            ctx.fail = fail
            try:
                slot.driver.start(ctx)
            except Exception as exc:
                log.exception("device %s failed to start", slot.driver.id)
                self._failed(slot, f"start failed: {exc}")
                return
            health = slot.health
            health.status = "running"
            health.started_at = self._clock.monotonic()
            health.next_restart_at = None
            self._event(slot, "running", "started" if health.restarts == 0 else f"restart {health.restarts}")

    def _failed(self, slot: _Slot, reason: str) -> None:
        with self._lock:
            health = slot.health
            if self._stopping or health.status == "failed":
                return
            now = self._clock.monotonic()
            if health.started_at is not None and now - health.started_at >= self._stable:
                health.failures = 0
            health.failures += 1
            health.total_failures += 1
            health.last_error = reason
            health.status = "failed"
            health.started_at = None
            log.error("device %s failed (%d in a row): %s", slot.driver.id, health.failures, reason)
            self._stop(slot)
            delay = min(self._backoff_max, self._backoff_min * 2 ** (health.failures - 1))
            health.next_restart_at = now + delay
            self._event(slot, "failed", f"{reason}; restarting in {delay:g} s")
            for spec in slot.driver.entities():
                self._emit(self._make_availability(spec.id, reason))
            slot.restart = self._scheduler.call_at(now + delay, lambda: self._restart(slot))

    def _restart(self, slot: _Slot) -> None:
        with self._lock:
            slot.restart = None
            if self._stopping:
                return
            health = slot.health
            health.restarts += 1
            health.status = "restarting"
            self._start(slot)
            if self._running(health) and self._status(slot) == "running":
                for spec in slot.driver.entities():
                    if self._events is not None:
                        self._emit(self._events.availability(spec.id, True, "driver restarted"))

    @staticmethod
    def _stats(driver: Driver) -> dict[str, int]:
        try:
            return driver.stats()
        except Exception:
            log.exception("device %s could not report its counters", driver.id)
            return {}

    @staticmethod
    def _notes(driver: Driver) -> list[str]:
        if not isinstance(driver, HasHealthNotes):
            return []
        try:
            return list(driver.health_notes())
        except Exception:
            log.exception("device %s could not report its health notes", driver.id)
            return []

    @staticmethod
    def _status(slot: _Slot) -> Status:
        """The life-cycle status, except that a running driver waiting for its port says so."""
        status = slot.health.status
        if status == "running" and isinstance(slot.driver, WaitsForPort) and slot.driver.waiting_for_port:
            return "waiting for port"
        return status

    @staticmethod
    def _running(health: DriverHealth) -> bool:
        return health.status == "running"

    def _stop(self, slot: _Slot) -> None:
        driver = slot.driver
        if isinstance(driver, Actuator):
            self._safe(driver)
        try:
            driver.stop()
        except Exception:
            log.exception("device %s failed to stop cleanly", driver.id)
        if slot.ctx is not None:
            slot.ctx.close()
            slot.ctx = None

    @staticmethod
    def _safe(actuator: Actuator) -> None:
        try:
            actuator.to_safe_state()
        except Exception:
            log.exception("device %s could not reach its safe state", actuator.id)

    def _make_availability(self, entity: str, reason: str) -> Event | None:
        return None if self._events is None else self._events.availability(entity, False, f"driver failed: {reason}")

    def _event(self, slot: _Slot, status: str, detail: str) -> None:
        if self._events is not None:
            self._emit(self._events.make(Kind.SYSTEM, slot.driver.id, status, detail=detail))

    def _emit(self, event: Event | None) -> None:
        if event is not None and self._post is not None:
            try:
                self._post(event)
            except Exception:
                log.exception("could not post a health event")
