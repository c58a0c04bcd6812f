"""``EventFactory`` builds its events by position (issue 14: keywords were a fifth of the call): each keyword
still lands in its own field, whatever order ``Event``'s fields are in. ``hold_s`` is how long a hub siren
command's claim lasts: a field swapped silently would be a safety defect mypy cannot see."""

from __future__ import annotations

from core.clock import VirtualClock
from core.events import EventFactory, Kind


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
