"""The state store: the latest known value of every entity.

Owned by the dispatcher thread alone (no locks). Like Home Assistant's state
machine, it keeps *changed* apart from *reported*: a sensor that reports the
same value again refreshes ``reported`` but not ``changed``, so "held for 5
minutes" means what it says.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from core.events import K_AVAILABILITY, Event, Kind, Value

VALUE_KINDS = frozenset({Kind.READING, Kind.STATE})


@dataclass(slots=True)
class EntityState:
    value: Value
    unit: str | None
    changed_mono: float
    reported_mono: float
    changed_ts: float
    event_id: str
    available: bool = True


class StateStore:
    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[str, EntityState] = {}

    def apply(self, event: Event) -> bool:  # noqa: PLR0911 - one method for both folds (its docstring)
        """Fold ``event`` into the store; True when the entity's value or availability changed.

        A value is folded here, not in a method of its own: the dispatcher applies every event, one a serial
        line (issue 14: a call less per reading)."""
        kind = event.kind
        if kind in VALUE_KINDS:
            current = self._states.get(event.entity)
            if current is None:
                self._states[event.entity] = EntityState(
                    event.value, event.unit, event.mono, event.mono, event.ts, event.id
                )
                return True
            current.reported_mono = event.mono
            current.event_id = event.id
            if current.value == event.value and current.available:
                return False
            current.value = event.value
            current.unit = event.unit
            current.changed_mono = event.mono
            current.changed_ts = event.ts
            current.available = True
            return True
        if kind is K_AVAILABILITY:
            current = self._states.get(event.entity)
            available = bool(event.value)
            if current is None:
                if available:
                    return False
                self._states[event.entity] = EntityState(
                    None, None, event.mono, event.mono, event.ts, event.id, available=False
                )
                return True
            if current.available == available:
                return False
            current.available = available
            return True
        return False

    def get(self, entity: str) -> EntityState | None:
        return self._states.get(entity)

    def value(self, entity: str) -> Value:
        state = self._states.get(entity)
        return None if state is None or not state.available else state.value

    def items(self) -> Iterator[tuple[str, EntityState]]:
        return iter(self._states.items())

    def __contains__(self, entity: str) -> bool:
        return entity in self._states
