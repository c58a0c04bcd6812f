"""The rules engine: compiled rules indexed by the entities they watch.

An event costs only the rules that watch its entity. The engine never touches
hardware: it asks the dispatcher (its :class:`Runtime`) for commands, and the
dispatcher applies them on the same thread.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from gateway.events import Event, Kind, Value
from rules.loader import LoadedRule
from rules.model import Action, Rule, SetAction, StateTrigger, TurnOffAction, TurnOnAction


class Runtime(Protocol):
    def command(self, entity: str, value: Value, *, rule: str | None = None, cause: str | None = None) -> None: ...


_WATCHED_KINDS = frozenset({Kind.READING, Kind.STATE})


class RuleEngine:
    def __init__(self, rules: Sequence[LoadedRule], runtime: Runtime) -> None:
        self.runtime = runtime
        self.rules = [item.rule for item in rules]
        self._by_entity: dict[str, list[tuple[Rule, StateTrigger]]] = defaultdict(list)
        self._last: dict[str, Value] = {}
        for rule in self.rules:
            for trigger in rule.triggers:
                self._by_entity[trigger.entity].append((rule, trigger))

    def handle(self, event: Event) -> None:
        if event.kind not in _WATCHED_KINDS:
            return
        previous = self._last.get(event.entity, _UNSET)
        if previous == event.value and previous is not _UNSET:
            return
        self._last[event.entity] = event.value
        for rule, trigger in self._by_entity.get(event.entity, ()):
            if trigger.to is not None and event.value != trigger.to:
                continue
            if trigger.from_ is not None and previous != trigger.from_:
                continue
            for action in rule.actions:
                self._run(action, rule, event)

    def _run(self, action: Action, rule: Rule, cause: Event) -> None:
        value: Value
        if isinstance(action, SetAction):
            value = action.value
        elif isinstance(action, TurnOnAction):
            value = True
        elif isinstance(action, TurnOffAction):
            value = False
        self.runtime.command(action.entity, value, rule=rule.id, cause=cause.id)


class _Unset:
    pass


_UNSET: Value = _Unset()  # type: ignore[assignment]
