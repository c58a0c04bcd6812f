"""The single dispatcher: the only code that mutates state, runs rules and drives actuators.

Producers (drivers, paho, the scheduler) post onto the :class:`~gateway.bus.Bus`;
the dispatcher takes one event at a time and, for each:

1. folds it into the :class:`~core.state.StateStore`,
2. hands it to the forwarder (MQTT outbox),
3. lets the rules react (:class:`Reactor`),
4. hands a command for an output to the :class:`~gateway.authority.Authority`,
   which arbitrates the writers' claims and drives the output (emitting the
   confirmed state, or why not).

Events that step 3 or 4 produce are processed at once, depth first, before
the next bus event, so a cause is always followed by its effects. A chain
deeper than :data:`MAX_CHAIN` (rules switching each other forever) is cut and
reported.

Timers (``for`` durations, delays, pulses) live in a heap on the monotonic
clock and run on this same thread, so rules never need locks. With a
:class:`~core.clock.VirtualClock`, :meth:`Dispatcher.advance` runs the
house in virtual time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from core.clock import Clock, VirtualClock
from core.events import K_COMMAND, K_REJECTED, K_STATE, Event, EventFactory, Kind, Value
from core.state import StateStore
from drivers.base import Actuator
from drivers.envelope import Envelope
from gateway.authority import Authority
from gateway.bus import Bus

log = logging.getLogger(__name__)

BATCH = 256
"""Events taken from the bus at once (one lock round); timers run between batches, so a timer is late
by at most one batch's processing (about 2 ms at 120 k events/s)."""

MAX_CHAIN = 32
"""Derived events one bus event may cause in a chain before the chain is cut."""


BatchScope = Callable[[], AbstractContextManager[Callable[[], None]]]
"""What :attr:`Dispatcher.batch_scope` is: entered around a batch, it gives the function that writes what the batch
queued so far."""


def _nothing() -> None:
    """:attr:`Dispatcher._write_batch` outside a batch."""


class Reactor(Protocol):
    """What the dispatcher needs of a rules engine."""

    def handle(self, event: Event) -> None: ...


class NoRules:
    def handle(self, event: Event) -> None:
        return None


@dataclass(order=True, slots=True)
class Timer:
    deadline: float
    seq: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass(slots=True)
class DispatchCounters:
    processed: int = 0
    commands: int = 0
    rejected: int = 0
    chains_cut: int = 0
    timers_fired: int = 0
    errors: int = 0


class Dispatcher:
    """See the module docstring. All public methods except :meth:`run`'s caller-side
    :meth:`stop` must be called on the dispatcher's own thread."""

    def __init__(
        self,
        bus: Bus,
        events: EventFactory,
        *,
        actuators: Mapping[str, Actuator] | None = None,
        forward: Callable[[Event], None] | None = None,
        state: StateStore | None = None,
        envelope: Envelope | None = None,
    ) -> None:
        self.bus = bus
        self.events = events
        self.clock: Clock = events.clock
        self.state = state or StateStore()
        self.actuators: dict[str, Actuator] = dict(actuators or {})
        self.outputs = Authority(self, self.actuators, envelope)
        """The arbiter of every output: claims, ownership, the safety envelope."""
        self.forward = forward or (lambda event: None)
        self.reactor: Reactor = NoRules()
        self.counters = DispatchCounters()
        self.chains_cut_by_rule: Counter[str] = Counter()
        """Chains cut at :data:`MAX_CHAIN`, by the rule (or controller) of the event that was cut."""
        self.corrections: dict[str, Callable[[str, Value], Value]] = {}
        """Entity -> its driver's ``correct``: a COMMAND for a correctable sensor (a pulse meter's total
        set to the meter's reading) is applied there and confirmed as a STATE, never claimed."""
        self.on_idle: list[Callable[[], None]] = []
        """Called at least every ``tick`` seconds from the loop (the systemd watchdog hangs here)."""
        self.settled: list[Callable[[Event], None]] = []
        """Called with each bus event once it and everything it caused were processed (the MQTT
        inlet answers a hub command that changed nothing here: ``done``, never silence)."""
        self.commands_settled: list[Callable[[Event], None]] = []
        """As :attr:`settled`, for ``COMMAND`` bus events only (after :attr:`settled`'s hooks): a hook that has
        nothing to do for any other event is not called for each reading (issue 14: the MQTT bridge's)."""
        self.batch_scope: BatchScope | None = None
        """Entered around each bus batch of more than one event that :meth:`run` processes: the MQTT uplink's cork,
        so the batch's messages reach the socket in one ``send`` when it ends rather than one each (issue 14). It gives
        a function that writes what the batch queued so far: :meth:`before_output` calls it."""
        self._write_batch: Callable[[], None] = _nothing
        self._timers: list[Timer] = []
        self._timer_seq = itertools.count()
        self._pending: deque[tuple[Event, int]] = deque()
        self._stopping = False

    # -- what rules and controllers use -------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue an event caused by the one being processed (processed before the next bus event)."""
        depth = self._depth + 1
        if depth > MAX_CHAIN:
            self.counters.chains_cut += 1
            self.chains_cut_by_rule[event.rule or "-"] += 1
            log.error(
                "rule chain deeper than %d cut at %s %s=%r (rule %s): rules trigger each other in a loop",
                MAX_CHAIN, event.kind, event.entity, event.value, event.rule,
            )
            return
        self._pending.append((event, depth))

    def command(self, entity: str, value: Value, *, rule: str | None = None, cause: str | None = None) -> None:
        """Ask for ``entity`` to become ``value``; it is applied (or refused) as its own event."""
        self.emit(self.events.make(Kind.COMMAND, entity, value, rule=rule, cause=cause))

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.clock.monotonic() + max(0.0, delay), callback)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, next(self._timer_seq), callback)
        heapq.heappush(self._timers, timer)
        return timer

    # -- processing ------------------------------------------------------------------------

    _depth = 0

    def process(self, event: Event) -> None:
        """Process one event and everything it causes."""
        self._pending.append((event, 0))
        while self._pending:
            current, self._depth = self._pending.popleft()
            try:
                self._process_one(current)
            except Exception:
                self.counters.errors += 1
                log.exception("processing %s %s failed", current.kind, current.entity)
        self._depth = 0
        if self.settled:
            self._settle(self.settled, event)
        if event.kind is K_COMMAND and self.commands_settled:
            self._settle(self.commands_settled, event)

    def _settle(self, hooks: list[Callable[[Event], None]], event: Event) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                self.counters.errors += 1
                log.exception("settling %s %s failed", event.kind, event.entity)

    def _process_one(self, event: Event) -> None:
        self.counters.processed += 1
        self.state.apply(event)
        self.forward(event)
        kind = event.kind
        if kind is K_STATE and event.entity in self.outputs:
            self.outputs.observe(event)
        self.reactor.handle(event)
        if kind is K_COMMAND:
            self.counters.commands += 1
            if event.entity in self.outputs:
                self.outputs.command(event)
            elif event.entity in self.corrections:
                self._correct(event)
        elif kind is K_REJECTED and event.entity in self.outputs:
            self.counters.rejected += 1

    def _correct(self, event: Event) -> None:
        try:
            value = self.corrections[event.entity](event.entity, event.value)
        except Exception as exc:
            log.warning("correction of %s to %r refused: %s", event.entity, event.value, exc)
            self.emit(self.events.make(Kind.REJECTED, event.entity, event.value, cause=event.id, detail=str(exc)))
            return
        self.emit(self.events.make(Kind.STATE, event.entity, value, cause=event.id, detail="corrected"))

    def run_due_timers(self) -> None:
        now = self.clock.monotonic()
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.counters.timers_fired += 1
            self._run_callback(timer.callback)

    def _run_callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
            while self._pending:
                event, self._depth = self._pending.popleft()
                self._process_one(event)
        except Exception:
            self.counters.errors += 1
            log.exception("timer callback failed")
        finally:
            self._depth = 0

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].deadline if self._timers else None

    def drain(self) -> int:
        """Process everything already on the bus, without waiting; returns the count."""
        count = 0
        while (event := self.bus.get_nowait()) is not None:
            self.process(event)
            count += 1
        return count

    # -- loops -------------------------------------------------------------------------------

    def run(self, tick: float = 1.0) -> None:
        """Process events and timers in real time until :meth:`stop`."""
        self._stopping = False
        while not self._stopping:
            deadline = self.next_deadline()
            wait = tick if deadline is None else min(tick, max(0.0, deadline - self.clock.monotonic()))
            events = self.bus.get_batch(wait, BATCH)
            if self.batch_scope is not None and len(events) > 1:
                self._process_batch(self.batch_scope, events)
            else:
                for event in events:
                    self.process(event)
            self.run_due_timers()
            for hook in self.on_idle:
                hook()

    def _process_batch(self, scope: BatchScope, events: list[Event]) -> None:
        """Process ``events`` inside ``scope``. Every event is processed whatever the scope does: one that fails to
        open or close is logged and counted, never the end of the loop."""
        opened: AbstractContextManager[Callable[[], None]] | None = None
        try:
            opened = scope()
            self._write_batch = opened.__enter__()
        except Exception:
            opened = None
            self.counters.errors += 1
            log.exception("opening a batch of %d events failed; processing them without it", len(events))
        try:
            for event in events:
                self.process(event)
        finally:
            self._write_batch = _nothing
            if opened is not None:
                try:
                    opened.__exit__(None, None, None)
                except Exception:
                    self.counters.errors += 1
                    log.exception("closing a batch of %d events failed", len(events))

    def before_output(self) -> None:
        """An output is about to be written (:class:`~gateway.authority.Authority`): what this batch handed the uplink
        goes out first, so a slow device's write (a Modbus slave that does not answer: its timeout) never holds the
        messages of the events before it."""
        self._write_batch()

    def drain_some(self, limit: int = 256) -> None:
        for _ in range(limit):
            event = self.bus.get_nowait()
            if event is None:
                return
            self.process(event)

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread, but not from a signal handler:
        :meth:`Bus.wake` takes the bus lock, which is not re-entrant (``gateway.service`` wakes
        the loop through ``signal.set_wakeup_fd`` instead)."""
        self._stopping = True
        self.bus.wake()

    def advance(self, seconds: float) -> None:
        """Virtual time: move the clock forward, firing timers at their own instants."""
        clock = self.clock
        if not isinstance(clock, VirtualClock):
            raise TypeError("advance() needs a VirtualClock")
        self.drain()
        end = clock.monotonic() + seconds
        while (deadline := self.next_deadline()) is not None and deadline <= end:
            clock.advance(max(0.0, deadline - clock.monotonic()))
            self.run_due_timers()
            self.drain()
        clock.advance(end - clock.monotonic())
        self.drain()
