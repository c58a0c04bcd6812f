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
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, Final

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


# Each kind as a module constant, for the dispatcher's path (issue 14): Python 3.11's ``EnumType`` defines
# ``__getattr__``, which sends every ``Kind.X`` read through CPython's slow attribute hook (~70 ns; a global ~3 ns),
# and a reading's path read a dozen of them.
K_READING: Final = Kind.READING
K_STATE: Final = Kind.STATE
K_COMMAND: Final = Kind.COMMAND
K_REJECTED: Final = Kind.REJECTED
K_AVAILABILITY: Final = Kind.AVAILABILITY
K_ALARM: Final = Kind.ALARM
K_TIMER: Final = Kind.TIMER
K_SYSTEM: Final = Kind.SYSTEM

PUBLISH_ENTITY = "publish"
"""A ``Kind.SYSTEM`` event for this entity asks the MQTT bridge to publish a message: its value is a
:class:`PublishRequest` as JSON text, ``{"topic": "<below the base topic>", "payload": "<text>", "retain": bool}``
(rules' ``publish``), read back by :func:`publish_request`."""

CRITICAL_KINDS: frozenset[Kind] = frozenset(
    {Kind.COMMAND, Kind.REJECTED, Kind.ALARM, Kind.AVAILABILITY, Kind.STATE, Kind.SYSTEM}
)
"""Kinds the bus never drops or coalesces: losing one would hide a change of the house."""


@dataclass(slots=True, frozen=True, init=False)
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
    hold_s: float | None = None
    """A ``COMMAND``'s claim lets go by itself after this many seconds (a hub ``siren.turn_on`` with a
    ``duration``); None: it holds until released. Not part of the event's MQTT payload."""

    def __init__(  # noqa: PLR0917 - positional, as the dataclass's own (EventFactory builds by position)
        self, id: str, kind: Kind, entity: str, value: Value, ts: float, mono: float,
        unit: str | None = None, rule: str | None = None, cause: str | None = None, detail: str | None = None,
        hold_s: float | None = None,
    ) -> None:
        """The dataclass's constructor (same parameters, order and defaults: tests/test_event_factory.py pins
        them), written by hand to set each slot through its descriptor: the generated one called
        ``object.__setattr__`` per field (a frozen class forbids ``self.x = ...``), 17,700 instructions an event
        against 10,300 (callgrind). Every event of the gateway is made here, one per serial line (issue 14)."""
        _set_id(self, id)
        _set_kind(self, kind)
        _set_entity(self, entity)
        _set_value(self, value)
        _set_ts(self, ts)
        _set_mono(self, mono)
        _set_unit(self, unit)
        _set_rule(self, rule)
        _set_cause(self, cause)
        _set_detail(self, detail)
        _set_hold_s(self, hold_s)

    @property
    def critical(self) -> bool:
        return self.kind in CRITICAL_KINDS


def _slot_setter(name: str) -> Callable[[Event, Any], None]:
    """The ``__set__`` of ``Event``'s slot ``name``: it stores the value in the slot itself, which is how a
    frozen dataclass's constructor gets past its ``__setattr__`` (that raises for everyone else)."""
    setter: Callable[[Event, Any], None] = getattr(Event, name).__set__
    return setter


(_set_id, _set_kind, _set_entity, _set_value, _set_ts, _set_mono, _set_unit, _set_rule, _set_cause, _set_detail,
 _set_hold_s) = (_slot_setter(f.name) for f in fields(Event))


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
        hold_s: float | None = None,
    ) -> Event:
        clock = self._clock
        # Positional, in the fields' order: keywords cost a fifth of the call (issue 14: a rule's publish makes one
        # per firing on the dispatcher thread).
        return Event(f"{self._boot}-{next(self._counter)}", kind, entity, value, clock.time(), clock.monotonic(),
                     unit, rule, cause, detail, hold_s)

    def make_at(  # noqa: PLR0917 - by position from the serial reader, as Event itself
        self, kind: Kind, entity: str, value: Value, ts: float, mono: float, unit: str | None = None,
    ) -> Event:
        """An event stamped with clock readings the caller took: the lines of one serial read arrived together,
        and reading both clocks once per read rather than once per line was a tenth of the reader thread's
        Python work at 10,000 lines/s (issue 14). ``ts``/``mono`` must come from this factory's
        :attr:`clock`, read no earlier than the value was seen. Positional or by keyword (by position from the
        serial reader: keywords cost a fifth of a call)."""
        return Event(f"{self._boot}-{next(self._counter)}", kind, entity, value, ts, mono, unit)

    def reading(self, entity: str, value: Value, unit: str | None = None) -> Event:
        return self.make(Kind.READING, entity, value, unit=unit)

    def availability(self, entity: str, available: bool, reason: str | None = None) -> Event:
        return self.make(Kind.AVAILABILITY, entity, available, detail=reason)


@dataclass(slots=True, frozen=True, init=False)
class PublishRequest:
    """A message a rule asks the MQTT side to publish: ``payload`` on ``<base>/<topic>``, retained or not.

    An event's value is a JSON scalar, so the request rides the bus as the JSON text
    :meth:`to_json` writes, in a ``Kind.SYSTEM`` event for :data:`PUBLISH_ENTITY`. That text is
    read in one place, :func:`publish_request`, and checked there once: the bridge works on this
    object, never on the text (and gets this very object back, unparsed, when the text is the one
    this process just wrote: see :class:`_LastWritten`)."""

    topic: str
    """Below the gateway's base topic, e.g. ``notify/leak`` (the rule file's pattern keeps it one topic)."""
    payload: str = ""
    retain: bool = False
    """Retained: the broker keeps the latest for new subscribers (and the bridge only the latest in waiting)."""

    def __init__(self, topic: str, payload: str = "", retain: bool = False) -> None:
        """Checked when made, wherever it is made: :func:`publish_request` hands the bridge the request
        itself, unparsed, when it is the one :meth:`to_json` just wrote, so the text's checks are here.
        ``ValueError`` saying what is wrong.

        The dataclass's constructor (same parameters, order and defaults) with its ``__post_init__`` checks,
        written by hand to set each slot through its descriptor as :class:`Event` does: the generated one called
        ``object.__setattr__`` per field and then ``__post_init__``; a rule's ``publish`` makes one per alarm on
        the dispatcher thread (issue 14)."""
        if not isinstance(topic, str) or not topic:
            raise ValueError("topic: expected a non-empty string")
        if not isinstance(payload, str):
            raise ValueError("payload: expected a string")
        if not isinstance(retain, bool):
            raise ValueError("retain: expected true or false")
        _set_topic(self, topic)
        _set_payload(self, payload)
        _set_retain(self, retain)

    def to_json(self) -> str:
        """The event's value: ``{"topic": ..., "payload": ..., "retain": ...}``, keys in that order.

        Byte for byte what ``json.dumps`` of that dict writes (the same C string encoder, ASCII-only
        with the same separators) at a tenth of its cost: this runs for every alarm a rule publishes.
        The text is remembered with this request, so :func:`publish_request` need not parse it again."""
        text = (f'{{"topic": {_json_string(self.topic)}, "payload": {_json_string(self.payload)}, '
                f'"retain": {"true" if self.retain else "false"}}}')
        _written.remember(text, self)
        return text

    @classmethod
    def from_json(cls, text: str) -> PublishRequest:
        """The request :meth:`to_json` wrote; ``ValueError`` saying what is wrong for any other text."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(data.get("topic", ""), data.get("payload", ""), data.get("retain", False))  # checked as it is made


_set_topic, _set_payload, _set_retain = (getattr(PublishRequest, f.name).__set__ for f in fields(PublishRequest))


def publish_request(event: Event) -> PublishRequest | None:
    """The message ``event`` asks to publish; None for every event that asks none.

    The one reader of the wire form of :data:`PUBLISH_ENTITY` events: ``ValueError`` (with the
    reason) for such an event whose value is not a :class:`PublishRequest`."""
    if event.kind is not K_SYSTEM or event.entity != PUBLISH_ENTITY:
        return None
    text = event.value
    if not isinstance(text, str):
        raise ValueError("the value is not JSON text")
    request = _written.get(text)
    return request if request is not None else PublishRequest.from_json(text)


class _LastWritten:
    """The last text :meth:`PublishRequest.to_json` wrote, with its request: a rule's ``publish`` event
    is forwarded to the bridge right after the rule ran, on the same thread, and reading back the JSON
    this process wrote a moment ago cost as much as writing it.

    Keyed by the identity of the text object, never by its value: only the very string ``to_json``
    returned (held here, so its id cannot be reused) skips the parse; an equal text from anywhere else
    (the outbox after a restart, a test, a hand-made event) is read and checked as ever. One entry, as one
    tuple swapped whole, so a reader on another thread sees a consistent pair."""

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: tuple[str, PublishRequest] | None = None

    def remember(self, text: str, request: PublishRequest) -> None:
        self._entry = (text, request)

    def get(self, text: str) -> PublishRequest | None:
        entry = self._entry
        return entry[1] if entry is not None and entry[0] is text else None


_written = _LastWritten()
