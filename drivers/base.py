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

import logging
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeVar

from core.clock import Clock
from core.entities import EntitySpec
from core.events import Event, EventFactory, Value
from drivers.envelope import EnvelopeConfig
from drivers.timing import Scheduler, ThreadScheduler

if TYPE_CHECKING:
    from gpiozero import Factory
    from serial import SerialBase

log = logging.getLogger(__name__)


SerialOpener = Callable[..., "SerialBase"]
"""``open_serial(url, baudrate=..., timeout=...)``: ``serial.serial_for_url`` or a stand-in."""


@dataclass(slots=True)
class DriverContext:
    """Everything a driver may touch outside itself."""

    post: Callable[[Event], None]
    events: EventFactory
    post_many: Callable[[list[Event]], None] | None = None
    """Posts several events in order at once (the bus's :meth:`~gateway.bus.Bus.post_many`: one lock round);
    None: :meth:`post_all` posts them one by one."""
    pin_factory: Factory | None = None
    open_serial: SerialOpener | None = None
    simulate: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    resolve_path: Callable[[str], str] = lambda path: path
    """Maps a configured filesystem path (1-wire ``base_path``) to where it really is: ``--simulate``
    passes ``lambda p: world.files.get(p, p)`` so drivers read the simulators' fake trees."""
    fail: Callable[[str], None] = lambda reason: log.error("driver failure (no supervisor): %s", reason)
    """A driver calls this (from any thread) when it can no longer work; the supervisor restarts it."""
    state_dir: Path | None = None
    """Where a driver keeps what must survive a restart (a pulse meter's total); None: nowhere (tests)."""
    scheduler: Scheduler | None = None
    """Timers (conditioning, staleness, polling). None: a :class:`ThreadScheduler` is made on first use."""
    _own_scheduler: ThreadScheduler | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def clock(self) -> Clock:
        return self.events.clock

    def post_all(self, events: list[Event]) -> None:
        """Post ``events`` in their order, as one batch when the bus takes batches."""
        if self.post_many is not None:
            self.post_many(events)
        else:
            for event in events:
                self.post(event)

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
    """Fields every device has; each driver's model adds its own and a ``driver`` literal.

    ``defer_build`` (inherited): a driver's model builds its validator at first use, inside the union of
    the house's drivers (:func:`gateway.config.config_model`), not when its module is imported."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    driver: str
    """The registry name; each driver's model narrows it to a ``Literal``."""
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    name: str | None = None
    """Human name shown by the hub; defaults to the id."""
    manufacturer: str | None = Field(default=None, max_length=100)
    """Who made the device, for the hub's device page (Home Assistant's device registry)."""
    model: str | None = Field(default=None, max_length=100)
    """The device's model for the hub; defaults to the driver's name (``gpio.relay``)."""
    serial_number: str | None = Field(default=None, max_length=100)
    icon: str | None = Field(default=None, pattern=r"^[a-z]+:[a-z0-9-]+$", max_length=64)
    """The hub's icon (``mdi:radiator``) for this device's entities that have no device class."""

    def serial_port(self) -> str | None:
        """The serial port this device holds, if any: one owner per port (``drivers/board.py``), told
        without :mod:`drivers.board` importing every driver that may hold one."""
        return None

    # What the device takes from the board besides its pins, for the wiring checks of ``drivers/board.py``.
    # Each driver that holds one overrides its method, so the checks (run by ``gateway run`` too) need not
    # import the analog, I2C and 1-wire drivers of a house that has none (2.5 MB, 40 ms of start-up).

    def spi_select(self) -> int | None:
        """SPI0's chip select (0: CE0, 1: CE1) this device talks on, if it is an SPI chip."""
        return None

    def i2c_address(self) -> tuple[int, int] | None:
        """``(bus number, 7-bit address)`` of this device's I2C chip, if it is one."""
        return None

    def onewire_base(self) -> str | None:
        """The directory of the kernel's 1-wire devices this device reads, if it is a 1-wire sensor."""
        return None


C_co = TypeVar("C_co", bound=DeviceConfig, default=DeviceConfig, covariant=True)
"""A driver's config model. Covariant, so ``Relay`` (a ``Driver[GpioRelayConfig]``) is a ``Driver``
(``Driver[DeviceConfig]``, the default): lists and the registry hold any driver, still typed."""


class Driver(ABC, Generic[C_co]):
    """A sensor or actuator driver, typed by its config model: ``class Relay(Actuator[GpioRelayConfig])``.

    Subclasses set ``Config`` (the model the registry and ``config.toml`` validation use; the same
    class as ``C_co``) and implement the hooks.
    """

    Config: ClassVar[type[DeviceConfig]]

    def __init__(self, config: C_co) -> None:
        self._config = config

    @property
    def config(self) -> C_co:
        """The validated device table; frozen, so read-only here too."""
        return self._config

    @property
    def id(self) -> str:
        return self._config.id

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

    def correct(self, entity: str, value: Value) -> Value:
        """Set a ``correctable`` sensor (``EntitySpec.correctable``) to ``value``, already validated,
        and return what it now reads (a pulse meter's total set to the meter's own reading). Called
        on the dispatcher thread; only drivers that declare a correctable entity override it."""
        raise DriverError(f"{self.id}: {entity} cannot be corrected")

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


class Actuator(Driver[C_co]):
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
