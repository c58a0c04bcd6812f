"""``EventFactory`` builds its events by position (issue 14: keywords were a fifth of the call): each keyword
still lands in its own field, whatever order ``Event``'s fields are in. ``hold_s`` is how long a hub siren
command's claim lasts: a field swapped silently would be a safety defect mypy cannot see."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from core.clock import VirtualClock
from core.events import Event, EventFactory, Kind


def test_every_keyword_of_make_lands_in_its_own_field() -> None:
    clock = VirtualClock()
    clock.advance(12.5)
    events = EventFactory(clock, boot="pin")
    event = events.make(Kind.COMMAND, "siren", "on", unit="%", rule="r1", cause="c1", detail="d1", hold_s=30.0)
    assert (event.kind, event.entity, event.value) == (Kind.COMMAND, "siren", "on")
    assert (event.unit, event.rule, event.cause, event.detail, event.hold_s) == ("%", "r1", "c1", "d1", 30.0)
    assert (event.ts, event.mono) == (clock.time(), clock.monotonic())
    assert event.id.startswith("pin-")


def test_make_at_keeps_the_clock_readings_it_is_given() -> None:
    events = EventFactory(VirtualClock(), boot="pin")
    event = events.make_at(Kind.READING, "t", 21.5, ts=1000.0, mono=7.0, unit="°C")
    assert (event.ts, event.mono, event.unit, event.hold_s, event.rule) == (1000.0, 7.0, "°C", None, None)


# ``Event.__init__`` is written by hand (issue 14: the dataclass's own called ``object.__setattr__`` per field, 42 %
# more instructions an event); these pin that it is still the dataclass's constructor in every respect.

_EVERY_FIELD: dict[str, Any] = {
    "id": "b-1", "kind": Kind.COMMAND, "entity": "siren", "value": "on", "ts": 1.5, "mono": 2.5,
    "unit": "%", "rule": "r1", "cause": "c1", "detail": "d1", "hold_s": 30.0,
}


def test_an_event_takes_its_fields_in_the_dataclass_order_with_their_defaults() -> None:
    parameters = list(inspect.signature(Event).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(Event)]
    assert [p.default for p in parameters] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in dataclasses.fields(Event)
    ]


def test_every_argument_of_an_event_lands_in_its_own_field_by_keyword_and_by_position() -> None:
    by_keyword, by_position = Event(**_EVERY_FIELD), Event(*_EVERY_FIELD.values())
    for event in (by_keyword, by_position):
        assert {f.name: getattr(event, f.name) for f in dataclasses.fields(Event)} == _EVERY_FIELD
    assert by_keyword == by_position and hash(by_keyword) == hash(by_position)


def test_an_event_left_its_defaults_has_every_field_set() -> None:
    event = Event("b-2", Kind.READING, "t", 21.5, 1.0, 2.0)
    assert (event.unit, event.rule, event.cause, event.detail, event.hold_s) == (None, None, None, None, None)


def test_an_event_cannot_be_changed_once_made() -> None:
    event = Event(**_EVERY_FIELD)
    for name in _EVERY_FIELD:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, name, None)
    with pytest.raises((AttributeError, TypeError)):
        event.extra = 1  # type: ignore[attr-defined]
    assert dataclasses.replace(event, value="off").value == "off" and event.value == "on"
