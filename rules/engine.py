"""The rules engine: the rule set in force, its controllers, and their life across reloads and restarts.

The engine never touches hardware and never imports MQTT: it asks the
dispatcher (its :class:`Runtime`) for commands and events, and the dispatcher
applies them on the same thread. All of it runs on the dispatcher thread, so
nothing here needs a lock. Its parts, each in its own module:

* :mod:`rules.triggers`: the rules indexed by what makes them fire, and whether an event does;
* :mod:`rules.runs`: cooldown, conditions, ``mode``, and the actions (delays, pulses);
* :mod:`rules.hosting`: the thermostats and alarms;
* :mod:`rules.timers`: every pending ``for``, delay, pulse and alarm delay, persisted;
* :mod:`rules.persistence`: the state and traces files; :mod:`rules.traces`: the traces;
* :mod:`rules.wallclock`: whether the wall clock is trusted; :mod:`rules.schedule`: the schedules;
* :mod:`rules.watcher`: reload when a rule file changes.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from core.clock import VirtualClock
from core.events import K_AVAILABILITY, K_COMMAND, K_SYSTEM, K_TIMER, PUBLISH_ENTITY, Event, Kind, Value
from rules import model as m
from rules.controllers import Runtime
from rules.hosting import Controllers
from rules.loader import LoadedRule, RuleSet
from rules.persistence import STATE_FILE, EngineState, StateFiles
from rules.runs import CompiledRule, Run, Runner
from rules.schedule import ApsSchedules, Schedules, VirtualSchedules, clock_synchronised
from rules.timers import Pending, TimerKey, TimerTable, anchor, elapsed_since
from rules.traces import TraceStore
from rules.triggers import Triggers
from rules.wallclock import WallClock
from rules.watcher import WATCH_INTERVAL, RuleFilesWatcher

log = logging.getLogger(__name__)

__all__ = ["ENGINE_ENTITY", "PUBLISH_ENTITY", "STATE_FILE", "ReloadReport", "RuleEngine", "Runtime"]

ENGINE_ENTITY = "rules"
"""SYSTEM events the engine posts to itself: value ``started`` or ``reload``."""
CLOCK_POLL = 30.0
"""Seconds between checks of the wall clock (:meth:`WallClock.poll`)."""
_WATCHED = frozenset({Kind.READING, Kind.STATE, Kind.ALARM})
"""Kinds whose value a `state` or `numeric` trigger watches (ALARM: an alarm's state, e.g. `to = "triggered"`)."""


@dataclass(slots=True, frozen=True)
class ReloadReport:
    added: list[str]
    changed: list[str]
    removed: list[str]
    kept: int

    @classmethod
    def between(cls, old: Mapping[str, CompiledRule], ruleset: RuleSet) -> ReloadReport:
        added = [r.rule.id for r in ruleset.rules if r.rule.id not in old]
        changed = [r.rule.id for r in ruleset.rules if r.rule.id in old and old[r.rule.id].fingerprint != r.fingerprint]
        new_ids = {r.rule.id for r in ruleset.rules}
        removed = [rule_id for rule_id in old if rule_id not in new_ids]
        return cls(added, changed, removed, len(ruleset.rules) - len(added) - len(changed))

    def __str__(self) -> str:
        return (f"rules reloaded: {len(self.added)} added {self.added}, {len(self.changed)} changed {self.changed}, "
                f"{len(self.removed)} removed {self.removed}, {self.kept} unchanged")


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
        clock = runtime.events.clock
        self._virtual_clock = isinstance(clock, VirtualClock)
        self.schedules = schedules or (VirtualSchedules(runtime, self.tz) if self._virtual_clock
                                       else ApsSchedules(runtime.bus.post, runtime.events, self.tz))
        self.wall = WallClock(clock, self.tz, unsynced_clock,
                              clock_check or ((lambda: True) if self._virtual_clock else clock_synchronised),
                              self.schedules)
        self.traces = TraceStore(trace_size)
        self.files = StateFiles(state_dir, runtime, self.snapshot, self.traces, self.tz)
        self.timers = TimerTable(runtime, clock, on_change=self.changed)
        self.controllers = Controllers(self)
        # A lambda, not a bound lookup: a reload replaces the index.
        self.runner = Runner(runtime, self.timers, self.traces, self.wall,
                             lambda rule_id: self.compiled.get(rule_id),  # noqa: PLW0108
                             alarm_state=self.alarm_state, traced=self.files.traced)
        self.triggers = Triggers(self.timers, runtime.state, self.tz, self.runner.fire, self.runner.note)
        self.virtual_values: dict[str, Value] = {}
        self._ruleset = rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules))
        self._pending_ruleset: RuleSet | None = None
        self.triggers.load(self._ruleset)
        self._watcher: RuleFilesWatcher | None = None
        self._started = False
        self._stopped = False

    # -- what the application, tests and health read ------------------------------------------

    @property
    def ruleset(self) -> RuleSet:
        """The rule set in force (its ``entities()`` are what MQTT discovery and commands need)."""
        return self._ruleset

    @property
    def compiled(self) -> dict[str, CompiledRule]:
        """Rule id -> compiled rule (with its runtime state)."""
        return self.triggers.index.rules

    @property
    def rules(self) -> list[m.Rule]:
        """The running rules (enabled ones), in file order."""
        return [compiled.rule for compiled in self.compiled.values()]

    @property
    def virtuals(self) -> dict[str, m.Virtual]:
        return self.triggers.index.virtuals

    @property
    def evaluations(self) -> int:
        """Triggers examined: the cost of the rule set per event (for the scale test and health)."""
        return self.triggers.evaluations

    @property
    def unsynced_clock(self) -> Literal["wait", "run"]:
        return self.wall.policy

    def status(self) -> dict[str, Any]:
        """Figures for health and ``gateway status``; ``chain_cuts`` per rule come from the dispatcher's guard."""
        cuts = self.runtime.chains_cut_by_rule
        return {
            "rules": len(self.compiled),
            "timers": len(self.timers.entries),
            "clock_synchronised": self.wall.synced,
            "evaluations": self.evaluations,
            "per_rule": {rid: {"runs": c.runtime.runs, "chain_cuts": cuts.get(rid, 0),
                               "running": c.runtime.run is not None, "queued": len(c.runtime.queue)}
                         for rid, c in self.compiled.items()},
        }

    # -- the host controllers use (rules.controllers.Host) ---------------------------------------

    def local_now(self) -> dt.datetime | None:
        """Local wall time, or None while the clock is not trusted (policy ``wait``)."""
        return self.wall.local_now()

    def changed(self) -> None:
        """Timers or restorable state changed: write the state file soon (coalesced)."""
        self.files.changed()

    def alarms(self) -> set[str]:
        return self.controllers.alarms()

    def alarm_state(self, alarm: str) -> str | None:
        return self.controllers.alarm_state(alarm)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Begin: the restore and the ``start`` triggers run on the dispatcher thread (posted via the bus)."""
        self.runtime.bus.post(self.runtime.events.make(Kind.SYSTEM, ENGINE_ENTITY, "started",
                                                       detail="rules engine started"))

    def reload(self, ruleset: RuleSet) -> None:
        """Swap a validated rule set in on the dispatcher thread (load it first: a :class:`RulesError` there
        leaves the old rules in force). From any thread."""
        self._pending_ruleset = ruleset
        self.runtime.bus.post(self.runtime.events.make(Kind.SYSTEM, ENGINE_ENTITY, "reload",
                                                       detail=ruleset.summary()))

    def watch(self, directory: Path, load: Callable[[], RuleSet], interval: float = WATCH_INTERVAL) -> None:
        """Reload with ``load()`` when a rule file in ``directory`` changes (checked every ``interval`` s on the
        dispatcher's timers). Call before the dispatcher runs (polling begins when the engine starts) or on
        its thread. A broken set is reported once per change and the running rules stay."""
        self._watcher = RuleFilesWatcher(directory, load, self.replace, self.runtime, interval,
                                         in_force=lambda: len(self.compiled), stopped=lambda: self._stopped)
        if self._started:
            self._watcher.start()

    def stop(self) -> None:
        """Stop the scheduler and save timers, state and traces (call after the dispatcher stopped)."""
        self.schedules.stop()
        if self._started:
            self.files.save()
        self._stopped = self.files.closed = True

    def replace(self, ruleset: RuleSet) -> ReloadReport:
        """Swap in a validated rule set at once; timers and state of unchanged rules are kept.

        Call on the dispatcher thread (an event handler, a timer or an idle hook such as SIGHUP's).
        """
        report = ReloadReport.between(self.compiled, ruleset)
        self._let_go_of(report.changed, "changed by a reload")
        self._let_go_of(report.removed, "removed by a reload")
        self._ruleset = ruleset
        self.triggers.load(ruleset)
        fresh = self.controllers.replace(ruleset)
        self._install_schedules()
        if self._started:
            for controller in fresh:
                controller.start(None, None)
            self._start_new_virtuals()
        log.debug("%s", report)  # the house log says it once, at INFO (gateway/houselog.py)
        self.changed()
        # Visible to the hub, and it makes the dispatcher process what this swap emitted
        # (safe states of removed controllers) even when called from an idle hook.
        self.runtime.bus.post(self.runtime.events.make(Kind.SYSTEM, ENGINE_ENTITY, "reloaded", detail=str(report)))
        return report

    def _let_go_of(self, rule_ids: list[str], why: str) -> None:
        """Rules that a reload changed or removed lose their timers and their claims on outputs."""
        for rule_id in rule_ids:
            self.timers.cancel_owner(rule_id)
            self.runtime.outputs.release_holder(rule_id, why)

    def _install_schedules(self) -> None:
        self.schedules.replace(self.triggers.index.jobs + self.controllers.jobs)

    def _start_new_virtuals(self) -> None:
        for virtual_id, virtual in self.virtuals.items():
            if virtual_id not in self.virtual_values:
                self._set_virtual(virtual_id, virtual.initial, None, None)

    def _on_started(self, event: Event) -> None:
        if self._started:
            return
        self._started = True
        saved = self.files.read()
        self._poll_clock()
        self.controllers.replace(self._ruleset)
        self._install_schedules()
        restored = virtuals if isinstance(virtuals := saved.get("virtuals"), dict) else {}
        for virtual_id, virtual in self.virtuals.items():
            value = restored.get(virtual_id, virtual.initial) if virtual.restore else virtual.initial
            self._set_virtual(virtual_id, value, None, event.id)
        snapshots = states if isinstance(states := saved.get("controllers"), dict) else {}
        for controller in self.controllers.by_id.values():
            state = snapshots.get(controller.id)
            controller.start(event.id, state if isinstance(state, dict) else None)
        self._restore_timers(saved)
        if self._watcher is not None:
            self._watcher.start()
        self.triggers.on_start(event)

    def _poll_clock(self) -> None:
        self.wall.poll()
        if not self._virtual_clock and not self._stopped:
            self.runtime.call_later(CLOCK_POLL, self._poll_clock)

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        kind = event.kind
        if kind in _WATCHED:
            if event.entity in self.controllers.watching:  # most readings: no controller watches the entity
                self.controllers.notify(event)
            self.triggers.on_value(event)
        elif kind is K_AVAILABILITY:
            self.controllers.notify(event)
            self.triggers.on_availability(event)
        elif kind is K_COMMAND:
            self._command(event)
        elif kind is K_TIMER:
            if not self.triggers.on_schedule(event):
                self.controllers.on_schedule(event)
        elif kind is K_SYSTEM and event.entity in (ENGINE_ENTITY, "gateway"):
            if event.value == "started":
                self._on_started(event)
            elif event.value == "reload" and self._pending_ruleset is not None:
                ruleset, self._pending_ruleset = self._pending_ruleset, None
                self.replace(ruleset)

    def _command(self, event: Event) -> None:
        entity = event.entity
        controller = self.controllers.owner_of(entity) if self._started else None
        if controller is not None:
            controller.command(event)
        elif entity in self.virtuals:
            self._set_virtual(entity, event.value, event.rule, event.id)
        self.triggers.on_command(event)

    def _set_virtual(self, entity: str, value: Value, rule: str | None, cause: str | None) -> None:
        self.virtual_values[entity] = value
        self.runtime.emit(self.runtime.events.make(Kind.STATE, entity, value, rule=rule, cause=cause))
        if self.virtuals[entity].restore:
            self.changed()

    # -- persistence -------------------------------------------------------------------------

    def snapshot(self) -> EngineState:
        return {
            "version": 1,
            "anchor": anchor(self.runtime.events.clock),
            "timers": self.timers.snapshot(),
            "virtuals": {vid: value for vid, value in self.virtual_values.items()
                         if vid in self.virtuals and self.virtuals[vid].restore},
            "controllers": self.controllers.snapshot(),
        }

    def save(self) -> None:
        """Write the state and traces files now (at stop)."""
        self.files.save()

    def _restore_timers(self, saved: Mapping[str, Any]) -> None:
        timers = saved.get("timers")
        if not isinstance(timers, list):
            return
        away = elapsed_since(saved.get("anchor") or {}, self.runtime.events.clock)
        for item in timers:
            try:
                self._restore_timer(item, away)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                log.warning("dropping unreadable saved timer %r: %s", item, exc)

    def _restore_timer(self, item: Mapping[str, Any], away: float) -> None:
        """Re-arm one saved timer under the restart policy of docs/rules.md: resume, fire late, or drop."""
        key, owner = TimerKey.parse(str(item["key"])), str(item["owner"])
        remaining = float(item["remaining"]) - away
        entry = Pending(key, owner, str(item["fingerprint"]), 0.0, dict(item.get("data") or {}))
        controller = self.controllers.by_id.get(owner)
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
            self.runner.note(compiled, f"timer {key} dropped after restart: missed by {-remaining:.0f}s")
            return
        delay = max(0.0, remaining)
        match key.kind:
            case "hold" if key.index is not None:
                self.timers.arm(key, owner, entry.fingerprint, delay, entry.data,
                                self.triggers.hold_fired(owner, key.index))
            case "pulse":
                self.timers.arm(key, owner, entry.fingerprint, delay, entry.data, self.runner.pulse_fired(owner))
            case "run":
                trace = self.runner.trace(compiled, "resumed after restart", entry.data.get("cause"))
                trace.result = "ran"
                run = Run(entry.data.get("cause"), dict(entry.data.get("fields") or {}), int(entry.data["index"]),
                          trace)
                self.traces.add(trace)
                compiled.runtime.run = run
                self.timers.arm(key, owner, entry.fingerprint, delay, entry.data, self.runner.resume(owner, run))
        log.info("restored timer %s (%s)", key, "due now" if remaining <= 0 else f"{remaining:.0f}s left")

