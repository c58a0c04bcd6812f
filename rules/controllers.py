"""What the thermostat and alarm controllers share with the engine.

A controller owns one or more entities (its commands come to it) and
outputs (a thermostat's heater, an alarm's siren: it alone claims them, see
:mod:`gateway.authority`), watches others (its sensors and its outputs'
confirmed states), may ask for wall-clock schedules, and keeps a little
state that must survive a restart (:meth:`Controller.snapshot` /
``restore``). It acts only through the host: ``emit``/``command`` on the
dispatcher, timers in the persisted :class:`~rules.timers.TimerTable`.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from core.claims import Level, Outputs, Owner
from core.events import Event, EventFactory, Value
from core.state import StateStore
from rules import model as m
from rules.schedule import Job
from rules.timers import Pending, TimerHandle, TimerTable


class Poster(Protocol):
    """The bus as seen from any thread: ``post`` an event for the dispatcher to process in order."""

    def post(self, event: Event) -> None: ...


class Runtime(Protocol):
    """What the engine and controllers need of the dispatcher (:class:`gateway.dispatcher.Dispatcher`)."""

    events: EventFactory
    state: StateStore

    @property
    def outputs(self) -> Outputs: ...

    @property
    def bus(self) -> Poster:
        """Where the engine posts what must run on the dispatcher thread: its start, a reload, the schedules."""

    @property
    def chains_cut_by_rule(self) -> Mapping[str, int]:
        """Rule chains cut at the dispatcher's depth limit, by rule id (for :meth:`RuleEngine.status`)."""

    def emit(self, event: Event) -> None: ...

    def command(self, entity: str, value: Value, *, rule: str | None = None, cause: str | None = None) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class Host(Protocol):
    runtime: Runtime
    timers: TimerTable
    tz: ZoneInfo

    def local_now(self) -> dt.datetime | None: ...

    def changed(self) -> None: ...


ControllerConfig = m.Thermostat | m.Alarm
"""What a rule file declares for a controller."""


class Controller(ABC):
    level: Level = Level.CONTROLLER
    """The priority of this controller's claims on the outputs it owns (gateway/authority.py)."""

    def __init__(self, host: Host, config: ControllerConfig, fingerprint: str) -> None:
        self.host = host
        self.config = config
        self.fingerprint = fingerprint

    @property
    def id(self) -> str:
        return self.config.id

    @abstractmethod
    def owned(self) -> set[str]:
        """Entities whose commands this controller answers."""

    @abstractmethod
    def watched(self) -> set[str]:
        """Entities whose readings, states and availability it wants."""

    def outputs(self) -> dict[str, Owner]:
        """The outputs this controller owns (a thermostat's heater): no one else may claim them."""
        return {}

    def jobs(self) -> list[tuple[int, Job]]:
        return []

    @abstractmethod
    def start(self, cause: str | None, restored: dict[str, Any] | None) -> None: ...

    @abstractmethod
    def handle(self, event: Event) -> None: ...

    @abstractmethod
    def command(self, event: Event) -> None: ...

    def on_schedule(self, index: int, event: Event) -> None:
        return None

    def restore_timer(self, entry: Pending, remaining: float) -> None:
        return None

    @abstractmethod
    def snapshot(self) -> dict[str, Any]: ...

    def reconfigure(self, config: ControllerConfig, fingerprint: str) -> None:
        self.config = config
        self.fingerprint = fingerprint

    def stop(self) -> None:
        self.host.timers.cancel_owner(self.id)

    def release(self, why: str) -> None:
        """The controller is gone (a reload removed it): its claims are relinquished, so its outputs
        return to their defaults (safe) unless another claim holds them."""
        self.host.runtime.outputs.release_holder(self.id, why)
