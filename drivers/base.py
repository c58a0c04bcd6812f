"""The driver contract: small enough to read in one screen.

A driver is built from its validated config model, declares the entities it
owns, and then::

    driver.start(ctx)     # open the hardware; post events with ctx.post(event)
    driver.apply(e, v)    # actuators only: set entity e to v, return the confirmed value
    driver.stop()         # release the hardware; actuators end in their safe state

Drivers know nothing of rules or MQTT. They get their hardware through the
seams in :class:`DriverContext` (a gpiozero pin factory, a serial opener, a
clock), so the same class runs on a Pi, on mock pins in ``--simulate`` and in
tests. ``start``/``stop`` are called from the gateway's main thread; ``apply``
only from the dispatcher thread. Callbacks from gpiozero or reader threads
must only build events and ``ctx.post`` them.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from drivers.envelope import EnvelopeConfig
from drivers.timing import Scheduler, ThreadScheduler
from gateway.clock import Clock
from gateway.events import Event, EventFactory, Value

if TYPE_CHECKING:
    from gpiozero import Factory
    from serial import SerialBase

log = logging.getLogger(__name__)


class Component(StrEnum):
    """What an entity is to the home hub (Home Assistant's component names)."""

    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"
    SWITCH = "switch"
    LIGHT = "light"
    SIREN = "siren"
    CLIMATE = "climate"
    """A thermostat (rules/thermostat.py): commands are a setpoint number or a mode name."""
    ALARM_CONTROL_PANEL = "alarm_control_panel"
    """An alarm (rules/alarm.py): commands are arm/disarm actions, with a code from the hub."""


WRITABLE_COMPONENTS = frozenset(
    {Component.SWITCH, Component.LIGHT, Component.SIREN, Component.CLIMATE, Component.ALARM_CONTROL_PANEL}
)


@dataclass(slots=True, frozen=True)
class EntitySpec:
    """One entity a driver owns: what it measures or drives, and its limits.

    The MQTT bridge derives discovery from it; the command validator derives
    what a hub may ask for (only writable entities, only values within
    ``minimum``/``maximum``); the rules loader checks rule files against it.
    """

    id: str
    component: Component
    unit: str | None = None
    device_class: str | None = None
    safe_value: Value = None
    default: Value = None
    """An output's value while no claim holds it (gateway/authority.py); None: ``safe_value``."""
    minimum: float | None = None
    maximum: float | None = None
    report_interval: float | None = None
    """Seconds between readings at most, when known: the hub's ``expire_after``."""
    options: tuple[str, ...] = ()
    """The words a controller takes as commands (lower case): a thermostat's modes and presets
    (``"heat"``, ``"off"``, ``"away"``...), an alarm panel's actions. Empty for everything else."""

    @property
    def writable(self) -> bool:
        return self.component in WRITABLE_COMPONENTS


def accepts(spec: EntitySpec, value: Value) -> str | None:
    """Why ``spec`` does not take ``value`` as a command, or None if it does.

    The one statement of the value each component takes, shared by the rules
    loader (a ``set`` as written in a rule file) and the hub's command
    validator (:mod:`gateway.mqtt.commands`, once the hub's ``ON``/``OFF`` words
    became booleans at that edge), so the two cannot drift apart:

    * switch, siren: ``true`` or ``false``;
    * light: ``true`` or ``false``; a dimmable one (with ``minimum``/``maximum``,
      e.g. ``gpio.pwm_light``'s 0..100 %) also a brightness within them;
    * climate (a thermostat): a setpoint within ``minimum``..``maximum`` (a number,
      or text that reads as one, which the thermostat accepts), or one of its
      ``options`` (mode or preset; any case);
    * alarm control panel: one of its ``options`` (``arm_away``...);
    * sensor, binary sensor: nothing: they cannot be commanded.

    Words are never booleans here: ``"OFF"`` for a switch is refused, so no rule
    can say "off" and have a safety check read the non-empty string as on.
    The reason starts with the entity, e.g. ``'heater' is a switch: use true or
    false, not "OFF"``.
    """
    judge = _TAKES.get(spec.component)
    if judge is None:
        return f"{spec.id!r} is a {spec.component}, it cannot be commanded"
    return judge(spec, value)


def _switch(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, bool):
        return None
    return f"{spec.id!r} is a {spec.component}: use true or false, not {_shown(value)}"


def _light(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, bool):
        return None
    if spec.minimum is None and spec.maximum is None:
        return f"{spec.id!r} is an on/off light: use true or false, not {_shown(value)}"
    if _number_within(value, spec) is None:
        return None
    low, high = _bounds(spec)
    return f"{spec.id!r} is a dimmable light: use true, false or a brightness {low}..{high}, not {_shown(value)}"


def _thermostat(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, str) and value.strip().lower() in spec.options:
        return None
    wrong = _number_within(_numeric_text(value), spec)
    if wrong is None:
        return None
    low, high = _bounds(spec)
    if wrong == "outside":
        return f"{spec.id!r} is a thermostat: setpoint {_shown(value)} is outside its limits {low}..{high}"
    return (f"{spec.id!r} is a thermostat: use a setpoint {low}..{high} or one of {', '.join(spec.options)}, "
            f"not {_shown(value)}")


def _alarm(spec: EntitySpec, value: Value) -> str | None:
    if isinstance(value, str) and value.strip().lower() in spec.options:
        return None
    return f"{spec.id!r} is an alarm: use one of {', '.join(spec.options)}, not {_shown(value)}"


_TAKES: dict[Component, Callable[[EntitySpec, Value], str | None]] = {
    Component.SWITCH: _switch,
    Component.SIREN: _switch,
    Component.LIGHT: _light,
    Component.CLIMATE: _thermostat,
    Component.ALARM_CONTROL_PANEL: _alarm,
}
"""What each writable component takes; a component not here (a sensor) takes nothing."""


def _shown(value: Value) -> str:
    """A value as the installer would write it in a rule file (``"OFF"``, ``true``, ``50``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False)


def _bounds(spec: EntitySpec) -> tuple[str, str]:
    low = "" if spec.minimum is None else f"{spec.minimum:g}"
    high = "" if spec.maximum is None else f"{spec.maximum:g}"
    return low, high


def _numeric_text(value: Value) -> Value:
    """Text that reads as a finite number becomes that number (a thermostat reads ``"21"`` as 21)."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _number_within(value: Value, spec: EntitySpec) -> str | None:
    """None if ``value`` is a finite number (not a boolean) within the spec's limits; else
    ``"outside"`` (a number beyond them) or ``"not a number"``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "not a number"
    if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
        return "outside"
    return None


SerialOpener = Callable[..., "SerialBase"]
"""``open_serial(url, baudrate=..., timeout=...)``: ``serial.serial_for_url`` or a stand-in."""


@dataclass(slots=True)
class DriverContext:
    """Everything a driver may touch outside itself."""

    post: Callable[[Event], None]
    events: EventFactory
    pin_factory: Factory | None = None
    open_serial: SerialOpener | None = None
    simulate: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    resolve_path: Callable[[str], str] = lambda path: path
    """Maps a configured filesystem path (1-wire ``base_path``) to where it really is: ``--simulate``
    passes ``lambda p: world.files.get(p, p)`` so drivers read the simulators' fake trees."""
    fail: Callable[[str], None] = lambda reason: log.error("driver failure (no supervisor): %s", reason)
    """A driver calls this (from any thread) when it can no longer work; the supervisor restarts it."""
    scheduler: Scheduler | None = None
    """Timers (conditioning, staleness, polling). None: a :class:`ThreadScheduler` is made on first use."""
    _own_scheduler: ThreadScheduler | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def clock(self) -> Clock:
        return self.events.clock

    def timers(self) -> Scheduler:
        """The scheduler drivers use; one timer thread per context, started only if a driver needs it.

        Safe from any thread (the first call may come from a gpiozero callback).
        """
        with self._lock:
            if self.scheduler is None:
                self._own_scheduler = ThreadScheduler(self.clock)
                self.scheduler = self._own_scheduler
            return self.scheduler

    def close(self) -> None:
        """Join the timer thread this context made, if any (call after the drivers using it stopped)."""
        with self._lock:
            own, self._own_scheduler = self._own_scheduler, None
            if own is not None:
                self.scheduler = None
        if own is not None:
            own.close()


class DeviceConfig(BaseModel):
    """Fields every device has; each driver's model adds its own and a ``driver`` literal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    driver: str
    """The registry name; each driver's model narrows it to a ``Literal``."""
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    name: str | None = None
    """Human name shown by the hub; defaults to the id."""


class Driver(ABC):
    """A sensor or actuator driver. Subclasses set ``Config`` and implement the hooks."""

    Config: ClassVar[type[DeviceConfig]]

    def __init__(self, config: Any) -> None:
        self.config = config

    @property
    def id(self) -> str:
        return str(self.config.id)

    @abstractmethod
    def entities(self) -> Sequence[EntitySpec]:
        """The entities this device owns; stable for the life of the config."""

    @abstractmethod
    def start(self, ctx: DriverContext) -> None:
        """Open the hardware and begin posting events."""

    @abstractmethod
    def stop(self) -> None:
        """Release the hardware; idempotent. Actuators end in their safe state."""


    def simulator(self) -> Simulator | None:
        """The simulated world behind this device in ``--simulate``, or None if it needs none."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters for health: what was dropped, refused or retried (malformed frames, CRC errors...)."""
        return {}


class Simulator(ABC):
    """The physical world behind one device in ``gateway run --simulate``.

    It never replaces the driver: it drives the driver's mock pins or writes
    protocol-correct bytes into the port the driver reads, so the real driver
    and parser code run. Simulators are seeded (``world.rng``) and deterministic.
    """

    @abstractmethod
    def start(self, world: SimWorld) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...


@dataclass(slots=True)
class SimWorld:
    """What simulators share: the mock pins, a seeded RNG, and the house's current state."""

    pin_factory: Factory
    rng: random.Random
    state: Callable[[str], Value]
    """The current value of any entity (e.g. the heater relay, for a thermal model)."""
    serial_ports: dict[str, str] = field(default_factory=dict)
    """Configured port URL -> the pseudo-terminal a serial simulator speaks on."""
    files: dict[str, str] = field(default_factory=dict)
    """Configured filesystem path (1-wire ``base_path``) -> the fake tree a simulator writes."""


class Actuator(Driver):
    """A driver that can be commanded."""

    @abstractmethod
    def apply(self, entity: str, value: Value) -> Value:
        """Drive ``entity`` to ``value`` (already validated) and return what the hardware now is."""

    @abstractmethod
    def to_safe_state(self) -> None:
        """Drive every output to its declared safe state; must not raise if the hardware is gone."""

    def envelope(self) -> Mapping[str, EnvelopeConfig]:
        """Safety limits per entity, enforced by the dispatcher's :class:`~gateway.authority.Authority`."""
        return {}


class DriverError(Exception):
    """A driver could not do its job; the gateway isolates and restarts it."""
