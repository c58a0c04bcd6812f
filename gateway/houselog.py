"""The log a person reads: one line per thing that happened in the house.

One observer of every processed event (``Gateway._observe``, on the
dispatcher thread) turns the events that matter to the people in the house
into one line each, under the logger ``house``, at INFO (WARNING for what
needs a look)::

    house: alarm house_alarm: arming (by the hub)
    house: alarm house_alarm: armed_away (by the hub)
    house: alarm house_alarm: pending (front_door active while armed_away: entry delay)
    house: alarm house_alarm: triggered (entry delay over without disarm)
    house: siren: ON (alarm house_alarm: entry delay over without disarm)
    house: alarm house_alarm: disarmed (by the hub)
    house: siren: off (alarm house_alarm: disarmed)
    house: hub command hall_light on: done
    house: hub command heater on: refused: heater is owned by thermostat living ...
    house: rules reloaded: 1 added ['porch'], 0 changed [], 0 removed [], 2 unchanged
    house: rules: reload REFUSED: 2 problems; the rules in force stay: rules.d/x.toml: ...
    house: fail-safe: thermostat living: sensor living_temperature silent for 10m
    house: fail-safe: device heater failed: apply failed: ...; restarting in 1 s
    house: fail-safe: heater off (maximum on time reached: released living)

Everything else (readings, the lights rules switch, timers) stays at DEBUG:
the log of a quiet day is a few lines. Each line comes from the event itself
(its ``detail``, its ``cause``), so it says what the hub and the traces say.

It also keeps the result of the last rule reload (:attr:`HouseLog.last_reload`,
from the ``reloaded`` and ``reload_refused`` SYSTEM events whichever way the
reload came: SIGHUP or a changed file), for ``gateway status`` and the MQTT
health report.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.entities import Component, EntitySpec
from core.events import K_ALARM, K_COMMAND, K_READING, K_REJECTED, K_STATE, K_SYSTEM, PUBLISH_ENTITY, Event, Value
from core.values import is_on
from rules.watcher import RELOAD_REFUSED, RULES_ENTITY, refusal_problems

log = logging.getLogger("house")

REMEMBERED = 256
"""Commands remembered to name the cause of what follows them (a bounded window: older ones are forgotten)."""
ENVELOPE = "envelope"
"""The ``rule`` of a STATE the safety envelope caused (``gateway.authority``: the maximum on time)."""
_LIFECYCLE = frozenset({"gateway", RULES_ENTITY, "publish"})
"""SYSTEM entities that are not devices."""


@dataclass(slots=True, frozen=True)
class ReloadResult:
    """The last rule reload: ``ok`` or ``refused``, when (wall clock), and why not."""

    result: str
    at: float
    count: int = 0
    """Problems in all (``problems`` holds at most the first 20)."""
    problems: tuple[str, ...] = ()
    summary: str = ""

    def report(self) -> dict[str, Any]:
        """For ``gateway status`` and the MQTT health report (JSON)."""
        return {"result": self.result, "at": self.at, "count": self.count, "problems": list(self.problems),
                "summary": self.summary}


@dataclass(slots=True, frozen=True)
class _Command:
    entity: str
    value: Value
    rule: str | None
    detail: str | None


def _onoff(value: Value) -> str:
    return "ON" if is_on(value) else "off"


def _said(value: Value) -> str:
    if value is None:
        return "release"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class HouseLog:
    """See the module docstring. ``entities()`` tells what each entity is (a siren...), as the house has it now
    (the gateway's entities change with a reload)."""

    def __init__(self, entities: Callable[[], Mapping[str, EntitySpec]],
                 add_health_source: Callable[[str, Callable[[], Mapping[str, object]]], None] | None = None) -> None:
        self._entities = entities
        self._commands: OrderedDict[str, _Command] = OrderedDict()
        self._hub: set[str] = set()
        """Hub commands whose outcome is not logged yet."""
        self._alarms: set[str] = set()
        self._thermostats: set[str] = set()
        self._faults: set[str] = set()
        self._outputs: dict[str, Value] = {}
        self.last_reload: ReloadResult | None = None
        if add_health_source is not None:
            add_health_source("rules", self._health)

    def _health(self) -> Mapping[str, object]:
        last = self.last_reload
        return {"last_reload": None if last is None else last.report()}

    # -- the observer ---------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """One processed event (dispatcher thread). Never raises into the dispatcher: a line is not worth it.

        A reading is never described, nor a rule's publish request (a system event :func:`_system` says nothing
        of): they return here, before the guard and the dispatch on their kind (readings are the flood, and every
        second one fires an alarm in issue 14's workload)."""
        kind = event.kind
        if kind is K_READING or (kind is K_SYSTEM and event.entity == PUBLISH_ENTITY):
            return
        try:
            self._observe(event)
        except Exception:
            log.exception("house log: could not describe %s %s", event.kind, event.entity)

    def _observe(self, event: Event) -> None:
        kind = event.kind
        if kind is K_COMMAND:
            self._command(event)
        elif kind is K_ALARM:
            self._alarm(event)
        elif kind is K_STATE:
            self._state(event)
        elif kind is K_REJECTED:
            self._rejected(event)
        elif kind is K_SYSTEM:
            self._system(event)

    def _command(self, event: Event) -> None:
        self._commands[event.id] = _Command(event.entity, event.value, event.rule, event.detail)
        while len(self._commands) > REMEMBERED:
            old, _ = self._commands.popitem(last=False)
            self._hub.discard(old)
        if event.rule is None:
            self._hub.add(event.id)
            log.debug("hub command %s %s", event.entity, _said(event.value))

    def _origin(self, cause: str | None) -> tuple[str | None, _Command | None]:
        """Who caused an event whose ``cause`` is a command: ``the hub``, ``alarm x``, ``rule y``..."""
        command = self._commands.get(cause or "")
        if command is None:
            return None, None
        rule = command.rule
        if rule is None:
            return "the hub", command
        if rule in self._alarms:
            return f"alarm {rule}", command
        if rule in self._thermostats:
            return f"thermostat {rule}", command
        return f"rule {rule}", command

    def _alarm(self, event: Event) -> None:
        self._alarms.add(event.entity)
        origin, _ = self._origin(event.cause)
        if event.cause is not None and event.cause in self._hub:
            self._hub.discard(event.cause)  # the alarm's line is the hub command's outcome
        why = f"by {origin}" if origin is not None else (event.detail or "")
        level = logging.WARNING if event.value == "triggered" else logging.INFO
        log.log(level, "alarm %s: %s%s", event.entity, event.value, f" ({why})" if why else "")

    def _state(self, event: Event) -> None:
        entity = event.entity
        if event.rule is not None and entity == f"{event.rule}_action":
            self._thermostat(event.rule, event)
        self._hub_outcome(event, "done")
        spec = self._entities().get(entity)
        if spec is None or not spec.writable:
            return
        before = self._outputs.get(entity, event.value)
        self._outputs[entity] = event.value
        changed = is_on(before) != is_on(event.value)
        reason = (event.detail or "").split("; ")[0]
        if event.rule == ENVELOPE and changed:
            if spec.component is Component.SIREN:
                log.warning("%s: %s (fail-safe: %s)", entity, _onoff(event.value), reason)
            else:
                log.warning("fail-safe: %s %s (%s)", entity, _onoff(event.value), reason)
        elif spec.component is Component.SIREN and changed:
            origin, command = self._origin(event.cause)
            why = origin or reason or "its driver"
            if command is not None and command.detail and command.detail != "hub":
                why = f"{why}: {command.detail}"
            log.log(logging.WARNING if is_on(event.value) else logging.INFO, "%s: %s (%s)",
                    entity, _onoff(event.value), why)

    def _thermostat(self, thermostat: str, event: Event) -> None:
        self._thermostats.add(thermostat)
        if event.value == "fault" and thermostat not in self._faults:
            self._faults.add(thermostat)
            log.warning("fail-safe: thermostat %s: %s", thermostat, event.detail or "fault")
        elif event.value != "fault" and thermostat in self._faults:
            self._faults.discard(thermostat)
            log.info("thermostat %s: fault over: %s", thermostat, event.detail or event.value)

    def _hub_outcome(self, event: Event, outcome: str) -> None:
        cause = event.cause
        if cause is None or cause not in self._hub:
            return
        self._hub.discard(cause)
        command = self._commands[cause]
        asked = f"hub command {command.entity} {_said(command.value)}"
        if outcome == "done":
            result = "done" if event.entity == command.entity else f"done ({event.entity} {_said(event.value)})"
            log.info("%s: %s", asked, result)
        elif (event.detail or "").startswith("deferred"):
            log.info("%s: %s", asked, event.detail)  # the safety envelope holds it: news, not a fault
        else:
            log.warning("%s: %s", asked, event.detail or "refused")

    def _rejected(self, event: Event) -> None:
        if event.cause is None and event.rule is None and (event.detail or "").startswith("hub command rejected"):
            log.warning("hub command %s: %s", event.entity, (event.detail or "")[len("hub command "):])
            return
        self._hub_outcome(event, "refused")

    def _system(self, event: Event) -> None:
        entity, value = event.entity, event.value
        if entity == RULES_ENTITY:
            if value == "reloaded":
                self.last_reload = ReloadResult("ok", event.ts, summary=event.detail or "")
                log.info("%s", event.detail or "rules reloaded")
            elif value == RELOAD_REFUSED:
                count, problems = refusal_problems(event.detail)
                self.last_reload = ReloadResult("refused", event.ts, count, tuple(problems))
                log.warning("rules: reload REFUSED: %d problem%s; the rules in force stay: %s",
                            count, "" if count == 1 else "s", problems[0] if problems else "")
        elif entity not in _LIFECYCLE:
            if value == "failed":
                log.warning("fail-safe: device %s failed: %s", entity, event.detail or "")
            elif value == "running" and (event.detail or "").startswith("restart"):
                log.info("device %s running again (%s)", entity, event.detail)
