"""Claims on outputs: the priority levels and the owners, as rules and controllers name them.

The arbiter that applies them is the application's (:mod:`gateway.authority`);
the vocabulary lives here so that rules and controllers can speak it without
importing the application.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from core.events import Value


class Level(IntEnum):
    """Claim priorities: a lower number wins (BACnet's convention)."""

    SAFETY = 1
    ALARM = 3
    OVERRIDE = 5
    CONTROLLER = 8
    RULES = 10


@dataclass(slots=True, frozen=True)
class Owner:
    """A controller that owns an output: its claims' level, and how long a hub override may last."""

    holder: str
    level: Level
    what: str
    """How a person names it: ``thermostat living_thermostat``."""
    override_s: float | None = None
    """None: hub commands to the output are refused. Seconds: they become override claims this long."""
    refusal: str = ""
    """What the hub should do instead, appended to a refusal (``disarm it with the code``)."""

    def refuses(self, entity: str) -> str:
        """The reason a claim on ``entity`` by anyone but this owner is refused (load time, the hub's edge,
        the arbiter: one wording)."""
        return f"{entity} is owned by {self.what}" + (f"; {self.refusal}" if self.refusal else "")


HUB = "hub"
"""The holder name of commands from the home hub (events with no ``rule``)."""
DRIVER_FAILED = "driver"
"""The holder name of the safety claim made when a driver fails."""


@dataclass(slots=True)
class Claim:
    holder: str
    level: Level
    value: Value
    seq: int
    cause: str | None
    expires: float | None = None

    def describe(self) -> str:
        return f"{holder_text(self.holder)} ({self.level.name.lower()}) {self.value!r}"


def holder_text(holder: str) -> str:
    if holder == HUB:
        return "the hub"
    if holder == DRIVER_FAILED:
        return "driver failure"
    return holder


class Outputs(Protocol):
    """What rules and controllers may ask of the outputs' arbiter (:class:`gateway.authority.Authority`)."""

    def __contains__(self, entity: str) -> bool: ...

    def set_owners(self, owners: Mapping[str, Owner], writers: Mapping[str, Level]) -> None: ...

    def release_holder(self, holder: str, why: str) -> None: ...

    def claim_of(self, entity: str, holder: str) -> Claim | None: ...

    def standing(self, entity: str, holder: str, level: Level = Level.RULES) -> str: ...

    def confirmed(self, entity: str) -> Value: ...
