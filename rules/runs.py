"""Compiled rules and the running of their actions.

A rule is compiled once (:func:`compile_rule`): its conditions become
closures and its payload templates are parsed. When it fires and its
conditions hold, :class:`Runner` applies the rule's ``mode`` and runs the
actions in order; a ``delay`` parks the run in a persisted timer
(``run:<rule>``), a ``turn_on … for`` arms a pulse (``pulse:<rule>:<entity>``)
that a re-trigger extends and whose end relinquishes the rule's claim on the
output (gateway/authority.py). Every action is a command or an event carrying the
rule id and the cause, and is written into the evaluation's trace.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never

from core.events import K_SYSTEM, PUBLISH_ENTITY, PublishRequest, Value
from core.values import is_on
from rules import model as m
from rules.conditions import Check, CondContext, compile_condition
from rules.controllers import Runtime
from rules.loader import LoadedRule
from rules.template import Template, compile_template
from rules.timers import Pending, TimerKey, TimerTable
from rules.traces import Trace, TraceStore, iso
from rules.wallclock import WallClock


@dataclass(slots=True)
class Run:
    cause: str | None
    fields: dict[str, Value]
    index: int
    trace: Trace


@dataclass(slots=True)
class RuleRuntime:
    """What a rule remembers between events; carried over a reload when the rule did not change."""

    run: Run | None = None
    queue: deque[tuple[str, str | None, dict[str, Value]]] = field(default_factory=deque)
    last_run: float | None = None
    inside: dict[int, bool] = field(default_factory=dict)
    runs: int = 0


@dataclass(slots=True, frozen=True)
class Limits:
    """A ``numeric`` trigger's range and ``for``, copied from the rule's model when it is compiled: a pydantic
    model's attribute costs about ten times a slot's (its class defines ``__getattr__``, which sends every read
    through CPython's slow attribute hook), and every reading of the watched entity reads them (issue 14)."""

    above: float | None
    below: float | None
    hysteresis: float
    for_: float | None


@dataclass(slots=True, frozen=True)
class Publish:
    """A ``publish`` action as it runs: its model's topic and retain flag, its parsed template and whether that shows
    ``{time}``, copied when the rule is compiled. A firing reads these slots rather than the pydantic action's
    attributes (each read through CPython's slow attribute hook) and does not match the action's class (a pydantic
    class's ``isinstance`` is a Python-level ``__instancecheck__``): an alarm rule fires at every crossing, half
    the lines of issue 14's workload."""

    topic: str
    retain: bool
    template: Template | dict[str, Template | Value]
    uses_time: bool


@dataclass(slots=True)
class CompiledRule:
    rule: m.Rule
    path: Path
    fingerprint: str
    conditions: list[Check]
    templates: dict[int, Template | dict[str, Template | Value]]
    runtime: RuleRuntime = field(default_factory=RuleRuntime)
    limits: dict[int, Limits] = field(default_factory=dict)
    """Trigger index -> the limits of the rule's ``numeric`` triggers."""
    publishes: dict[int, Publish] = field(default_factory=dict)
    """Action index -> the rule's ``publish`` actions, ready to run (:class:`Publish`)."""
    id: str = field(init=False)
    """The rule's id, a slot rather than the model's attribute (read several times per firing, :class:`Limits`)."""
    cooldown: float | None = field(init=False)
    """The model's ``cooldown`` and ``actions``, slots for the same reason (read at every firing)."""
    actions: list[m.Action] = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.rule.id
        self.cooldown = self.rule.cooldown
        self.actions = self.rule.actions


def compile_rule(loaded: LoadedRule) -> CompiledRule:
    templates: dict[int, Template | dict[str, Template | Value]] = {}
    for i, action in enumerate(loaded.rule.actions):
        if isinstance(action, m.PublishAction):
            if isinstance(action.payload, str):
                templates[i] = compile_template(action.payload)
            else:
                templates[i] = {
                    key: compile_template(value) if isinstance(value, str) else value
                    for key, value in action.payload.items()
                }
    conditions = [compile_condition(c) for c in loaded.rule.conditions]
    limits = {i: Limits(t.above, t.below, t.hysteresis, t.for_)
              for i, t in enumerate(loaded.rule.triggers) if isinstance(t, m.NumericTrigger)}
    publishes = {i: Publish(action.topic, action.retain, templates[i], _uses_time(templates[i]))
                 for i, action in enumerate(loaded.rule.actions) if isinstance(action, m.PublishAction)}
    return CompiledRule(loaded.rule, loaded.path, loaded.fingerprint, conditions, templates, limits=limits,
                        publishes=publishes)


def _uses_time(template: Template | dict[str, Template | Value]) -> bool:
    if isinstance(template, Template):
        return template.uses_time
    return any(isinstance(part, Template) and part.uses_time for part in template.values())


Immediate = (m.SetAction | m.TurnOnAction | m.TurnOffAction | m.ReleaseAction | m.ToggleAction | m.PublishAction
             | m.AlarmAction)
"""Every action but ``delay`` (which :meth:`Runner.proceed` handles: it parks the run)."""


class Runner:
    """Decides whether a fired rule runs (cooldown, conditions, ``mode``) and runs its actions; owns delays and
    pulses. Every evaluation is written into a :class:`~rules.traces.Trace`."""

    def __init__(self, runtime: Runtime, timers: TimerTable, traces: TraceStore, wall: WallClock,
                 lookup: Callable[[str], CompiledRule | None], *, alarm_state: Callable[[str], str | None],
                 traced: Callable[[], None]) -> None:
        self.runtime = runtime
        self.clock = runtime.events.clock
        """The events' clock, read once here (as the engine does): a firing reads it three times (issue 14)."""
        self.timers = timers
        self.traces = traces
        self.wall = wall
        self.tz = wall.tz
        self.lookup = lookup
        """The rule in force by id (a reload replaces them: timers look their rule up when they fire)."""
        self.alarm_state = alarm_state
        self.traced = traced
        """Called when a trigger's evaluation was traced (the engine writes the traces file soon)."""

    def trace(self, compiled: CompiledRule, trigger: str, cause: str | None) -> Trace:
        return Trace(self.clock.time(), compiled.id, trigger, cause)

    def note(self, compiled: CompiledRule, note: str) -> None:
        """A trace that is not an evaluation: a ``for`` that ended, a timer dropped after a restart."""
        trace = self.trace(compiled, "-", None)
        trace.result = "note"
        trace.notes = [note]
        self.traces.add(trace)
        self.traced()

    def fire(self, compiled: CompiledRule, text: str, cause: str | None, fields: dict[str, Value]) -> None:
        """A trigger of ``compiled`` fired (``text`` says how): cooldown, then conditions, then :meth:`admit`."""
        runtime, cooldown, clock = compiled.runtime, compiled.cooldown, self.clock
        trace = Trace(clock.time(), compiled.id, text, cause)  # :meth:`trace`, a call less per firing (issue 14)
        self.traces.add(trace)
        self.traced()
        now = clock.monotonic()
        if cooldown and runtime.last_run is not None and now - runtime.last_run < cooldown:
            trace.result = "cooldown"
            return
        if compiled.conditions and not self.conditions_hold(compiled, now, trace):
            return
        self.admit(compiled, text, cause, fields, trace, now)

    def conditions_hold(self, compiled: CompiledRule, now: float, trace: Trace) -> bool:
        """Examine the rule's conditions in order, into the trace, until one fails. Only for a rule that has
        some: the local time they may read is a date computed per firing (most alarms have none)."""
        ctx = CondContext(self.runtime.state, now, self.wall.local_now(), self.alarm_state)
        if ctx.local is not None and not self.wall.synced:
            trace.notes = ["wall clock not synchronised (policy 'run'): conditions used it as it is"]
        for check in compiled.conditions:
            ok = check(ctx)
            trace.conditions.append((check.text, ok))
            if not ok:
                trace.result = "conditions failed"
                if ctx.local is None and check.text.startswith(("time", "all", "any", "not")):
                    trace.notes = ["wall clock not synchronised: time conditions are false"]
                return False
        return True

    def admit(self, compiled: CompiledRule, text: str, cause: str | None, fields: dict[str, Value],  # noqa: PLR0917
              trace: Trace, now: float) -> None:
        """Apply the rule's ``mode`` to a trigger whose conditions held, then run it (or not). ``now``: the
        monotonic clock as :meth:`fire` read it for the cooldown, the run's start for the next cooldown (the
        clock read once per firing, not twice: issue 14)."""
        rule, runtime = compiled.rule, compiled.runtime
        if runtime.run is not None:
            if rule.mode == "single":
                trace.result = "skipped: still running"
                return
            if rule.mode == "queued":
                if len(runtime.queue) >= rule.max_queued:
                    trace.result = "queue full"
                else:
                    runtime.queue.append((text, cause, fields))
                    trace.result = "queued"
                return
            self.timers.cancel(TimerKey.run(compiled.id))
            runtime.run.trace.notes.append("cancelled: the rule was triggered again (restart)")
            runtime.run = None
            trace.notes = ["restarted: the earlier run was cancelled"]
        runtime.last_run = now
        self.start(compiled, Run(cause, fields, 0, trace))

    def start(self, compiled: CompiledRule, run: Run) -> None:
        run.trace.result = "ran"
        compiled.runtime.run = run
        compiled.runtime.runs += 1
        self.proceed(compiled, run)

    def resume(self, rule_id: str, run: Run) -> Callable[[Pending], None]:
        def resume(entry: Pending) -> None:
            compiled = self.lookup(rule_id)
            if compiled is not None and compiled.fingerprint == entry.fingerprint and compiled.runtime.run is run:
                self.proceed(compiled, run)

        return resume

    def proceed(self, compiled: CompiledRule, run: Run) -> None:
        """Run actions from ``run.index`` until a ``delay`` parks the run or the list ends."""
        actions, publishes = compiled.actions, compiled.publishes
        while run.index < len(actions):
            index = run.index
            action = actions[index]
            run.index += 1
            publish = publishes.get(index)
            if publish is not None:  # before any test of the action's class (:class:`Publish`)
                run.trace.actions.append(self.publish(compiled, publish, run))
                continue
            if type(action) is m.DelayAction:  # not isinstance: a pydantic isinstance that misses is slow
                data = {"cause": run.cause, "fields": run.fields, "index": run.index}
                self.timers.arm(TimerKey.run(compiled.id), compiled.id, compiled.fingerprint, action.for_, data,
                                self.resume(compiled.id, run))
                run.trace.actions.append(f"delay {action.for_:g}s")
                return
            run.trace.actions.append(self.act(compiled, index, action, run))
        compiled.runtime.run = None
        if compiled.runtime.queue:
            text, cause, fields = compiled.runtime.queue.popleft()
            trace = self.traces.add(self.trace(compiled, f"{text} (from the queue)", cause))
            self.start(compiled, Run(cause, fields, 0, trace))

    def publish(self, compiled: CompiledRule, publish: Publish, run: Run) -> str:
        """Do a ``publish`` action (compiled: :class:`Publish`); returns its line for the trace."""
        runtime = self.runtime
        payload = self.payload(publish.template, run.fields, publish.uses_time)
        message = PublishRequest(publish.topic, payload, publish.retain).to_json()
        runtime.emit(runtime.events.make(K_SYSTEM, PUBLISH_ENTITY, message, rule=compiled.id, cause=run.cause,
                                         detail=publish.topic))
        return f"publish {publish.topic}: {payload}"

    def act(self, compiled: CompiledRule, index: int, action: Immediate, run: Run) -> str:  # noqa: PLR0911
        """Do one action; returns its line for the trace. A new action type fails mypy here until it is handled."""
        rule_id, cause = compiled.id, run.cause
        runtime = self.runtime
        match action:
            case m.PublishAction():  # compiled into ``compiled.publishes``: :meth:`proceed` runs it
                return self.publish(compiled, compiled.publishes[index], run)
            case m.SetAction(entity=entity, value=value):
                runtime.command(entity, value, rule=rule_id, cause=cause)
                return f"set {entity} = {value!r}" + self._standing(entity, rule_id)
            case m.TurnOnAction():
                return self._turn_on(compiled, action, cause)
            case m.TurnOffAction(entity=entity):
                self.timers.cancel(TimerKey.pulse(rule_id, entity))
                runtime.command(entity, False, rule=rule_id, cause=cause)
                return f"turn_off {entity}" + self._standing(entity, rule_id)
            case m.ReleaseAction(entity=entity):
                self.timers.cancel(TimerKey.pulse(rule_id, entity))
                runtime.command(entity, None, rule=rule_id, cause=cause)
                return f"release {entity}"
            case m.ToggleAction(entity=entity):
                toggled = not is_on(runtime.state.value(entity))
                runtime.command(entity, toggled, rule=rule_id, cause=cause)
                return f"toggle {entity} -> {toggled!r}" + self._standing(entity, rule_id)
            case m.AlarmAction(alarm=alarm, command=command):
                runtime.command(alarm, command, rule=rule_id, cause=cause)
                return f"alarm {alarm} {command}"
            case _:
                assert_never(action)

    def _turn_on(self, compiled: CompiledRule, action: m.TurnOnAction, cause: str | None) -> str:
        """``turn_on``; with ``for``, a pulse that a re-trigger extends and whose end lets go of the output."""
        rule_id, entity = compiled.id, action.entity
        self.runtime.command(entity, True, rule=rule_id, cause=cause)
        standing = self._standing(entity, rule_id)
        if action.for_ is None:
            return f"turn_on {entity}{standing}"
        key = TimerKey.pulse(rule_id, entity)
        extended = self.timers.get(key) is not None
        self.timers.arm(key, rule_id, compiled.fingerprint, action.for_, {"entity": entity, "cause": cause},
                        self.pulse_fired(rule_id))
        return f"turn_on {entity} for {action.for_:g}s" + (" (extended)" if extended else "") + standing

    def _standing(self, entity: str, rule_id: str) -> str:
        """For the trace: whether the rule's claim on an output is in force or waits (gateway/authority.py)."""
        outputs = self.runtime.outputs
        return f" ({outputs.standing(entity, rule_id)})" if entity in outputs else ""

    def payload(self, template: Template | dict[str, Template | Value], fields: dict[str, Value],
                uses_time: bool | None = None) -> str:
        """Fill a ``publish`` payload; ``{time}`` is formatted here, only for a template that shows it (``uses_time``:
        known when the rule was compiled, :class:`Publish`; None asks the template)."""
        if uses_time is None:
            uses_time = _uses_time(template)
        if uses_time and "time" not in fields and isinstance(ts := fields.get("ts"), float):
            fields = {**fields, "time": iso(ts, self.tz)}
        state = self.runtime.state.value
        if isinstance(template, Template):
            return template.render(fields, state)
        return json.dumps({key: part.render(fields, state) if isinstance(part, Template) else part
                           for key, part in template.items()})

    def pulse_fired(self, rule_id: str) -> Callable[[Pending], None]:
        """The end of ``turn_on … for``: the rule lets go of its claim (a ``None`` command) rather than
        writing "off", so another claim on the output (another rule, the hub) keeps it on."""
        def fire(entry: Pending) -> None:
            entity = str(entry.data["entity"])
            self.runtime.command(entity, None, rule=rule_id, cause=entry.data.get("cause"))
            compiled = self.lookup(rule_id)
            if compiled is not None:
                text = f"end of turn_on {entity} 'for'"
                trace = self.traces.add(self.trace(compiled, text, entry.data.get("cause")))
                trace.result = "ran"
                trace.actions.append(f"let go of {entity}")

        return fire
