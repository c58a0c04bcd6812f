"""The controllers the rule files declare (thermostats, alarms), hosted for the engine.

:class:`Controllers` builds them from a rule set, keeps those a reload did not
change (a changed one is reconfigured in place: its state and timers stay),
stops and relinquishes the claims of those a reload removed, and indexes
which entities each one owns (its commands come to it) and watches. It tells
the outputs' arbiter which outputs belong to which controller and at what
level (gateway/authority.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from core.events import Event
from rules import model as m
from rules.alarm import AlarmController
from rules.controllers import Controller, Host
from rules.loader import RuleSet
from rules.schedule import Job

if TYPE_CHECKING:
    from rules.thermostat import ThermostatController


class Controllers:
    """The controllers in force, by id, and who owns and watches what."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.by_id: dict[str, Controller] = {}
        self.jobs: list[Job] = []
        """The controllers' wall-clock schedules (``schedule.<controller>.<n>``)."""
        self._owned: dict[str, Controller] = {}
        self.watching: dict[str, list[Controller]] = {}
        """Entity -> the controllers that watch it (read-only outside: the engine asks it before :meth:`notify`,
        a call less per reading of an entity no controller watches, issue 14)."""

    def replace(self, ruleset: RuleSet) -> list[Controller]:
        """Put ``ruleset``'s controllers in force; returns the new ones (not started: the caller starts them)."""
        built = self._build(ruleset)
        for controller_id, controller in self.by_id.items():
            if built.get(controller_id) is not controller:
                controller.stop()
                controller.release("removed from the rule files")
        fresh = [c for cid, c in built.items() if self.by_id.get(cid) is not c]
        self.by_id = built
        self._index()
        return fresh

    def _build(self, ruleset: RuleSet) -> dict[str, Controller]:
        controllers: dict[str, Controller] = {}
        for declared in ruleset.thermostats + ruleset.alarms:
            item = declared.item
            if not isinstance(item, m.Thermostat | m.Alarm):
                continue
            existing = self.by_id.get(item.id)
            kind: type[ThermostatController | AlarmController] = AlarmController
            if isinstance(item, m.Thermostat):
                # Imported here: a house without a thermostat never loads it (start-up, docs/performance.md).
                from rules.thermostat import ThermostatController

                kind = ThermostatController
            if isinstance(existing, kind):
                if existing.fingerprint != declared.fingerprint:
                    existing.reconfigure(item, declared.fingerprint)
                controllers[item.id] = existing
            elif isinstance(item, m.Thermostat):
                controllers[item.id] = ThermostatController(self.host, item, declared.fingerprint)
            elif isinstance(item, m.Alarm):
                controllers[item.id] = AlarmController(self.host, item, declared.fingerprint)
        return controllers

    def _index(self) -> None:
        owned: dict[str, Controller] = {}
        watching: dict[str, list[Controller]] = defaultdict(list)
        jobs: list[Job] = []
        for controller in self.by_id.values():
            for entity in controller.owned():
                owned[entity] = controller
            for entity in controller.watched():
                watching[entity].append(controller)
            jobs.extend(job for _, job in controller.jobs())
        self._owned = owned
        self.watching = dict(watching)
        self.jobs = jobs
        outputs = {entity: owner for controller in self.by_id.values()
                   for entity, owner in controller.outputs().items()}
        self.host.runtime.outputs.set_owners(outputs, {cid: c.level for cid, c in self.by_id.items()})

    # -- events -------------------------------------------------------------------------------

    def notify(self, event: Event) -> None:
        """A value or availability of an entity: to the controllers that watch it."""
        for controller in self.watching.get(event.entity, ()):
            controller.handle(event)

    def owner_of(self, entity: str) -> Controller | None:
        """The controller that answers commands to ``entity``, if any."""
        return self._owned.get(entity)

    def on_schedule(self, event: Event) -> None:
        """A TIMER event ``schedule.<controller>.<n>``."""
        parts = event.entity.split(".")
        if len(parts) == 3 and parts[0] == "schedule" and parts[1] in self.by_id and parts[2].isdigit():
            self.by_id[parts[1]].on_schedule(int(parts[2]), event)

    # -- what conditions, persistence and the CLI ask -------------------------------------------

    def alarms(self) -> set[str]:
        return {cid for cid, controller in self.by_id.items() if isinstance(controller, AlarmController)}

    def alarm_state(self, alarm: str) -> str | None:
        controller = self.by_id.get(alarm)
        return controller.state if isinstance(controller, AlarmController) else None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {cid: controller.snapshot() for cid, controller in self.by_id.items()}
