"""Running under systemd: signals, sd_notify, the watchdog, the status socket, safe state.

:class:`Service` wraps a started :class:`~gateway.app.Gateway` for ``gateway run``:

* ``READY=1`` once drivers run and rules are loaded; ``STOPPING=1`` when a stop
  is requested; ``RELOADING=1`` ... ``READY=1`` around a SIGHUP rule reload.
* ``WATCHDOG=1`` from the dispatcher's own idle hook, at half of
  ``WATCHDOG_USEC``; the dispatcher's tick is a quarter of it, so a healthy
  loop pings in time and a hung one stops pinging and is restarted.
* ``STATUS=`` with a one-line health whenever it changes (checked every few seconds).
* Status requests from ``gateway status`` answered on the dispatcher thread.

Signal handlers only set a flag. They must not take the bus lock: Python runs
a handler on the main thread between two bytecodes, possibly while that same
thread holds the lock inside the bus, and the lock is not re-entrant. The
wake-up goes through ``signal.set_wakeup_fd``: the C-level handler writes a
byte to a pipe, and a small thread turns that byte into ``bus.wake()``.

:func:`safe_state` is ``gateway safe-state`` (the unit's ``ExecStopPost=``):
after a SIGKILL or a crash nothing else returns the outputs to safety. It needs
only the outputs, so a broken config does not stop it: the config's own actuator
entries, else the copy the last successful start saved (:mod:`gateway.lastgood`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from core.clock import SystemClock
from core.events import EventFactory
from core.guard import failures, guarded
from drivers.base import Actuator, DeviceConfig, DriverContext, SerialOpener
from drivers.registry import DRIVERS
from gateway.control import SOCKET_NAME, ControlServer
from gateway.sdnotify import Notifier, watchdog_interval

if TYPE_CHECKING:
    from gpiozero import Factory

    from gateway.app import Gateway

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_DIR = Path("/run/gateway")
STATUS_EVERY = 5.0
"""Seconds between checks of the one-line ``STATUS=`` health (sent only when it changed)."""
MAX_TICK = STATUS_EVERY
"""The longest the dispatcher sleeps when nothing happens (a quarter of the watchdog interval if shorter).

Everything with a deadline wakes it on time by itself: a signal (the wake-up pipe), a status request
and the web page (``bus.wake``), its own timers (rule timers, the file watcher, the clock poll); the
tick is for the ``STATUS=`` check and the watchdog ping. It was 1 s: one wake-up a second for nothing."""


def control_socket_path(state_dir: Path | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    """Where the status socket lives: systemd's ``RuntimeDirectory``, else ``/run/gateway``.

    ``--simulate`` passes its own ``state_dir``: a simulated run never takes the real service's place.
    """
    env = os.environ if env is None else env
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / SOCKET_NAME
    if state_dir is not None:
        return state_dir / SOCKET_NAME
    return DEFAULT_RUNTIME_DIR / SOCKET_NAME


@dataclass(slots=True)
class _Flags:
    stop: bool = False
    reload: bool = False
    interrupts: int = 0


class SignalWaker:
    """Signal handlers that set flags; a pipe and a thread turn a signal into ``wake()``."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.flags = _Flags()
        self._wake = wake
        self._read = self._write = -1
        self._thread = threading.Thread(target=guarded("signal waker")(self._relay), name="signals", daemon=True)
        self._previous_fd = -1

    def install(self) -> None:
        """Call on the main thread; :meth:`uninstall` undoes it."""
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(self._read, True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_signal)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread.start()

    def uninstall(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")  # let the thread see the end
        self._thread.join(timeout=1.0)
        os.close(self._write)
        os.close(self._read)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.flags.reload = True
            return
        self.flags.stop = True
        if signum == signal.SIGINT:
            self.flags.interrupts += 1
            if self.flags.interrupts > 1:
                os._exit(130)  # a second Ctrl-C: the person at the terminal wants out now

    def _relay(self) -> None:
        """Signal numbers arrive as bytes; a NUL byte (from :meth:`uninstall`) ends the thread."""
        while True:
            data = os.read(self._read, 64)
            if data.strip(b"\0"):
                self._wake()
            if not data or b"\0" in data:
                return


class Service:
    """``gateway run`` with systemd: see the module docstring."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        notifier: Notifier | None = None,
        socket_path: Path | None = None,
        watchdog: float | None = None,
    ) -> None:
        self.gateway = gateway
        self.notifier = notifier or Notifier()
        self.watchdog = watchdog if watchdog is not None else watchdog_interval()
        self.tick = min(MAX_TICK, self.watchdog / 4) if self.watchdog else MAX_TICK
        self.socket_path = socket_path
        self.control: ControlServer | None = None
        self.signals = SignalWaker(gateway.bus.wake)
        self._started_mono = time.monotonic()
        self._last_ping = 0.0
        self._last_status_check = 0.0
        self._last_status = ""
        self._stopping = False

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, shut down; the exit status (0 after a clean stop)."""
        self.signals.install()
        try:
            self.gateway.start()
            self._open_control()
            self.gateway.dispatcher.on_idle.append(self._on_idle)
            self._last_status = self.health_line()
            self.notifier.ready(self._last_status)
            self._ping(time.monotonic())
            if not self.signals.flags.stop:
                self.gateway.run(self.tick)
        finally:
            self._announce_stopping()
            if self.control is not None:
                self.control.stop()
            self.gateway.shutdown()
            self.signals.uninstall()
            self.notifier.close()
        return 0

    def _open_control(self) -> None:
        if self.socket_path is None:
            return
        control = ControlServer(self.socket_path, self.gateway.bus.wake)
        try:
            control.start()
        except OSError as exc:
            log.error("no status socket (gateway status will not work): %s: %s", self.socket_path, exc)
            return
        self.control = control

    def _on_idle(self) -> None:
        """The dispatcher's idle hook: everything here runs on the dispatcher thread."""
        now = time.monotonic()
        flags = self.signals.flags
        if flags.stop:
            self._announce_stopping()
            self.gateway.request_stop()
            return
        if flags.reload:
            flags.reload = False
            self._reload()
        self._ping(now)
        if self.control is not None:
            self.control.serve_pending(self.answer)
        if now - self._last_status_check >= STATUS_EVERY:
            self._last_status_check = now
            line = self.health_line()
            if line != self._last_status:
                self._last_status = line
                self.notifier.status(line)

    def _announce_stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.stopping("stopping: actuators to their safe state")

    def _ping(self, now: float) -> None:
        if self.watchdog and now - self._last_ping >= self.watchdog / 2:
            self._last_ping = now
            self.notifier.watchdog()

    def _reload(self) -> None:
        self.notifier.reloading()
        ok = self.gateway.reload()
        line = self.health_line()
        self.notifier.ready(line if ok else f"{line}; reload FAILED, previous rules kept (see the log)")

    # -- health ----------------------------------------------------------------------

    def health_line(self) -> str:
        """One line for ``systemctl status``: devices, rules, broker, outbox, bus."""
        gw = self.gateway
        parts = [f"{len(gw.running)}/{len(gw.drivers)} devices running", f"{len(gw.engine.rules)} rules"]
        mqtt = self.mqtt_health()
        if mqtt["enabled"]:
            parts.append(f"broker {mqtt['connection']}")
            if mqtt["inlet"] != mqtt["connection"]:
                parts.append(f"commands' inlet {mqtt['inlet']}")
            parts.append(f"outbox {mqtt['outbox_depth']}")
            if mqtt["forwarding"] != "ok":
                parts.append("forwarding DEGRADED")
        else:
            parts.append("MQTT off")
        parts.append(f"bus {len(gw.bus)}")
        return ", ".join(parts)

    def _outputs(self, now: float) -> dict[str, dict[str, Any]]:
        """The authority's view of each output, with what the envelope holds of it (``envelope``: the
        fields of :class:`drivers.envelope.EnvelopeState`, or None), for ``gateway status`` and the page."""
        envelope = self.gateway.dispatcher.outputs.envelope
        report: dict[str, dict[str, Any]] = {}
        for entity, output in self.gateway.dispatcher.outputs.status().items():
            held = envelope.snapshot(entity, now)
            report[entity] = {**output, "envelope": None if held is None else dataclasses.asdict(held)}
        return report

    def mqtt_health(self) -> dict[str, Any]:
        """The MQTT bridge's own figures (its ``health()``, see docs/mqtt.md), in brief."""
        from gateway.app import HealthReporting  # gateway.app is loaded: self.gateway is one

        forwarder = self.gateway.forwarder
        if forwarder is None:
            return {"enabled": False}
        detail = forwarder.health() if isinstance(forwarder, HealthReporting) else {}
        outbox = detail.get("outbox") or {}
        inlet = detail.get("inlet") or {}
        return {
            "enabled": True,
            "connection": detail.get("connection", "unknown"),
            "broker": detail.get("broker"),
            "failovers": detail.get("failovers", 0),
            "identity": (detail.get("identity") or {}).get("state", "ok"),
            "inlet": inlet.get("connection", "unknown"),
            "inlet_identity": (inlet.get("identity") or {}).get("state", "ok"),
            "inlet_backlog_purged": inlet.get("backlog_purged", 0),
            "forwarding": detail.get("forwarding", "ok"),
            "forwarding_reason": detail.get("forwarding_reason"),
            "outbox_depth": outbox.get("depth", "?"),
            "outbox_oldest_age": outbox.get("oldest_age"),
            "outbox_dropped": outbox.get("dropped", 0),
            "outbox_shed_by_kind": outbox.get("shed_by_kind", {}),
            "events_out": detail.get("events_out"),
        }

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """A status-socket request, on the dispatcher thread."""
        cmd = request.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.snapshot()}
        if cmd == "hang" and self.gateway.simulate:
            # Fault injection for tests and rehearsals, refused on real hardware:
            # block the dispatcher itself, as a deadlocked rule or driver would.
            seconds = float(request.get("seconds", 1.0))
            self.gateway.dispatcher.call_later(0.0, lambda: time.sleep(seconds))
            return {"ok": True, "hanging": seconds}
        return {"ok": False, "error": f"unknown request {cmd!r}"}

    def snapshot(self) -> dict[str, Any]:
        gw = self.gateway
        dispatcher = gw.dispatcher
        now_mono = gw.events.clock.monotonic()
        reports = gw.driver_health()
        statuses = {device: report["status"] for device, report in reports.items()}
        devices = []
        for driver in gw.drivers:
            if driver.id in gw.failed:
                health = f"FAILED: {gw.failed[driver.id]}"
            elif statuses.get(driver.id) in ("running", "waiting for port"):
                health = statuses[driver.id]
            else:
                health = "stopped"
            notes = reports[driver.id]["notes"] if driver.id in reports else []
            if notes:
                health = f"{health} ({'; '.join(notes)})"
            devices.append({"id": driver.id, "driver": driver.config.driver, "health": health})
        entities = []
        known = list(gw.entities)  # configured first, then what the rules' controllers added (alarm, climate)
        known += [foreign.id for foreign in gw.config.mqtt_entities if foreign.id not in gw.entities]  # heard on MQTT
        known += [entity_id for entity_id, _ in dispatcher.state.items() if entity_id not in gw.entities]
        for entity_id in known:
            state = dispatcher.state.get(entity_id)
            entities.append({
                "id": entity_id,
                "value": None if state is None else state.value,
                "unit": None if state is None else state.unit,
                "available": state is not None and state.available,
                "age": None if state is None else now_mono - state.reported_mono,
            })
        return {
            "gateway": gw.config.gateway.id,
            "pid": os.getpid(),
            "uptime": time.monotonic() - self._started_mono,
            "simulate": gw.simulate,
            "rules": len(gw.engine.rules),
            "rules_version": gw.remote_rules.version if gw.remote_rules is not None else "local",
            "engine": gw.engine.status(),
            "reload": None if gw.houselog.last_reload is None else gw.houselog.last_reload.report(),
            "devices": devices,
            "outputs": self._outputs(now_mono),
            "entities": entities,
            "firings": [
                {"ts": e.ts, "rule": e.rule, "entity": e.entity, "value": e.value} for e in reversed(gw.firings)
            ],
            "mqtt": self.mqtt_health(),
            "bus": {
                "queued": len(gw.bus), "coalesced": gw.bus.counters.coalesced, "dropped": gw.bus.counters.dropped,
                "coalesced_by_kind": dict(gw.bus.counters.coalesced_by_kind),
                "dropped_by_kind": dict(gw.bus.counters.dropped_by_kind),
                "processed": dispatcher.counters.processed, "errors": dispatcher.counters.errors,
                "commands": dispatcher.counters.commands, "rejected": dispatcher.counters.rejected,
                "timers_fired": dispatcher.counters.timers_fired, "chains_cut": dispatcher.counters.chains_cut,
                "deferred": dispatcher.outputs.envelope.deferred, "refused": dispatcher.outputs.envelope.refused,
                "apply_failures": dispatcher.outputs.failures,
            },
            "failures": dict(failures),
            "watchdog": self.watchdog,
        }


def safe_state(
    config_path: Path,
    *,
    state_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    pin_factory: Factory | None = None,
) -> int:
    """``gateway safe-state``: every output to its safe state, even from a broken config; the exit status.

    The outputs come from the config, or from the last-known-good copy the last successful start
    saved (:func:`gateway.lastgood.choose_outputs` says which, in one log line). Exits 0 when every
    output was driven safe, 1 when one could not be, or when no description of the outputs exists
    (then nothing was driven, and the message says why).
    """
    from gateway.lastgood import NoOutputs, choose_outputs

    try:
        outputs = choose_outputs(config_path, state_dir=state_dir, env=env)
    except NoOutputs as exc:
        log.critical("safe-state: %s", exc)
        return 1
    if outputs.fallback:
        log.warning("safe-state: %s", outputs.origin)
    else:
        log.info("safe-state: %s", outputs.origin)
    problems = [*outputs.problems, *drive_safe_states(outputs.devices, pin_factory=pin_factory)]
    for problem in problems:
        log.error("safe-state: %s", problem)
    return 1 if problems else 0


def drive_safe_states(
    devices: Iterable[DeviceConfig],
    *,
    pin_factory: Factory | None = None,
    open_serial: SerialOpener | None = None,
) -> list[str]:
    """Drive every actuator among ``devices`` to its safe state and release it; the problems, if any.

    Used by ``gateway safe-state`` after the main process is gone (SIGKILL, a
    crash): each actuator driver is built from its validated device table, started
    on the real hardware (gpiozero's default pin factory unless one is given), told
    its safe value, and stopped. One actuator failing never stops the others.
    """
    from gateway.app import _real_serial_opener

    events = EventFactory(SystemClock())
    ctx = DriverContext(post=lambda event: None, events=events, pin_factory=pin_factory,
                        open_serial=open_serial or _real_serial_opener)
    problems: list[str] = []
    try:
        for device in devices:
            try:
                driver = DRIVERS[device.driver](device)
            except Exception as exc:
                problems.append(f"{device.id}: could not be built: {exc}")
                continue
            if isinstance(driver, Actuator):
                problems.extend(_drive_safe(driver, ctx))
    finally:
        ctx.close()
    return problems


def _drive_safe(driver: Actuator, ctx: DriverContext) -> list[str]:
    problems = []
    try:
        driver.start(ctx)
        for spec in driver.entities():
            if spec.safe_value is not None:
                driver.apply(spec.id, spec.safe_value)
                log.info("%s: safe state %r", spec.id, spec.safe_value)
    except Exception as exc:
        problems.append(f"{driver.id}: could not reach its safe state: {exc}")
    finally:
        try:
            driver.stop()
        except Exception as exc:
            problems.append(f"{driver.id}: could not be released: {exc}")
    return problems
