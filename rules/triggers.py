"""Triggers: which rules watch what, and whether an event fires them.

:class:`TriggerIndex` is built once per rule set: rules by the entity they
watch (``state``, ``numeric``, ``unavailable``, ``command``), by schedule key
(``schedule.<rule>.<n>``) and the ``start`` ones, so an event costs a dict
lookup plus the triggers on its entity. :class:`Triggers` evaluates them: a
``state`` trigger fires on a change to (and from) a value, a ``numeric`` one on
*crossing* into its range (like Home Assistant: a first value already inside
does not fire; ``hysteresis`` keeps it from chattering), ``unavailable`` when
the entity drops out. With ``for``, the trigger arms a persisted ``hold``
timer instead (:class:`~rules.timers.TimerKey`), which fires only if the state
still holds when it comes due. Firing is the caller's: a :data:`Fire`.
"""

from __future__ import annotations

import enum
import functools
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from core.events import Event, Value
from core.state import StateStore
from rules import model as m
from rules.conditions import number, same
from rules.loader import RuleSet
from rules.runs import CompiledRule, Limits, compile_rule
from rules.schedule import Job, build_trigger
from rules.timers import Pending, TimerKey, TimerTable

Watching = m.StateTrigger | m.NumericTrigger | m.UnavailableTrigger | m.CommandTrigger
"""Triggers that watch one entity's events."""
Holding = m.StateTrigger | m.NumericTrigger | m.UnavailableTrigger
"""Triggers that may wait ``for`` a while."""
Fields = dict[str, Value]
Fire = Callable[[CompiledRule, str, str | None, Fields], None]
"""``fire(rule, text for the trace, cause, template fields)``: the trigger fired; conditions and mode are next."""
Note = Callable[[CompiledRule, str], None]
"""``note(rule, text)``: something worth a trace that is not an evaluation."""


class _Mark(enum.Enum):
    UNSET = "unset"
    UNAVAILABLE = "unavailable"


UNSET, UNAVAILABLE = _Mark.UNSET, _Mark.UNAVAILABLE


@dataclass(slots=True, frozen=True)
class TriggerIndex:
    """The compiled rules of one rule set, indexed by what makes them fire."""

    rules: dict[str, CompiledRule] = field(default_factory=dict)
    """Rule id -> compiled rule (with its runtime state), in file order."""
    by_entity: dict[str, list[tuple[CompiledRule, int, Watching]]] = field(default_factory=dict)
    by_key: dict[str, tuple[CompiledRule, int, m.ScheduleTrigger]] = field(default_factory=dict)
    """``schedule.<rule>.<n>`` (a TIMER event's entity) -> the schedule trigger."""
    starters: list[tuple[CompiledRule, int]] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    """The rules' wall-clock schedules."""
    virtuals: dict[str, m.Virtual] = field(default_factory=dict)

    @classmethod
    def build(cls, ruleset: RuleSet, old: Mapping[str, CompiledRule], tz: ZoneInfo) -> TriggerIndex:
        """Compile ``ruleset``; a rule whose fingerprint did not change keeps its runtime state from ``old``."""
        index = cls(virtuals={d.item.id: d.item for d in ruleset.virtuals if isinstance(d.item, m.Virtual)})
        by_entity: dict[str, list[tuple[CompiledRule, int, Watching]]] = defaultdict(list)
        for loaded in ruleset.rules:
            compiled = compile_rule(loaded)
            previous = old.get(compiled.id)
            if previous is not None and previous.fingerprint == compiled.fingerprint:
                compiled.runtime = previous.runtime
            index.rules[compiled.id] = compiled
            for i, trigger in enumerate(compiled.rule.triggers):
                match trigger:
                    case m.StateTrigger() | m.NumericTrigger() | m.UnavailableTrigger() | m.CommandTrigger():
                        by_entity[trigger.entity].append((compiled, i, trigger))
                    case m.ScheduleTrigger():
                        key = f"schedule.{compiled.id}.{i}"
                        index.by_key[key] = (compiled, i, trigger)
                        index.jobs.append(Job(key, build_trigger(trigger, tz), trigger.misfire_grace))
                    case m.StartTrigger():
                        index.starters.append((compiled, i))
        index.by_entity.update(by_entity)
        return index


def fields(compiled: CompiledRule, event: Event, previous: Value = None) -> Fields:
    """What a ``publish`` payload template may use."""
    return {
        "entity": event.entity, "value": event.value, "unit": event.unit, "previous": previous,
        "rule": compiled.id, "cause": event.id, "ts": event.ts,
    }


class Triggers:
    """Evaluates the triggers of the rules in force (:attr:`index`) against events, on the dispatcher thread."""

    def __init__(self, timers: TimerTable, state: StateStore, tz: ZoneInfo, fire: Fire, note: Note) -> None:
        self.index = TriggerIndex()
        self.timers = timers
        self.state = state
        self.tz = tz
        self.fire = fire
        self.note = note
        self.evaluations = 0
        """Triggers examined: the cost of the rule set per event (for the scale test and health)."""
        self._last: dict[str, Value | _Mark] = {}

    def load(self, ruleset: RuleSet) -> None:
        self.index = TriggerIndex.build(ruleset, self.index.rules, self.tz)

    # -- one method per kind of event -----------------------------------------------------

    def on_value(self, event: Event) -> None:
        """A reading, state or alarm state: ``state`` and ``numeric`` triggers; any value ends ``unavailable``."""
        entity = event.entity
        watchers = self.index.by_entity.get(entity)
        if watchers is None:
            return
        previous = self._last.get(entity, UNSET)
        value = event.value
        # same(), inline for two floats (what sensors send: a call less per reading, issue 14)
        if type(value) is float and type(previous) is float:
            if previous == value:
                return
        elif not isinstance(previous, _Mark) and same(previous, value):
            return
        self._last[entity] = value
        shown = None if isinstance(previous, _Mark) else previous
        for compiled, i, trigger in watchers:
            self.evaluations += 1
            # type(...) is, not match or isinstance: a pydantic class's isinstance that misses costs ~1k
            # instructions (its metaclass's __instancecheck__), at every reading. The triggers are final classes.
            if type(trigger) is m.NumericTrigger:
                self._numeric(compiled, i, event)
            elif type(trigger) is m.StateTrigger:
                self._state(compiled, i, trigger, event, shown)
            elif type(trigger) is m.UnavailableTrigger:
                self.timers.cancel(TimerKey.hold(compiled.id, i))

    def on_availability(self, event: Event) -> None:
        entity = event.entity
        watchers = self.index.by_entity.get(entity)
        if watchers is None:
            return
        was_unavailable = self._last.get(entity) is UNAVAILABLE
        if event.value:
            if was_unavailable:
                self._last[entity] = UNSET
            for compiled, i, trigger in watchers:
                if isinstance(trigger, m.UnavailableTrigger):
                    self.timers.cancel(TimerKey.hold(compiled.id, i))
            return
        if was_unavailable:
            return
        self._last[entity] = UNAVAILABLE
        for compiled, i, trigger in watchers:
            self.evaluations += 1
            match trigger:
                case m.StateTrigger() | m.NumericTrigger():
                    self.timers.cancel(TimerKey.hold(compiled.id, i))
                    if isinstance(trigger, m.NumericTrigger):
                        compiled.runtime.inside.pop(i, None)
                case m.UnavailableTrigger(for_=None):
                    text = f"unavailable {entity}" + (f": {event.detail}" if event.detail else "")
                    self.fire(compiled, text, event.id, fields(compiled, event))
                case m.UnavailableTrigger(for_=seconds) if seconds is not None:
                    self._hold(compiled, i, seconds, event, None)

    def on_command(self, event: Event) -> None:
        """A command from the hub (not one a rule or controller issued: those carry a rule id)."""
        if event.rule is not None:
            return
        for compiled, _, trigger in self.index.by_entity.get(event.entity, ()):
            if isinstance(trigger, m.CommandTrigger):
                self.evaluations += 1
                if trigger.value is None or same(event.value, trigger.value):
                    text = f"command {event.entity} = {event.value!r} from the hub"
                    self.fire(compiled, text, event.id, fields(compiled, event))

    def on_schedule(self, event: Event) -> bool:
        """A TIMER event: True if it was one of the rules' schedules."""
        watcher = self.index.by_key.get(event.entity)
        if watcher is None:
            return False
        compiled, _, trigger = watcher
        self.evaluations += 1
        self.fire(compiled, f"schedule {trigger.cron or trigger.at}", event.id, fields(compiled, event))
        return True

    def on_start(self, event: Event) -> None:
        for compiled, _ in self.index.starters:
            self.fire(compiled, "start", event.id, fields(compiled, event))

    # -- state and numeric ------------------------------------------------------------------

    def _state(self, compiled: CompiledRule, i: int, trigger: m.StateTrigger, event: Event,
               previous: Value) -> None:
        matches_to = trigger.to is None or same(event.value, trigger.to)
        matches_from = trigger.from_ is None or (previous is not None and same(previous, trigger.from_))
        if trigger.for_ is None:
            if matches_to and matches_from:
                text = f"state {event.entity} {previous!r} -> {event.value!r}"
                self.fire(compiled, text, event.id, fields(compiled, event, previous))
            return
        if matches_to and matches_from:
            if trigger.to is None:  # "unchanged for": every change starts the wait again
                self.timers.cancel(TimerKey.hold(compiled.id, i))
            self._hold(compiled, i, trigger.for_, event, previous)
        elif not matches_to:
            self.timers.cancel(TimerKey.hold(compiled.id, i))

    def _numeric(self, compiled: CompiledRule, i: int, event: Event) -> None:
        raw = event.value
        value = raw if type(raw) is float else number(raw)  # a float, what sensors send, without the call
        if value is None:
            return
        limits = compiled.limits[i]  # not the trigger's attributes: a pydantic model's are slow to read (Limits)
        above, below = limits.above, limits.below
        inside_now = (above is None or value > above) and (below is None or value < below)
        state = compiled.runtime.inside
        was = state.get(i)
        if was is None:
            state[i] = inside_now  # like Home Assistant: a first value already in range does not fire
            return
        if not was and inside_now:
            state[i] = True
            if limits.for_ is None:
                text = f"numeric {event.entity} = {value:g} crossed {_range_of(above, below)}"
                self.fire(compiled, text, event.id, fields(compiled, event))
            else:
                self._hold(compiled, i, limits.for_, event, None)
        elif was and _cleared(limits, value):
            state[i] = False
            if limits.for_ is not None:  # only a `for` arms a hold (a reload that drops it drops the timers)
                self.timers.cancel(TimerKey.hold(compiled.id, i))

    # -- holding ``for`` -------------------------------------------------------------------

    def _hold(self, compiled: CompiledRule, i: int, seconds: float, event: Event, previous: Value) -> None:
        key = TimerKey.hold(compiled.id, i)
        if self.timers.get(key) is not None:
            return  # already holding since an earlier event: the duration counts from there
        data = {"cause": event.id, "fields": fields(compiled, event, previous)}
        self.timers.arm(key, compiled.id, compiled.fingerprint, seconds, data, self.hold_fired(compiled.id, i))

    def hold_fired(self, rule_id: str, i: int) -> Callable[[Pending], None]:
        """What a ``hold`` timer does when it comes due (also one restored after a restart)."""
        def fire(entry: Pending) -> None:
            compiled = self.index.rules.get(rule_id)
            if compiled is None or compiled.fingerprint != entry.fingerprint:
                return
            trigger = compiled.rule.triggers[i]
            if not isinstance(trigger, Holding) or trigger.for_ is None:
                return
            if not self._still_holds(trigger):
                self.note(compiled, f"'for' of trigger {i} ended: the state no longer holds")
                return
            text = f"{trigger.type} {trigger.entity} held for {trigger.for_:g}s"
            self.fire(compiled, text, entry.data.get("cause"), dict(entry.data.get("fields") or {}))

        return fire

    def _still_holds(self, trigger: Holding) -> bool:
        state = self.state.get(trigger.entity)
        if isinstance(trigger, m.UnavailableTrigger):
            return state is None or not state.available
        if state is None or not state.available:
            return False
        if isinstance(trigger, m.StateTrigger):
            return trigger.to is None or same(state.value, trigger.to)
        value = number(state.value)
        return value is not None and (trigger.above is None or value > trigger.above - trigger.hysteresis) and (
            trigger.below is None or value < trigger.below + trigger.hysteresis
        )


def _cleared(limits: Limits, value: float) -> bool:
    """Out of the range by the trigger's hysteresis: the next entry into it fires again."""
    above, below, h = limits.above, limits.below, limits.hysteresis
    return (above is not None and value <= above - h) or (below is not None and value >= below + h)


@functools.cache
def _range_of(above: float | None, below: float | None) -> str:
    """``above 25 and below 30``: written once per range, not at every crossing (the rule set's ranges are
    few; a reload's new ones add a few strings)."""
    parts = []
    if above is not None:
        parts.append(f"above {above:g}")
    if below is not None:
        parts.append(f"below {below:g}")
    return " and ".join(parts)
