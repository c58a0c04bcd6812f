"""Wiring: config in, a running gateway out. Behaviour lives in the modules it wires.

Start order matters for safety: actuators open in their safe state, the
rules are loaded before any driver posts, and MQTT connects in the background
so local rules work from the first second even with no broker.

Stop order: drivers stop first (actuators to their safe state, their last
events queued), the dispatcher processes what is left, then the MQTT bridge
flushes, publishes ``offline`` and disconnects.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from drivers.base import Actuator, Driver, DriverContext, EntitySpec, SimWorld
from gateway.bus import Bus
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.dispatcher import Dispatcher
from gateway.events import Event, EventFactory, Kind
from rules.engine import RuleEngine
from rules.loader import RulesError, load_rules

if TYPE_CHECKING:
    from gpiozero import Factory

log = logging.getLogger(__name__)


RECENT_FIRINGS = 20


class Forwarder(Protocol):
    def start(self) -> None: ...

    def forward(self, event: Event) -> None: ...

    def stop(self, timeout: float = 1.5) -> None: ...


def simulation_state_dir(gateway_id: str) -> Path:
    """Where ``--simulate`` keeps its outbox and timers: never the real device's state."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-gateway" / f"{gateway_id}-simulate"


class Gateway:
    def __init__(
        self,
        config: Config,
        *,
        simulate: bool = False,
        clock: Clock | None = None,
        pin_factory: Factory | None = None,
        open_serial: Callable[..., Any] | None = None,
        forwarder: Forwarder | None = None,
        mqtt: bool = True,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.simulate = simulate
        self.events = EventFactory(clock or SystemClock())
        self.bus = Bus(config.bus.capacity)
        self.drivers: list[Driver] = config.drivers()
        self.entities: dict[str, EntitySpec] = {s.id: s for d in self.drivers for s in d.entities()}
        actuators = {
            spec.id: driver for driver in self.drivers if isinstance(driver, Actuator) for spec in driver.entities()
        }
        self.forwarder = forwarder if forwarder is not None else (self._mqtt_bridge() if mqtt else None)
        self.firings: deque[Event] = deque(maxlen=RECENT_FIRINGS)
        """The latest commands rules issued, newest last (``gateway status``)."""
        self.dispatcher = Dispatcher(self.bus, self.events, actuators=actuators, forward=self._observe)
        self.engine = RuleEngine(load_rules(config.rules.dir, self.entities), self.dispatcher)
        self.dispatcher.reactor = self.engine
        self._rng = random.Random(seed)
        self._pin_factory = pin_factory
        self._open_serial = open_serial
        self._world: SimWorld | None = None
        self._simulators: list[Any] = []
        self._started: list[Driver] = []
        self.failed: dict[str, str] = {}
        """Devices that failed to start: id -> why."""

    def _mqtt_bridge(self) -> Forwarder:
        from gateway.mqtt.bridge import MqttBridge

        return MqttBridge(self.config, self.entities, self.bus.post, self.events)

    def start(self) -> None:
        """Open everything; returns once drivers run and rules are loaded (READY)."""
        self.config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
        if self.forwarder is not None:
            self.forwarder.start()
        ctx = self._driver_context()
        for driver in self.drivers:
            try:
                driver.start(ctx)
            except Exception as exc:
                log.exception("device %s failed to start; the others run on", driver.id)
                self.failed[driver.id] = str(exc) or type(exc).__name__
                self._stop_driver(driver)
                for spec in driver.entities():
                    self.bus.post(self.events.availability(spec.id, False, "driver failed to start"))
                continue
            self._started.append(driver)
        self.bus.post(self.events.make(Kind.SYSTEM, "gateway", "started"))
        log.info(
            "gateway %s started: %d devices, %d rules%s",
            self.config.gateway.id, len(self._started), len(self.engine.rules),
            " (simulated hardware)" if self.simulate else "",
        )

    def _driver_context(self) -> DriverContext:
        pin_factory = self._pin_factory
        if self.simulate and pin_factory is None:
            from gpiozero.pins.mock import MockFactory

            from gateway.simpins import ReleasedLevelPin

            pin_factory = MockFactory(pin_class=ReleasedLevelPin)
        open_serial = self._open_serial
        if self.simulate and pin_factory is not None:
            self._world = SimWorld(pin_factory, self._rng, self.dispatcher.state.value)
            self._start_simulators(self._world)
            open_serial = open_serial or self._simulated_serial_opener(self._world.serial_ports)
        return DriverContext(
            post=self.bus.post,
            events=self.events,
            pin_factory=pin_factory,
            open_serial=open_serial or _real_serial_opener,
            simulate=self.simulate,
            rng=self._rng,
        )

    def _start_simulators(self, world: SimWorld) -> None:
        for driver in self.drivers:
            simulator = driver.simulator()
            if simulator is not None:
                simulator.start(world)
                self._simulators.append(simulator)

    @staticmethod
    def _simulated_serial_opener(ports: Mapping[str, str]) -> Callable[..., Any]:
        def open_serial(url: str, **kwargs: Any) -> Any:
            return _real_serial_opener(ports.get(url, url), **kwargs)

        return open_serial

    def _observe(self, event: Event) -> None:
        """Every processed event, on the dispatcher thread: note rule firings, then forward."""
        if event.rule is not None and event.kind is Kind.COMMAND:
            self.firings.append(event)
        if self.forwarder is not None:
            self.forwarder.forward(event)

    @property
    def running(self) -> list[Driver]:
        """The devices started and not yet stopped."""
        return list(self._started)

    @property
    def simulated_pins(self) -> Factory | None:
        """The mock pin factory behind ``--simulate`` (None on real hardware)."""
        return self._world.pin_factory if self._world is not None else None

    def run(self, tick: float = 1.0) -> None:
        """Process events until :meth:`request_stop`; call from the main thread.

        ``tick`` bounds the time between the dispatcher's idle hooks (watchdog pings).
        """
        self.dispatcher.run(tick)

    def reload(self) -> bool:
        """Reload the rule files (SIGHUP); call on the dispatcher thread.

        All or nothing: the new set replaces the running engine only if every
        file is valid; otherwise every problem is logged and the old rules run on.
        """
        try:
            rules = load_rules(self.config.rules.dir, self.entities)
        except RulesError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error("reload refused: %d problem(s); the previous %d rules stay in force",
                      len(exc.problems), len(self.engine.rules))
            return False
        self.engine = RuleEngine(rules, self.dispatcher)
        self.dispatcher.reactor = self.engine
        self.bus.post(self.events.make(Kind.SYSTEM, "gateway", "reloaded"))
        log.info("reloaded %d rules from %s", len(self.engine.rules), self.config.rules.dir)
        return True

    def request_stop(self) -> None:
        self.dispatcher.stop()

    def shutdown(self, timeout: float = 1.5) -> None:
        """Actuators to safe state, remaining events forwarded, ``offline`` published."""
        self._announce_safe_states()
        for driver in reversed(self._started):
            self._stop_driver(driver)
        self._started.clear()
        for simulator in self._simulators:
            simulator.stop()
        self._simulators.clear()
        self.dispatcher.drain()
        if self.forwarder is not None:
            self.forwarder.stop(timeout)
        log.info("gateway %s stopped; actuators in their safe state", self.config.gateway.id)

    def _announce_safe_states(self) -> None:
        """Drive each actuator safe while it is still open, so its confirmed state reaches the hub."""
        for driver in self._started:
            if not isinstance(driver, Actuator):
                continue
            for spec in driver.entities():
                if spec.safe_value is None:
                    continue
                try:
                    confirmed = driver.apply(spec.id, spec.safe_value)
                except Exception:
                    log.exception("%s: could not reach its safe state", spec.id)
                    continue
                self.bus.post(self.events.make(Kind.STATE, spec.id, confirmed, detail="shutdown"))

    @staticmethod
    def _stop_driver(driver: Driver) -> None:
        try:
            driver.stop()
        except Exception:
            log.exception("device %s failed to stop cleanly", driver.id)
            if isinstance(driver, Actuator):
                driver.to_safe_state()


def _real_serial_opener(url: str, **kwargs: Any) -> Any:
    import serial

    return serial.serial_for_url(url, **kwargs)
