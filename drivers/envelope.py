"""The safety envelope: limits on actuators that no rule and no hub command can break.

It sits below the rules, in the dispatcher, between a command and the driver.
:class:`Envelope` is a pure object: ``decide(entity, value, now)`` answers
allow, refuse (with why) or defer (until when, and why); ``record`` tells it
what the hardware confirmed. :class:`EnvelopeGate` is the dispatcher's side:
it consults the envelope before ``apply``, turns a refusal or a deferral into
a ``Kind.REJECTED`` event whose ``detail`` says why, re-issues a deferred
command when its time comes (unless a newer command for the entity replaced
it), and forces an output off at its maximum on time.

Limits, per actuator (``envelope = { ... }`` in its device config):

* ``min_on_s`` / ``min_off_s`` - a boiler or compressor, once switched, stays so
  at least this long; an early command is *deferred* to the first allowed instant.
* ``max_on_s`` - a heater or siren is switched off (to its safe value) after this
  long on, by a command with ``rule = "envelope"``.
* ``max_switches_per_hour`` - more changes in a sliding hour are *refused*; a
  move to the safe value is never refused for this reason.
* ``interlock`` + ``interlock_wait_s`` - outputs sharing a group name are never
  on together: turning one on while another is on is *refused*; within
  ``interlock_wait_s`` after the other went off it is *deferred*.

"On" means a truthy value (a light above 0 %). A command that asks for the
current value is always allowed and counts as no switch. The envelope starts
with every output in its safe state and no history, so limits count from start.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.clock import Clock
from gateway.events import Event, EventFactory, Kind, Value

HOUR = 3600.0


class EnvelopeConfig(BaseModel):
    """``envelope = { min_on_s = 300, min_off_s = 300, max_on_s = 7200, max_switches_per_hour = 6 }``"""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_on_s: float = Field(default=0.0, ge=0, le=86_400)
    min_off_s: float = Field(default=0.0, ge=0, le=86_400)
    max_on_s: float | None = Field(default=None, gt=0, le=7 * 86_400)
    max_switches_per_hour: int | None = Field(default=None, ge=1, le=3600)
    interlock: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    """Group name: outputs in the same group are never on at the same time."""
    interlock_wait_s: float = Field(default=0.0, ge=0, le=3600)
    """After another output of the group went off, wait this long before this one may go on."""

    @model_validator(mode="after")
    def _consistent(self) -> EnvelopeConfig:
        if self.max_on_s is not None and self.max_on_s < self.min_on_s:
            raise ValueError(f"max_on_s ({self.max_on_s:g}) is shorter than min_on_s ({self.min_on_s:g})")
        if self.interlock_wait_s and self.interlock is None:
            raise ValueError("interlock_wait_s needs an interlock group")
        return self


@dataclass(slots=True, frozen=True)
class Decision:
    verdict: Literal["allow", "refuse", "defer"]
    reason: str = ""
    until: float | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"


ALLOW = Decision("allow")


@dataclass(slots=True)
class _Output:
    limits: EnvelopeConfig
    safe: Value
    on: bool = False
    since: float = -math.inf
    switches: deque[float] = field(default_factory=deque)


def is_on(value: Value) -> bool:
    return bool(value) and value != "off"


class Envelope:
    """Pure: no clock, no threads. Entities without limits are always allowed."""

    def __init__(self, limits: Mapping[str, EnvelopeConfig], safe_values: Mapping[str, Value] | None = None) -> None:
        safe = safe_values or {}
        self._outputs = {entity: _Output(cfg, safe.get(entity), on=is_on(safe.get(entity)))
                         for entity, cfg in limits.items()}
        self.refused = 0
        self.deferred = 0

    @classmethod
    def from_drivers(cls, drivers: Iterable[object]) -> Envelope:
        """The limits every actuator declares (``Actuator.envelope()``), with their safe values."""
        limits: dict[str, EnvelopeConfig] = {}
        safe: dict[str, Value] = {}
        for driver in drivers:
            declared = getattr(driver, "envelope", None)
            if declared is None:
                continue
            limits.update(declared())
            for spec in driver.entities():  # type: ignore[attr-defined]
                safe[spec.id] = spec.safe_value
        return cls(limits, safe)

    def __contains__(self, entity: str) -> bool:
        return entity in self._outputs

    def decide(self, entity: str, value: Value, now: float) -> Decision:
        out = self._outputs.get(entity)
        if out is None:
            return ALLOW
        want_on = is_on(value)
        if want_on == out.on:
            return ALLOW
        decision = self._timing(out, want_on, now) or self._switch_budget(out, value, now)
        if decision is None and want_on:
            decision = self._interlock(entity, out, now)
        if decision is None:
            return ALLOW
        if decision.verdict == "defer":
            self.deferred += 1
        else:
            self.refused += 1
        return decision

    def record(self, entity: str, value: Value, now: float) -> None:
        """The hardware confirmed ``value`` at ``now``."""
        out = self._outputs.get(entity)
        if out is None or is_on(value) == out.on:
            return
        out.on = is_on(value)
        out.since = now
        out.switches.append(now)

    def max_on_deadline(self, entity: str) -> float | None:
        out = self._outputs.get(entity)
        if out is None or not out.on or out.limits.max_on_s is None:
            return None
        return out.since + out.limits.max_on_s

    def safe_value(self, entity: str) -> Value:
        out = self._outputs.get(entity)
        return None if out is None else out.safe

    # -- the limits ------------------------------------------------------------------------------

    @staticmethod
    def _timing(out: _Output, want_on: bool, now: float) -> Decision | None:
        minimum = out.limits.min_on_s if out.on else out.limits.min_off_s
        until = out.since + minimum
        if now >= until:
            return None
        state = "on" if out.on else "off"
        return Decision("defer", f"minimum {state} time {minimum:g} s: {state} for {now - out.since:.0f} s", until)

    @staticmethod
    def _switch_budget(out: _Output, value: Value, now: float) -> Decision | None:
        limit = out.limits.max_switches_per_hour
        while out.switches and out.switches[0] <= now - HOUR:
            out.switches.popleft()
        if limit is None or len(out.switches) < limit or is_on(value) == is_on(out.safe):
            return None
        return Decision("refuse", f"switched {len(out.switches)} times in the last hour (limit {limit})")

    def _interlock(self, entity: str, out: _Output, now: float) -> Decision | None:
        group = out.limits.interlock
        if group is None:
            return None
        wait_until = -math.inf
        for other_id, other in self._outputs.items():
            if other_id == entity or other.limits.interlock != group:
                continue
            if other.on:
                return Decision("refuse", f"interlock {group!r}: {other_id} is on")
            wait_until = max(wait_until, other.since + out.limits.interlock_wait_s)
        if now < wait_until:
            return Decision("defer", f"interlock {group!r}: waiting {out.limits.interlock_wait_s:g} s after the "
                                     "other output went off", wait_until)
        return None


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


class Host(Protocol):
    """What :class:`EnvelopeGate` needs of the dispatcher (``gateway.dispatcher.Dispatcher`` fits)."""

    events: EventFactory
    clock: Clock

    def emit(self, event: Event) -> None: ...

    def call_at(self, deadline: float, callback: Callable[[], None]) -> _Cancellable: ...


class EnvelopeGate:
    """The dispatcher's side of the envelope. ``admit`` before apply; ``confirmed`` after.

    Wiring (``gateway/app.py``)::

        dispatcher.gate = EnvelopeGate(Envelope.from_drivers(drivers), dispatcher)
    """

    def __init__(self, envelope: Envelope, host: Host) -> None:
        self.envelope = envelope
        self.host = host
        self._deferred: dict[str, _Cancellable] = {}
        self._max_on: dict[str, _Cancellable] = {}

    def admit(self, command: Event) -> bool:
        """True: apply ``command`` now. False: a REJECTED event was emitted (and a retry armed if deferred)."""
        entity = command.entity
        pending = self._deferred.pop(entity, None)
        if pending is not None:
            pending.cancel()  # a newer command replaces a deferred one
        decision = self.envelope.decide(entity, command.value, self.host.clock.monotonic())
        if decision.allowed:
            return True
        detail = decision.reason
        if decision.until is not None:
            wait = decision.until - self.host.clock.monotonic()
            detail = f"deferred {wait:.0f} s: {detail}"
            self._deferred[entity] = self.host.call_at(decision.until, lambda: self._retry(command))
        else:
            detail = f"refused: {detail}"
        self.host.emit(self.host.events.make(
            Kind.REJECTED, entity, command.value, rule=command.rule, cause=command.id, detail=detail,
        ))
        return False

    def confirmed(self, entity: str, value: Value) -> None:
        """The driver confirmed ``value``: record it, and arm (or disarm) the maximum on time."""
        self.envelope.record(entity, value, self.host.clock.monotonic())
        timer = self._max_on.pop(entity, None)
        if timer is not None:
            timer.cancel()
        deadline = self.envelope.max_on_deadline(entity)
        if deadline is not None:
            self._max_on[entity] = self.host.call_at(deadline, lambda: self._force_off(entity))

    def _retry(self, command: Event) -> None:
        self._deferred.pop(command.entity, None)
        self.host.emit(self.host.events.make(
            Kind.COMMAND, command.entity, command.value, rule=command.rule, cause=command.id,
            detail="deferred command, re-issued",
        ))

    def _force_off(self, entity: str) -> None:
        self._max_on.pop(entity, None)
        self.host.emit(self.host.events.make(
            Kind.COMMAND, entity, self.envelope.safe_value(entity), rule="envelope",
            detail="maximum on time reached",
        ))
