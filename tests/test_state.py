"""The state store keeps changed apart from reported."""

from __future__ import annotations

from core.state import StateStore
from tests.helpers import virtual_events


def test_the_same_value_again_refreshes_reported_but_not_changed() -> None:
    clock, events = virtual_events()
    store = StateStore()
    assert store.apply(events.reading("t", 20.0)) is True
    first = store.get("t")
    assert first is not None
    changed = first.changed_mono
    clock.advance(60)
    assert store.apply(events.reading("t", 20.0)) is False
    assert first.changed_mono == changed and first.reported_mono == changed + 60


def test_an_unavailable_entity_reads_as_none_until_a_value_arrives() -> None:
    _, events = virtual_events()
    store = StateStore()
    store.apply(events.reading("t", 20.0))
    assert store.apply(events.availability("t", False)) is True
    assert store.value("t") is None
    assert store.apply(events.reading("t", 20.0)) is True
    assert store.value("t") == 20.0
