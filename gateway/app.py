"""Wiring: config in, a running gateway out. Behaviour lives in the modules it wires.

Start order matters for safety: actuators open in their safe state, the
rules are loaded before any driver posts, and MQTT connects in the background
(started once the drivers have posted their safe states, so no hub command can
come before them) so local rules work from the first second even with no broker.
Nor do they depend on the state directory: one that cannot be written is logged
and the MQTT outbox then runs in memory (docs/mqtt.md).

Stop order: drivers stop first (actuators to their safe state, their last
events queued), the dispatcher processes what is left, then the MQTT bridge
flushes, publishes ``offline`` and disconnects.
"""

from __future__ import annotations

import gc
import logging
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from core.clock import Clock, SystemClock
from core.entities import EntitySpec
from core.events import K_COMMAND, K_READING, Event, EventFactory, Kind
from drivers.base import Actuator, Driver, DriverContext, SerialOpener, Simulator, SimWorld
from drivers.envelope import Envelope
from drivers.supervision import DeclaresRate, Status, Supervisor
from gateway.assembly import assemble, build_engine
from gateway.authority import outputs_of
from gateway.bus import Bus, rate_quotas
from gateway.config import Config
from gateway.controller_discovery import TopicNames, discovery_extras
from gateway.history import HISTORY_FILE, History
from gateway.houselog import HouseLog
from gateway.lastgood import save_outputs
from gateway.rulesets import load_ruleset
from rules.commands import LOCKOUT_FILE, CodeGuard, Validator, command_validators
from rules.discovery import bridge_entities, hub_view
from rules.loader import RulesError, RuleSet
from rules.watcher import refusal_event

if TYPE_CHECKING:
    from gpiozero import Factory
    from serial import SerialBase

    from gateway.remote_rules import RemoteRules

log = logging.getLogger(__name__)


def _effective(config: Config) -> Config:
    """``gateway.remote_rules.effective_config``, its module imported only by a gateway with ``[mqtt]
    remote_rules`` on: most never take a bundle over MQTT (start-up CPU, docs/performance.md)."""
    if not config.mqtt.remote_rules:
        return config
    from gateway.remote_rules import effective_config

    return effective_config(config)


RECENT_FIRINGS = 20


def declared_rates(drivers: Iterable[Driver]) -> dict[str, float]:
    """The readings a second each entity of a device that declares its rate may receive (a serial line brings
    one reading of each of its fields): the bus's quotas (``gateway.bus.rate_quotas``)."""
    return {spec.id: driver.expected_rate
            for driver in drivers if isinstance(driver, DeclaresRate) for spec in driver.entities()}


class Forwarder(Protocol):
    """Where every processed event goes (the MQTT bridge; a stand-in in tests). All it must do."""

    def start(self) -> None: ...

    def forward(self, event: Event) -> None: ...

    def stop(self, timeout: float = 1.5) -> None: ...


@runtime_checkable
class HubLink(Forwarder, Protocol):
    """A forwarder that speaks for the house to a hub (the MQTT bridge): after a rule reload it is told
    the entities, the controllers' hub commands and their discovery as the new rule set has them."""

    @property
    def topics(self) -> TopicNames: ...

    def update_registrations(
        self,
        entities: Mapping[str, EntitySpec],
        commands: Mapping[str, Validator],
        discovery: Iterable[tuple[str, str, Mapping[str, object]]],
    ) -> None: ...


HealthSource = Callable[[], Mapping[str, object]]
"""Called on the forwarder's own thread to add a section to its health reports: thread-safe and quick."""


@runtime_checkable
class HealthReporting(Protocol):
    """A forwarder that publishes health reports (the MQTT bridge, docs/mqtt.md): the gateway adds the
    drivers' health to them, and ``gateway status`` shows them (:meth:`gateway.service.Service.mqtt_health`)."""

    def health(self) -> Mapping[str, Any]:
        """The latest report: a JSON document."""
        ...

    def add_health_source(self, name: str, source: HealthSource) -> None: ...


class HardwareUnavailable(SystemExit):
    """The hardware ``run`` needs cannot be opened at all (no GPIO pin factory loads).

    A ``SystemExit`` with status 1: the reason is already logged as one ERROR line with its fix, and
    the service stops cleanly (outputs safe, ``offline`` published) without a traceback.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(1)
        self.reason = reason


class DeviceReport(TypedDict):
    """One device in :meth:`Gateway.driver_health` (and so in the MQTT health report)."""

    status: Status
    failures: int
    restarts: int
    last_error: str | None
    stats: dict[str, int]
    notes: list[str]
    """What the driver says besides its status, e.g. ``flooding: 27000 lines/s, expected ≤ 20``."""


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
        open_serial: SerialOpener | None = None,
        forwarder: Forwarder | None = None,
        mqtt: bool = True,
        seed: int = 0,
    ) -> None:
        self._configured = config
        config = _effective(config)  # with [mqtt] remote_rules, the bundle in force is the rules dir
        self.config = config
        self.simulate = simulate
        self.events = EventFactory(clock or SystemClock())
        self.drivers: list[Driver] = config.drivers()
        self.bus = Bus(config.bus.capacity, quotas=rate_quotas(declared_rates(self.drivers)))
        actuators = outputs_of(driver for driver in self.drivers if isinstance(driver, Actuator))
        self.firings: deque[Event] = deque(maxlen=RECENT_FIRINGS)
        """The latest commands rules issued, newest last (``gateway status``)."""
        self.forwarder: Forwarder | None = None
        self.remote_rules: RemoteRules | None = None
        envelope = Envelope.from_drivers(self.drivers, state_dir=config.gateway.state_dir, clock=self.events.clock)
        self.dispatcher, self.engine = assemble(
            self.events, self.bus, actuators, envelope=envelope, forward=self._observe,
            make_engine=lambda dispatcher: build_engine(config, dispatcher),
        )
        self.dispatcher.corrections.update(
            {spec.id: driver.correct for driver in self.drivers for spec in driver.entities() if spec.correctable})
        self.code_guard = CodeGuard(self.events.clock, config.gateway.state_dir / LOCKOUT_FILE)
        """Alarm wrong codes and lockouts: kept across reloads (validators are rebuilt) and restarts."""
        self.entities: dict[str, EntitySpec] = self._house_entities()
        self.forwarder = forwarder if forwarder is not None else (self._mqtt_bridge() if mqtt else None)
        settle = getattr(self.forwarder, "settle", None)
        if callable(settle):  # the bridge answers a hub command that changed nothing once it is processed
            self.dispatcher.commands_settled.append(settle)  # it does nothing for any other event
        batch = getattr(self.forwarder, "batch", None)
        if callable(batch):
            self.dispatcher.batch_scope = batch
        self.houselog = HouseLog(lambda: self.entities, self.forwarder.add_health_source
                                 if isinstance(self.forwarder, HealthReporting) else None)
        self.history: History | None = None
        if config.history.enabled:
            h = config.history
            self.history = History(config.gateway.state_dir / HISTORY_FILE, window_s=h.window_days * 86_400,
                                   max_bytes=int(h.max_mb * (1 << 20)), flush_s=h.flush_s,
                                   readings_per_s=h.readings_per_s or None)
        self.taps: list[Callable[[Event], None]] = [self.history.record] if self.history is not None else []
        """Called with every processed event on the dispatcher thread; each must only enqueue, never block
        (the history, the web page's live stream)."""
        self._rng = random.Random(seed)
        self._pin_factory = pin_factory
        self._open_serial = open_serial
        self._world: SimWorld | None = None
        self._simulators: list[Simulator] = []
        self.supervisor: Supervisor | None = None

    def _mqtt_bridge(self) -> Forwarder:
        """The bridge, told about the rules' controllers (thermostat, alarm) and their commands
        (again after every reload: :meth:`_announce_controllers`)."""
        from gateway.mqtt.bridge import MqttBridge

        bridge = MqttBridge(self.config, self.entities, self.bus.post, self.events)
        commands, discovery = self._controller_registrations(bridge.topics)
        for entity, validator in commands.items():
            bridge.register_command(entity, validator)
        for entity, component, extra in discovery:
            bridge.register_discovery(entity, component, extra)
        if self.config.mqtt.remote_rules:
            self._remote_rules(bridge)
        return bridge

    def _remote_rules(self, bridge: MqttBridge) -> None:
        """``<base>/rules/set`` bundles applied like a reload, answered on ``<base>/rules/result``."""
        result_topic = f"{bridge.topics.base}/rules/result"

        def answer(payload: bytes) -> None:
            bridge.link.client.publish(result_topic, payload, qos=1)  # paho queues it while offline

        from gateway.remote_rules import RemoteRules

        remote = RemoteRules(self.config, current=lambda: self.engine.ruleset, swap=self._swap_rules, answer=answer)
        def arrived(client: object, userdata: object, message: Any) -> None:
            remote.on_message(client, userdata, message)
            self.bus.wake()  # handled now, not at the dispatcher's next tick (up to 5 s when idle)

        bridge.subscribe(f"{bridge.topics.base}/rules/set", arrived, "mqtt rules/set")
        bridge.add_health_source("remote_rules", remote.health)
        self.dispatcher.on_idle.append(remote.on_idle)
        self.remote_rules = remote

    def _house_entities(self) -> dict[str, EntitySpec]:
        """The devices' entities and those the current rule set adds (virtuals, controllers' parts),
        as the hub sees them (outputs a controller owns are read-only)."""
        entities = {spec.id: spec for driver in self.drivers for spec in driver.entities()}
        entities.update(bridge_entities(self.engine.ruleset))
        return hub_view(entities, self.engine.ruleset)

    def _controller_registrations(
        self, topics: TopicNames
    ) -> tuple[dict[str, Validator], list[tuple[str, str, dict[str, Any]]]]:
        """The hub commands and discovery configs of the rules' thermostats and alarms."""
        ruleset = self.engine.ruleset
        return command_validators(ruleset, self.events.clock, self.code_guard), discovery_extras(ruleset, topics)

    def _announce_controllers(self) -> None:
        """After a reload: the rules' entities, hub commands and discovery as the new rule set has them."""
        self.entities = self._house_entities()
        if isinstance(self.forwarder, HubLink):
            self.forwarder.update_registrations(self.entities, *self._controller_registrations(self.forwarder.topics))

    def start(self) -> None:
        """Open everything; returns once drivers run and rules are loaded (READY).

        Drivers start under the :class:`~drivers.supervision.Supervisor`: one that fails (at start
        or later) has its outputs made safe, its entities marked unavailable, and is restarted
        with backoff while the others run on.
        """
        try:
            self.config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # local control never depends on storage: say it, and run on
            log.error("cannot create the state directory %s (%s): rule timers and traces will not be saved "
                      "and MQTT forwarding keeps events in memory only", self.config.gateway.state_dir, exc.strerror)
        if self.history is not None:
            self.history.start()
        self._prepare_hardware()
        self.supervisor = Supervisor(
            self.drivers, self._driver_context, self.events.clock,
            post=self.bus.post, events=self.events,
        )
        self.dispatcher.outputs.on_driver_failure = self.supervisor.report_failure
        if isinstance(self.forwarder, HealthReporting):
            self.forwarder.add_health_source("drivers", self.driver_health)
            if self.history is not None:
                self.forwarder.add_health_source("history", self.history.health)
        self.supervisor.start_all()
        save_outputs(self.config)  # for `gateway safe-state` when config.toml is broken later
        if self.forwarder is not None:
            # Only now: a hub command (the broker's backlog comes at once) must queue behind the
            # drivers' "safe state at start" reports, or such a report, processed after the
            # command, would overwrite the state the command confirmed (state false, pin on).
            self.forwarder.start()
        self.bus.post(self.events.make(Kind.SYSTEM, "gateway", "started"))
        log.info(
            "gateway %s started: %d of %d devices running, %d rules%s",
            self.config.gateway.id, len(self.running), len(self.drivers), len(self.engine.rules),
            " (simulated hardware)" if self.simulate else "",
        )

    def driver_health(self) -> dict[str, DeviceReport]:
        """Per device: status, failures, restarts, last error and the driver's counters (thread-safe)."""
        if self.supervisor is None:
            return {}
        return {
            h.id: {"status": h.status, "failures": h.total_failures, "restarts": h.restarts,
                   "last_error": h.last_error, "stats": h.stats, "notes": list(h.notes)}
            for h in self.supervisor.health()
        }

    def _prepare_hardware(self) -> None:
        """Choose the pins and serial opener; in ``--simulate``, start the simulated world first.

        On a real run the ``[gateway] pin_factory`` is built here, once, if any device needs GPIO or
        SPI. When none loads the gateway does not start: one ERROR line with the fix, then
        :class:`HardwareUnavailable` (exit status 1) — rather than drivers failing and being
        restarted for ever with the house's outputs unavailable.
        """
        if not self.simulate and self._pin_factory is None:
            self._pin_factory = self._real_pin_factory()
        if self.simulate and self._pin_factory is None:
            from drivers.mockpins import sim_pin_factory
            from gateway.simpins import ReleasedLevelPin

            self._pin_factory = sim_pin_factory(ReleasedLevelPin)  # PWM, and a software SPI that honours it
        if self.simulate and self._pin_factory is not None:
            self._world = SimWorld(self._pin_factory, self._rng, self.dispatcher.state.value)
            self._start_simulators(self._world)
            self._open_serial = self._open_serial or self._simulated_serial_opener(self._world.serial_ports)

    def _real_pin_factory(self) -> Factory | None:
        from drivers.board import NoPinFactory, load_pin_factory, uses

        needing = [driver.id for driver in self.drivers if uses(driver.config).needs_pin_factory]
        if not needing:
            return None
        try:
            factory, name = load_pin_factory(self.config.gateway.pin_factory)
        except NoPinFactory as exc:
            log.error("%s; %d device(s) need GPIO (%s): the gateway does not start",
                      exc, len(needing), ", ".join(needing))
            raise HardwareUnavailable(str(exc)) from None
        if name == "native":
            log.warning("GPIO pin factory: native (no PWM, no Pi 5): install python3-lgpio for the lgpio factory")
        else:
            log.info("GPIO pin factory: %s", name)
        return factory

    def _driver_context(self, driver: Driver) -> DriverContext:
        """A context of the driver's own, so one driver's timers never wait on another's."""
        return DriverContext(
            post=self.bus.post,
            events=self.events,
            post_many=self.bus.post_many,
            pin_factory=self._pin_factory,
            open_serial=self._open_serial or _real_serial_opener,
            simulate=self.simulate,
            rng=self._rng,
            resolve_path=self._simulated_path,
            state_dir=self.config.gateway.state_dir,
        )

    def _simulated_path(self, path: str) -> str:
        """1-wire trees and other files a simulator fakes (``SimWorld.files``)."""
        return self._world.files.get(path, path) if self._world is not None else path

    def _start_simulators(self, world: SimWorld) -> None:
        for driver in self.drivers:
            simulator = driver.simulator()
            if simulator is not None:
                simulator.start(world)
                self._simulators.append(simulator)

    @staticmethod
    def _simulated_serial_opener(ports: Mapping[str, str]) -> SerialOpener:
        def open_serial(url: str, **kwargs: Any) -> SerialBase:
            return _real_serial_opener(ports.get(url, url), **kwargs)

        return open_serial

    def _observe(self, event: Event) -> None:
        """Every processed event, on the dispatcher thread: note rule firings, tell the house log, then forward."""
        kind = event.kind
        if kind is not K_READING:  # a reading is no firing, and the house log describes none: a call less (issue 14)
            if event.rule is not None and kind is K_COMMAND:
                self.firings.append(event)
            self.houselog.observe(event)
        for tap in self.taps:
            tap(event)
        if self.forwarder is not None:
            self.forwarder.forward(event)

    @property
    def running(self) -> list[Driver]:
        """The devices running now (not failed, restarting or stopped)."""
        if self.supervisor is None:
            return []
        running = {h.id for h in self.supervisor.health() if h.status == "running"}
        return [driver for driver in self.drivers if driver.id in running]

    @property
    def failed(self) -> dict[str, str]:
        """Devices failed or waiting for a restart: id -> the last error."""
        if self.supervisor is None:
            return {}
        return {
            h.id: h.last_error or h.status for h in self.supervisor.health() if h.status in {"failed", "restarting"}
        }

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

        All or nothing: the new set replaces the running one only if every file is
        valid, keeping the timers of unchanged rules; otherwise every problem is
        logged, a ``reload_refused`` event carries them (MQTT, ``gateway status``)
        and the old rules run on.
        """
        self.config = _effective(self._configured)  # a remote bundle applied since start is the rules dir
        try:
            ruleset = load_ruleset(self.config)
        except RulesError as exc:
            for problem in exc.problems:
                log.error("reload: %s", problem)
            log.error("reload refused: %d problem(s); the previous %d rules stay in force",
                      len(exc.problems), len(self.engine.rules))
            self.bus.post(refusal_event(self.events, exc.problems))  # to the hub, the house log, `status`
            return False
        self._swap_rules(ruleset)
        return True

    def _swap_rules(self, ruleset: RuleSet) -> None:
        """A checked rule set in force (a reload, a remote bundle): the engine, the hub's registrations."""
        self.engine.replace(ruleset)
        self._announce_controllers()
        if gc.get_freeze_count():  # a frozen process (see freeze_long_lived): let the old rules go
            gc.unfreeze()
            gc.collect()
            freeze_long_lived()

    def request_stop(self) -> None:
        self.dispatcher.stop()

    def shutdown(self, timeout: float = 1.5) -> None:
        """Actuators to safe state, remaining events forwarded, ``offline`` published."""
        self.dispatcher.outputs.stop()  # from now on no claim drives an output: they all go safe
        self._announce_safe_states()
        if self.supervisor is not None:
            self.supervisor.stop_all()  # actuators end safe; joins the drivers' timer threads
        for simulator in self._simulators:
            simulator.stop()
        self._simulators.clear()
        self.dispatcher.drain()
        self.engine.stop()  # saves pending timers, restored state and traces
        if self.forwarder is not None:
            self.forwarder.stop(timeout)
        if self.history is not None:
            self.history.stop()
        log.info("gateway %s stopped; actuators in their safe state", self.config.gateway.id)

    def _announce_safe_states(self) -> None:
        """Drive each actuator safe while it is still open, so its confirmed state reaches the hub."""
        for driver in self.running:
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


def freeze_long_lived() -> None:
    """Config, rules and drivers live as long as the process: keep the garbage collector from walking
    them again and again (1,000 rules cost 60 % more per event without this). For the ``gateway run``
    process only, once the gateway is built: it makes everything that exists now permanent."""
    gc.freeze()


def _real_serial_opener(url: str, **kwargs: Any) -> SerialBase:
    import serial

    return serial.serial_for_url(url, **kwargs)


if TYPE_CHECKING:
    from gateway.mqtt.bridge import MqttBridge

    def _the_bridge_is_a_hub_link_that_reports_health(bridge: MqttBridge) -> tuple[HubLink, HealthReporting]:
        """mypy checks here that the MQTT bridge keeps satisfying both protocols."""
        return bridge, bridge
