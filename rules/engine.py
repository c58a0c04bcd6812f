"""The rules engine: compiled rules indexed by the entities they watch.

An event costs only the rules that watch its entity (a dict lookup), so a
thousand rules cost little more than ten. The engine never touches hardware
and never imports MQTT: it asks the dispatcher (its :class:`Runtime`) for
commands and events, and the dispatcher applies them on the same thread. All
of it runs on the dispatcher thread, so nothing here needs a lock.

Wiring (what ``gateway/app.py`` does)::

    engine = build_engine(config, dispatcher)   # gateway/assembly.py; or RuleEngine(load_rules(dir, entities), ...)
    dispatcher.reactor = engine
    engine.start()          # restores timers and state, fires ``start`` triggers (via the bus)
    ...
    engine.reload(ruleset)  # any thread: a validated set, swapped atomically on the dispatcher thread
    engine.stop()           # saves timers, state and traces

Every action is an event that carries the rule id and the id of the event that
caused it. A ``publish`` action is a ``Kind.SYSTEM`` event with entity
``publish`` and a JSON value ``{"topic", "payload", "retain"}`` for the MQTT
bridge (see docs/rules.md).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from core.clock import VirtualClock
from core.events import PUBLISH_ENTITY, Event, Kind, Value
from rules import model as m
from rules.alarm import AlarmController
from rules.conditions import CondContext, number, same
from rules.controllers import Controller, Runtime
from rules.loader import LoadedRule, RulesError, RuleSet
from rules.runs import CompiledRule, Run, Runner, compile_rule
from rules.schedule import ApsSchedules, Job, Schedules, VirtualSchedules, build_trigger, clock_synchronised
from rules.thermostat import ThermostatController
from rules.timers import Pending, TimerKey, TimerTable, anchor, elapsed_since
from rules.traces import TRACES_FILE, TraceStore, read_json, write_json

log = logging.getLogger(__name__)

__all__ = ["ENGINE_ENTITY", "PUBLISH_ENTITY", "ReloadReport", "RuleEngine", "Runtime"]

ENGINE_ENTITY = "rules"
"""SYSTEM events the engine posts to itself: value ``started`` or ``reload``."""
STATE_FILE = "rules-state.json"
SAVE_DELAY = 2.0
"""Seconds a change may wait before the state file is written: coalesces a burst, spares the SD card."""
CLOCK_POLL = 30.0
TRACE_SAVE_DELAY = 60.0
"""Traces are written at most once a minute (and at stop): they are for people, not for recovery."""
WATCH_INTERVAL = 5.0
"""Seconds between checks of the rule files for changes (stat only: name, size, mtime)."""
CLOCK_STEP = 2.0
_WATCHED = frozenset({Kind.READING, Kind.STATE, Kind.ALARM})
"""Kinds whose value a `state` or `numeric` trigger watches (ALARM: an alarm's state, e.g. `to = "triggered"`)."""


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()
UNAVAILABLE: Any = _Unset()


@dataclass(slots=True, frozen=True)
class ReloadReport:
    added: list[str]
    changed: list[str]
    removed: list[str]
    kept: int

    def __str__(self) -> str:
        return (f"rules reloaded: {len(self.added)} added {self.added}, {len(self.changed)} changed {self.changed}, "
                f"{len(self.removed)} removed {self.removed}, {self.kept} unchanged")


Watcher = tuple[CompiledRule, int, Any]


class RuleEngine:
    """See the module docstring. Every method except :meth:`start`, :meth:`reload` and :meth:`stop`
    runs on the dispatcher thread."""

    def __init__(
        self,
        rules: RuleSet | Sequence[LoadedRule],
        runtime: Runtime,
        *,
        timezone: str = "UTC",
        state_dir: Path | None = None,
        unsynced_clock: Literal["wait", "run"] = "wait",
        clock_check: Callable[[], bool] | None = None,
        trace_size: int = 20,
        schedules: Schedules | None = None,
    ) -> None:
        self.runtime = runtime
        self.tz = ZoneInfo(timezone)
        self.state_dir = state_dir
        self.unsynced_clock = unsynced_clock
        clock = runtime.events.clock
        virtual = isinstance(clock, VirtualClock)
        self._clock_check = clock_check or ((lambda: True) if virtual else clock_synchronised)
        self.timers = TimerTable(runtime, clock, on_change=self.changed)
        self.traces = TraceStore(trace_size)
        # A lambda, not self.compiled.get: a reload replaces the dict.
        self.runner = Runner(runtime, self.timers, self.traces, self.tz,
                             lambda rule_id: self.compiled.get(rule_id))  # noqa: PLW0108
        self.schedules = schedules or self._default_schedules(virtual)
        self.compiled: dict[str, CompiledRule] = {}
        """Rule id -> compiled rule (with its runtime state)."""
        self.controllers: dict[str, Controller] = {}
        self.virtuals: dict[str, m.Virtual] = {}
        self.virtual_values: dict[str, Value] = {}
        self.evaluations = 0
        """Triggers examined: the cost of the rule set per event (for the scale test and health)."""
        self._ruleset = rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules))
        self._pending_ruleset: RuleSet | None = None
        self._owned: dict[str, Controller] = {}
        self._ctl_watch: dict[str, list[Controller]] = {}
        self._index(self._ruleset, {})
        self._last: dict[str, Any] = {}
        self._synced = False
        self._offset: float | None = None
        self._save_armed = False
        self._traces_armed = False
        self._started = False
        self._stopped = False
        self._watched: tuple[tuple[str, int, int], ...] = ()
        self._watch_poll: Callable[[], Any] | None = None

    @property
    def ruleset(self) -> RuleSet:
        """The rule set in force (its ``entities()`` are what MQTT discovery and commands need)."""
        return self._ruleset

    @property
    def rules(self) -> list[m.Rule]:
        """The running rules (enabled ones), in file order."""
        return [compiled.rule for compiled in self.compiled.values()]

    def _default_schedules(self, virtual: bool) -> Schedules:
        if virtual:
            return VirtualSchedules(self.runtime, self.tz)
        bus = getattr(self.runtime, "bus", None)
        post = bus.post if bus is not None else self.runtime.emit
        return ApsSchedules(post, self.runtime.events, self.tz)

    # -- compiling and indexing ----------------------------------------------------------

    def _index(self, ruleset: RuleSet, old: dict[str, CompiledRule]) -> None:
        rules: dict[str, CompiledRule] = {}
        by_entity: dict[str, list[Watcher]] = defaultdict(list)
        by_key: dict[str, Watcher] = {}
        starters: list[Watcher] = []
        jobs: list[Job] = []
        for loaded in ruleset.rules:
            compiled = compile_rule(loaded)
            previous = old.get(compiled.id)
            if previous is not None and previous.fingerprint == compiled.fingerprint:
                compiled.runtime = previous.runtime
            rules[compiled.id] = compiled
            for i, trigger in enumerate(compiled.rule.triggers):
                if isinstance(trigger, m.WATCHING_TRIGGERS):
                    by_entity[trigger.entity].append((compiled, i, trigger))
                elif isinstance(trigger, m.ScheduleTrigger):
                    key = f"schedule.{compiled.id}.{i}"
                    by_key[key] = (compiled, i, trigger)
                    jobs.append(Job(key, build_trigger(trigger, self.tz), trigger.misfire_grace))
                elif isinstance(trigger, m.StartTrigger):
                    starters.append((compiled, i, trigger))
        self.compiled = rules
        self._by_entity = dict(by_entity)
        self._by_key = by_key
        self._starters = starters
        self._rule_jobs = jobs
        self.virtuals = {d.item.id: d.item for d in ruleset.virtuals if isinstance(d.item, m.Virtual)}

    def _index_controllers(self) -> None:
        owned: dict[str, Controller] = {}
        watched: dict[str, list[Controller]] = defaultdict(list)
        jobs: list[Job] = []
        for controller in self.controllers.values():
            for entity in controller.owned():
                owned[entity] = controller
            for entity in controller.watched():
                watched[entity].append(controller)
            jobs.extend(job for _, job in controller.jobs())
        self._owned = owned
        self._ctl_watch = dict(watched)
        self.schedules.replace(self._rule_jobs + jobs)
        outputs = {entity: owner for controller in self.controllers.values()
                   for entity, owner in controller.outputs().items()}
        self.runtime.outputs.set_owners(outputs, {cid: c.level for cid, c in self.controllers.items()})

    def _build_controllers(self, ruleset: RuleSet) -> dict[str, Controller]:
        controllers: dict[str, Controller] = {}
        for declared in ruleset.thermostats + ruleset.alarms:
            item = declared.item
            existing = self.controllers.get(item.id)
            kind = ThermostatController if isinstance(item, m.Thermostat) else AlarmController
            if isinstance(existing, kind):
                if existing.fingerprint != declared.fingerprint:
                    existing.reconfigure(item, declared.fingerprint)
                controllers[item.id] = existing
            elif isinstance(item, m.Thermostat):
                controllers[item.id] = ThermostatController(self, item, declared.fingerprint)
            elif isinstance(item, m.Alarm):
                controllers[item.id] = AlarmController(self, item, declared.fingerprint)
        return controllers

    # -- the host controllers use -------------------------------------------------------

    def local_now(self) -> dt.datetime | None:
        """Local wall time, or None while the clock is not trusted (policy ``wait``)."""
        if not self._synced and self.unsynced_clock == "wait":
            return None
        return dt.datetime.fromtimestamp(self.runtime.events.clock.time(), self.tz)

    def alarms(self) -> set[str]:
        return {cid for cid, controller in self.controllers.items() if isinstance(controller, AlarmController)}

    def alarm_state(self, alarm: str) -> str | None:
        controller = self.controllers.get(alarm)
        return controller.state if isinstance(controller, AlarmController) else None

    def changed(self) -> None:
        """Timers or restorable state changed: write the state file soon (coalesced)."""
        if self.state_dir is None or self._save_armed or self._stopped:
            return
        self._save_armed = True
        self.runtime.call_later(SAVE_DELAY, self._save_soon)

    def _traced(self) -> None:
        """A trace was added: write the traces file within :data:`TRACE_SAVE_DELAY` (they are larger)."""
        if self.state_dir is None or self._traces_armed or self._stopped:
            return
        self._traces_armed = True
        self.runtime.call_later(TRACE_SAVE_DELAY, self._save_traces_soon)

    def _save_soon(self) -> None:
        self._save_armed = False
        self._write(STATE_FILE, self.snapshot())

    def _save_traces_soon(self) -> None:
        self._traces_armed = False
        self._write(TRACES_FILE, self.traces.all(self.tz))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin: the restore and the ``start`` triggers run on the dispatcher thread (posted via the bus)."""
        event = self.runtime.events.make(Kind.SYSTEM, ENGINE_ENTITY, "started", detail="rules engine started")
        bus = getattr(self.runtime, "bus", None)
        if bus is not None:
            bus.post(event)
        else:
            self.handle(event)

    def reload(self, ruleset: RuleSet) -> ReloadReport | None:
        """Swap a validated rule set in on the dispatcher thread (load it first: a :class:`RulesError` there
        leaves the old rules in force). From any thread; returns the report only without a bus."""
        bus = getattr(self.runtime, "bus", None)
        if bus is None:
            return self.replace(ruleset)
        self._pending_ruleset = ruleset
        bus.post(self.runtime.events.make(Kind.SYSTEM, ENGINE_ENTITY, "reload", detail=ruleset.summary()))
        return None

    def watch(self, directory: Path, load: Callable[[], RuleSet], interval: float = WATCH_INTERVAL) -> None:
        """Reload with ``load()`` when a rule file in ``directory`` changes (checked every ``interval`` s on the
        dispatcher's timers).

        Call before the dispatcher runs (polling begins when the engine starts) or on its thread.
        A broken set is reported once per change and the running rules stay.
        """
        self._watched = rules_signature(directory)

        def poll() -> None:
            if self._stopped:
                return
            signature = rules_signature(directory)
            if signature != self._watched:
                self._watched = signature
                try:
                    ruleset = load()
                except RulesError as exc:
                    for problem in exc.problems:
                        log.error("rule files changed: %s", problem)
                    log.error("reload refused: %d problem(s); the previous %d rules stay in force",
                              len(exc.problems), len(self.compiled))
                else:
                    log.info("rule files changed in %s: reloading", directory)
                    self.replace(ruleset)
            self.runtime.call_later(interval, poll)

        self._watch_poll = lambda: self.runtime.call_later(interval, poll)
        if self._started:
            self._watch_poll()

    def stop(self) -> None:
        """Stop the scheduler and save timers, state and traces (call after the dispatcher stopped)."""
        self.schedules.stop()
        if self._started:
            self.save()
        self._stopped = True

    def replace(self, ruleset: RuleSet) -> ReloadReport:
        """Swap in a validated rule set at once; timers and state of unchanged rules are kept.

        Call on the dispatcher thread (an event handler, a timer or an idle hook such as SIGHUP's).
        """
        old = self.compiled
        added = [r.rule.id for r in ruleset.rules if r.rule.id not in old]
        changed = [r.rule.id for r in ruleset.rules if r.rule.id in old and old[r.rule.id].fingerprint != r.fingerprint]
        new_ids = {r.rule.id for r in ruleset.rules}
        removed = [rule_id for rule_id in old if rule_id not in new_ids]
        for rule_id in changed + removed:
            self.timers.cancel_owner(rule_id)
            self.runtime.outputs.release_holder(rule_id, "changed by a reload" if rule_id in changed
                                                else "removed by a reload")
        self._ruleset = ruleset
        self._index(ruleset, old)
        controllers = self._build_controllers(ruleset)
        for controller_id, controller in self.controllers.items():
            if controllers.get(controller_id) is not controller:
                controller.stop()
                controller.release("removed from the rule files")
        fresh = [c for cid, c in controllers.items() if self.controllers.get(cid) is not c]
        self.controllers = controllers
        self._index_controllers()
        if self._started:
            for controller in fresh:
                controller.start(None, None)
            for virtual_id, virtual in self.virtuals.items():
                if virtual_id not in self.virtual_values:
                    self._set_virtual(virtual_id, virtual.initial, None, None)
        report = ReloadReport(added, changed, removed, len(ruleset.rules) - len(added) - len(changed))
        log.info("%s", report)
        self.changed()
        bus = getattr(self.runtime, "bus", None)
        if bus is not None:
            # Visible to the hub, and it makes the dispatcher process what this swap emitted
            # (safe states of removed controllers) even when called from an idle hook.
            bus.post(self.runtime.events.make(Kind.SYSTEM, ENGINE_ENTITY, "reloaded", detail=str(report)))
        return report

    def _on_started(self, event: Event) -> None:
        if self._started:
            return
        self._started = True
        saved = self._read_state()
        self._poll_clock()
        self.controllers = self._build_controllers(self._ruleset)
        self._index_controllers()
        restored_virtuals = saved.get("virtuals", {}) if isinstance(saved.get("virtuals"), dict) else {}
        for virtual_id, virtual in self.virtuals.items():
            value = restored_virtuals.get(virtual_id, virtual.initial) if virtual.restore else virtual.initial
            self._set_virtual(virtual_id, value, None, event.id)
        controllers_saved = saved.get("controllers", {})
        for controller in self.controllers.values():
            state = controllers_saved.get(controller.id) if isinstance(controllers_saved, dict) else None
            controller.start(event.id, state if isinstance(state, dict) else None)
        self._restore_timers(saved)
        if self._watch_poll is not None:
            self._watch_poll()
        for compiled, i, _ in self._starters:
            self._fire(compiled, i, "start", event.id, self._fields(compiled, event))

    # -- persistence -------------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        if self.state_dir is None:
            return {}
        traces = read_json(self.state_dir / TRACES_FILE)
        if isinstance(traces, dict):
            self.traces.load(traces)
        data = read_json(self.state_dir / STATE_FILE)
        return data if isinstance(data, dict) and data.get("version") == 1 else {}

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": 1,
            "anchor": anchor(self.runtime.events.clock),
            "timers": self.timers.snapshot(),
            "virtuals": {vid: value for vid, value in self.virtual_values.items()
                         if vid in self.virtuals and self.virtuals[vid].restore},
            "controllers": {cid: controller.snapshot() for cid, controller in self.controllers.items()},
        }

    def save(self) -> None:
        """Write the state and traces files now (at stop)."""
        self._write(STATE_FILE, self.snapshot())
        self._write(TRACES_FILE, self.traces.all(self.tz))

    def _write(self, name: str, data: Any) -> None:
        if self.state_dir is None:
            return
        try:
            write_json(self.state_dir / name, data)
        except OSError as exc:
            log.error("cannot save %s in %s: %s", name, self.state_dir, exc)

    def _restore_timers(self, saved: dict[str, Any]) -> None:
        timers = saved.get("timers")
        if not isinstance(timers, list):
            return
        away = elapsed_since(saved.get("anchor") or {}, self.runtime.events.clock)
        for item in timers:
            try:
                self._restore_timer(item, away)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("dropping unreadable saved timer %r: %s", item, exc)

    def _restore_timer(self, item: dict[str, Any], away: float) -> None:
        key, owner = TimerKey.parse(str(item["key"])), str(item["owner"])
        remaining = float(item["remaining"]) - away
        entry = Pending(key, owner, str(item["fingerprint"]), 0.0, dict(item.get("data") or {}))
        controller = self.controllers.get(owner)
        if controller is not None and key.kind == "alarm":
            controller.restore_timer(entry, remaining)
            return
        compiled = self.compiled.get(owner)
        if compiled is None or compiled.fingerprint != entry.fingerprint:
            log.info("dropping saved timer %s: rule %s is gone or changed", key, owner)
            return
        if remaining < -compiled.rule.restart_grace:
            log.warning("dropping saved timer %s: missed by %.0fs (grace %.0fs)", key, -remaining,
                        compiled.rule.restart_grace)
            self._note(compiled, f"timer {key} dropped after restart: missed by {-remaining:.0f}s")
            return
        kind = key.kind
        delay = max(0.0, remaining)
        if kind == "hold" and key.index is not None:
            self.timers.arm(key, owner, entry.fingerprint, delay, entry.data, self._hold_fired(owner, key.index))
        elif kind == "pulse":
            self.timers.arm(key, owner, entry.fingerprint, delay, entry.data, self.runner.pulse_fired(owner))
        elif kind == "run":
            trace = self.runner.trace(compiled, "resumed after restart", entry.data.get("cause"))
            trace.result = "ran"
            run = Run(entry.data.get("cause"), dict(entry.data.get("fields") or {}), int(entry.data["index"]), trace)
            self.traces.add(trace)
            compiled.runtime.run = run
            self.timers.arm(key, owner, entry.fingerprint, delay, entry.data, self.runner.resume(owner, run))
        log.info("restored timer %s (%s)", key, "due now" if remaining <= 0 else f"{remaining:.0f}s left")

    # -- clock sanity ----------------------------------------------------------------------

    def _poll_clock(self) -> None:
        clock = self.runtime.events.clock
        if not self._synced:
            self._synced = bool(self._clock_check())
            if self._synced:
                log.info("wall clock synchronised: schedules and time conditions active")
            elif self.unsynced_clock == "wait":
                log.warning("wall clock not synchronised yet: schedules and time conditions wait")
        if (self._synced or self.unsynced_clock == "run") and not self.schedules.running:
            self.schedules.start()
        offset = clock.time() - clock.monotonic()
        if self._offset is not None and abs(offset - self._offset) > CLOCK_STEP:
            log.warning("wall clock stepped by %+.1fs: schedules recomputed", offset - self._offset)
            self.schedules.wakeup()
        self._offset = offset
        if not isinstance(clock, VirtualClock) and not self._stopped:
            self.runtime.call_later(CLOCK_POLL, self._poll_clock)

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        kind = event.kind
        if kind in _WATCHED:
            self._value(event)
        elif kind is Kind.AVAILABILITY:
            self._availability(event)
        elif kind is Kind.COMMAND:
            self._command(event)
        elif kind is Kind.TIMER:
            self._timer(event)
        elif kind is Kind.SYSTEM and event.entity in (ENGINE_ENTITY, "gateway"):
            if event.value == "started":
                self._on_started(event)
            elif event.value == "reload" and self._pending_ruleset is not None:
                ruleset, self._pending_ruleset = self._pending_ruleset, None
                self.replace(ruleset)

    def _value(self, event: Event) -> None:
        entity = event.entity
        for controller in self._ctl_watch.get(entity, ()):
            controller.handle(event)
        watchers = self._by_entity.get(entity)
        if watchers is None:
            return
        previous = self._last.get(entity, UNSET)
        value = event.value
        if previous is not UNSET and previous is not UNAVAILABLE and same(previous, value):
            return
        self._last[entity] = value
        for compiled, i, trigger in watchers:
            self.evaluations += 1
            if isinstance(trigger, m.StateTrigger):
                self._state_trigger(compiled, i, trigger, event, previous)
            elif isinstance(trigger, m.NumericTrigger):
                self._numeric_trigger(compiled, i, trigger, event)
            elif isinstance(trigger, m.UnavailableTrigger):
                self.timers.cancel(TimerKey.hold(compiled.id, i))

    def _state_trigger(self, compiled: CompiledRule, i: int, trigger: m.StateTrigger, event: Event,
                       previous: Any) -> None:
        matches_to = trigger.to is None or same(event.value, trigger.to)
        shown_previous = None if previous is UNSET or previous is UNAVAILABLE else previous
        matches_from = trigger.from_ is None or (shown_previous is not None and same(shown_previous, trigger.from_))
        text = f"state {event.entity} {shown_previous!r} -> {event.value!r}"
        if trigger.for_ is None:
            if matches_to and matches_from:
                self._fire(compiled, i, text, event.id, self._fields(compiled, event, shown_previous))
            return
        if matches_to and matches_from:
            if trigger.to is None:  # "unchanged for": every change starts the wait again
                self.timers.cancel(TimerKey.hold(compiled.id, i))
            self._hold(compiled, i, trigger.for_, event, shown_previous)
        elif not matches_to:
            self.timers.cancel(TimerKey.hold(compiled.id, i))

    def _numeric_trigger(self, compiled: CompiledRule, i: int, trigger: m.NumericTrigger, event: Event) -> None:
        value = number(event.value)
        if value is None:
            return
        above, below, h = trigger.above, trigger.below, trigger.hysteresis
        inside_now = (above is None or value > above) and (below is None or value < below)
        cleared = (above is not None and value <= above - h) or (below is not None and value >= below + h)
        state = compiled.runtime.inside
        was = state.get(i)
        if was is None:
            state[i] = inside_now  # like Home Assistant: a first value already in range does not fire
            return
        if not was and inside_now:
            state[i] = True
            if trigger.for_ is None:
                text = f"numeric {event.entity} = {value:g} crossed {_range_text(trigger)}"
                self._fire(compiled, i, text, event.id, self._fields(compiled, event))
            else:
                self._hold(compiled, i, trigger.for_, event, None)
        elif was and cleared:
            state[i] = False
            self.timers.cancel(TimerKey.hold(compiled.id, i))

    def _availability(self, event: Event) -> None:  # noqa: PLR0912
        entity = event.entity
        for controller in self._ctl_watch.get(entity, ()):
            controller.handle(event)
        watchers = self._by_entity.get(entity)
        if watchers is None:
            return
        available = bool(event.value)
        was_unavailable = self._last.get(entity) is UNAVAILABLE
        if available:
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
            if isinstance(trigger, m.StateTrigger | m.NumericTrigger):
                self.timers.cancel(TimerKey.hold(compiled.id, i))
                if isinstance(trigger, m.NumericTrigger):
                    compiled.runtime.inside.pop(i, None)
            elif isinstance(trigger, m.UnavailableTrigger):
                if trigger.for_ is None:
                    text = f"unavailable {entity}" + (f": {event.detail}" if event.detail else "")
                    self._fire(compiled, i, text, event.id, self._fields(compiled, event))
                else:
                    self._hold(compiled, i, trigger.for_, event, None)

    def _command(self, event: Event) -> None:
        entity = event.entity
        controller = self._owned.get(entity) if self._started else None
        if controller is not None:
            controller.command(event)
        elif entity in self.virtuals:
            self._set_virtual(entity, event.value, event.rule, event.id)
        if event.rule is not None:
            return
        for compiled, i, trigger in self._by_entity.get(entity, ()):
            if isinstance(trigger, m.CommandTrigger):
                self.evaluations += 1
                if trigger.value is None or same(event.value, trigger.value):
                    text = f"command {entity} = {event.value!r} from the hub"
                    self._fire(compiled, i, text, event.id, self._fields(compiled, event))

    def _timer(self, event: Event) -> None:
        watcher = self._by_key.get(event.entity)
        if watcher is not None:
            compiled, i, trigger = watcher
            self.evaluations += 1
            self._fire(compiled, i, f"schedule {trigger.cron or trigger.at}", event.id, self._fields(compiled, event))
            return
        parts = event.entity.split(".")
        if len(parts) == 3 and parts[0] == "schedule" and parts[1] in self.controllers and parts[2].isdigit():
            self.controllers[parts[1]].on_schedule(int(parts[2]), event)

    def _set_virtual(self, entity: str, value: Value, rule: str | None, cause: str | None) -> None:
        self.virtual_values[entity] = value
        self.runtime.emit(self.runtime.events.make(Kind.STATE, entity, value, rule=rule, cause=cause))
        if self.virtuals[entity].restore:
            self.changed()

    # -- holding ``for`` -------------------------------------------------------------------

    def _hold(self, compiled: CompiledRule, i: int, seconds: float, event: Event, previous: Value) -> None:
        key = TimerKey.hold(compiled.id, i)
        if self.timers.get(key) is not None:
            return  # already holding since an earlier event: the duration counts from there
        data = {"cause": event.id, "fields": self._fields(compiled, event, previous)}
        self.timers.arm(key, compiled.id, compiled.fingerprint, seconds, data, self._hold_fired(compiled.id, i))

    def _hold_fired(self, rule_id: str, i: int) -> Callable[[Pending], None]:
        def fire(entry: Pending) -> None:
            compiled = self.compiled.get(rule_id)
            if compiled is None or compiled.fingerprint != entry.fingerprint:
                return
            trigger = compiled.rule.triggers[i]
            if not self._still_holds(trigger):
                self._note(compiled, f"'for' of trigger {i} ended: the state no longer holds")
                return
            text = f"{trigger.type} {getattr(trigger, 'entity', '')} held for {getattr(trigger, 'for_', 0):g}s"
            self._fire(compiled, i, text, entry.data.get("cause"), dict(entry.data.get("fields") or {}))

        return fire

    def _still_holds(self, trigger: Any) -> bool:
        state = self.runtime.state.get(trigger.entity)
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

    # -- firing a rule ---------------------------------------------------------------------

    def _fields(self, compiled: CompiledRule, event: Event, previous: Value = None) -> dict[str, Value]:
        return {
            "entity": event.entity, "value": event.value, "unit": event.unit, "previous": previous,
            "rule": compiled.id, "cause": event.id, "ts": event.ts,
        }

    def _note(self, compiled: CompiledRule, note: str) -> None:
        trace = self.runner.trace(compiled, "-", None)
        trace.result = "note"
        trace.notes = [note]
        self.traces.add(trace)
        self._traced()

    def _fire(self, compiled: CompiledRule, i: int, text: str, cause: str | None, fields: dict[str, Value]) -> None:
        rule, runtime = compiled.rule, compiled.runtime
        trace = self.runner.trace(compiled, text, cause)
        self.traces.add(trace)
        self._traced()
        now = self.runtime.events.clock.monotonic()
        if rule.cooldown and runtime.last_run is not None and now - runtime.last_run < rule.cooldown:
            trace.result = "cooldown"
            return
        ctx = CondContext(self.runtime.state, now, self.local_now(), self.alarm_state)
        if ctx.local is not None and not self._synced and compiled.conditions:
            trace.notes = ["wall clock not synchronised (policy 'run'): conditions used it as it is"]
        for check in compiled.conditions:
            ok = check(ctx)
            trace.conditions.append((check.text, ok))
            if not ok:
                trace.result = "conditions failed"
                if ctx.local is None and check.text.startswith(("time", "all", "any", "not")):
                    trace.notes = ["wall clock not synchronised: time conditions are false"]
                return
        self.runner.admit(compiled, text, cause, fields, trace)

    # -- what the CLI and health show -----------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Figures for health and ``gateway status``; ``chain_cuts`` per rule come from the dispatcher's guard."""
        cuts: Mapping[str, int] = getattr(self.runtime, "chains_cut_by_rule", {})
        return {
            "rules": len(self.compiled),
            "timers": len(self.timers.entries),
            "clock_synchronised": self._synced,
            "evaluations": self.evaluations,
            "per_rule": {rid: {"runs": c.runtime.runs, "chain_cuts": cuts.get(rid, 0),
                               "running": c.runtime.run is not None, "queued": len(c.runtime.queue)}
                         for rid, c in self.compiled.items()},
        }


def rules_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rule file is added, removed or edited."""
    entries = []
    try:
        for path in sorted(Path(directory).glob("*.toml")):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


def _range_text(trigger: m.NumericTrigger) -> str:
    parts = []
    if trigger.above is not None:
        parts.append(f"above {trigger.above:g}")
    if trigger.below is not None:
        parts.append(f"below {trigger.below:g}")
    return " and ".join(parts)
