"""The event record that flows through the whole gateway.

Every reading, confirmed actuator state, command, availability change and
timer becomes one :class:`Event`. Events are immutable and slotted: they are
created on driver threads, handed across the bus, and read by the dispatcher,
the rules and the MQTT forwarder without copies or locks.

Validation happens at the edges (config, rule files, hub commands); an Event
is trusted data and pays no validation cost on the hot path.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from enum import StrEnum

from core.clock import Clock

Value = bool | int | float | str | None
"""What an entity's value may be: JSON scalars only, so every value maps to MQTT."""


class Kind(StrEnum):
    """What an event describes; decides its bus priority and its MQTT topics."""

    READING = "reading"
    """A sensor's measured value."""
    STATE = "state"
    """An actuator's or virtual entity's confirmed state (what the pin is, not what was asked)."""
    COMMAND = "command"
    """A request to change an actuator, from a rule or from the hub."""
    REJECTED = "rejected"
    """A command refused or deferred: ``value`` is what was asked, ``detail`` why not."""
    AVAILABILITY = "availability"
    """An entity became available (True) or unavailable (False)."""
    ALARM = "alarm"
    """An alarm-panel transition."""
    TIMER = "timer"
    """A schedule or timer fired."""
    SYSTEM = "system"
    """Gateway lifecycle: started, reloaded, stopping, health."""


PUBLISH_ENTITY = "publish"
"""A ``Kind.SYSTEM`` event for this entity asks the MQTT bridge to publish a message: its value is
JSON ``{"topic": "<below the base topic>", "payload": "<text>", "retain": bool}`` (rules' ``publish``)."""

CRITICAL_KINDS: frozenset[Kind] = frozenset(
    {Kind.COMMAND, Kind.REJECTED, Kind.ALARM, Kind.AVAILABILITY, Kind.STATE, Kind.SYSTEM}
)
"""Kinds the bus never drops or coalesces: losing one would hide a change of the house."""


@dataclass(slots=True, frozen=True)
class Event:
    """One thing that happened, with its cause.

    ``id`` is unique across restarts; the hub de-duplicates at-least-once
    delivery by it. ``cause`` is the ``id`` of the event that led to this one
    and ``rule`` the rule that acted, so "why did the light go on" has an answer.
    ``ts`` is wall-clock seconds (for people and the hub); ``mono`` is the
    monotonic clock (for every duration). ``detail`` is a human reason
    (why a command was refused, why an entity became unavailable).
    """

    id: str
    kind: Kind
    entity: str
    value: Value
    ts: float
    mono: float
    unit: str | None = None
    rule: str | None = None
    cause: str | None = None
    detail: str | None = None

    @property
    def critical(self) -> bool:
        return self.kind in CRITICAL_KINDS


class EventFactory:
    """Stamps new events with a unique id and both clocks.

    Ids are ``<boot>-<n>``: a random per-process prefix and a counter. That is
    unique across restarts without the cost of a UUID per event, and the counter
    is safe to share between threads (``itertools.count`` is atomic in CPython).
    """

    __slots__ = ("_boot", "_clock", "_counter")

    def __init__(self, clock: Clock, boot: str | None = None) -> None:
        self._clock = clock
        self._boot = boot if boot is not None else os.urandom(4).hex()
        self._counter = itertools.count(1)

    @property
    def clock(self) -> Clock:
        return self._clock

    def make(
        self,
        kind: Kind,
        entity: str,
        value: Value,
        *,
        unit: str | None = None,
        rule: str | None = None,
        cause: str | None = None,
        detail: str | None = None,
    ) -> Event:
        return Event(
            id=f"{self._boot}-{next(self._counter)}",
            kind=kind,
            entity=entity,
            value=value,
            ts=self._clock.time(),
            mono=self._clock.monotonic(),
            unit=unit,
            rule=rule,
            cause=cause,
            detail=detail,
        )

    def reading(self, entity: str, value: Value, unit: str | None = None) -> Event:
        return self.make(Kind.READING, entity, value, unit=unit)

    def availability(self, entity: str, available: bool, reason: str | None = None) -> Event:
        return self.make(Kind.AVAILABILITY, entity, available, detail=reason)
