"""The thermostat: a temperature sensor, a heater (and/or cooler), a setpoint and its schedule.

Declared in a rule file::

    [[thermostats]]
    id = "living_thermostat"
    sensor = "living_temperature"
    heater = "heater"
    setpoint = 20.0
    hysteresis = 0.5
    min_on = "5m"
    min_off = "5m"
    min_setpoint = 10
    max_setpoint = 25
    frost_setpoint = 7
    stale_after = "15m"
    [[thermostats.schedule]]
    at = "06:30"
    days = ["mon", "tue", "wed", "thu", "fri"]
    setpoint = 21

Control: heating switches on at ``setpoint - hysteresis`` and off at
``setpoint``; cooling on at ``setpoint + hysteresis`` and off at ``setpoint``,
so heater and cooler are never on together. ``min_on``/``min_off`` hold an
output in its state that long (the switch happens as soon as allowed).

The target is, in order: the frost setpoint in preset ``away``; a setpoint
from the hub or a rule (until the next schedule point); the schedule's current
entry; ``setpoint``. A sensor silent for ``stale_after`` or unavailable puts
the outputs at once in their safe state (off), bypassing the minimum times,
with an event (``detail``) saying why; control resumes with the next reading.

The heater and cooler belong to the thermostat (gateway/authority.py): it
holds a claim on each at the controller level, and nothing else may claim
them; a hub command to one is refused unless ``override = "1h"`` lets it
override the thermostat for that long. The thermostat reads the outputs'
*confirmed* state: ``<id>_action`` is ``heating`` only while the heater relay
is on; when the envelope ends its claim (``max_on_s``) it claims again at
the next reading.

Entities: ``<id>`` (climate; state = mode ``heat``/``cool``/``heat_cool``/``off``;
commands: a number = setpoint within the limits, a mode, or ``away``/``home``),
``<id>_setpoint``, ``<id>_preset`` and ``<id>_action`` (``heating``,
``cooling``, ``idle``, ``off``, ``fault``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.claims import Owner
from core.events import Event, Kind, Value
from core.values import is_on
from rules import model as m
from rules.conditions import number
from rules.controllers import Controller, Host
from rules.durations import format_duration
from rules.ownership import thermostat_outputs
from rules.schedule import Job, build_trigger
from rules.timers import TimerHandle

_WEEK = 7 * 24 * 60


class ThermostatController(Controller):
    config: m.Thermostat

    def __init__(self, host: Host, config: m.Thermostat, fingerprint: str) -> None:
        super().__init__(host, config, fingerprint)
        self.mode = self.config.default_mode()
        self.preset = "home"
        self.manual: float | None = None
        self.manual_until: float | None = None
        """Wall time of the schedule point that ends a hub/rule setpoint (None: no schedule)."""
        self.temperature: float | None = None
        self.fault: str | None = None
        self.switched: dict[str, float] = {}
        self._published: dict[str, Value] = {}
        self._last_cause: str | None = None
        """The cause of the latest state this thermostat published (so a no-op command is still answered)."""
        self._stale: TimerHandle | None = None
        self._cause: str | None = None
        """The event behind the latest decision: a switch deferred by a minimum time still names it."""
        self._wait: TimerHandle | None = None

    def owned(self) -> set[str]:
        return {self.id}

    def watched(self) -> set[str]:
        return {self.config.sensor, *self._output_ids()}

    def _output_ids(self) -> list[str]:
        return [entity for entity in (self.config.heater, self.config.cooler) if entity is not None]

    def outputs(self) -> dict[str, Owner]:
        return thermostat_outputs(self.config)

    def jobs(self) -> list[tuple[int, Job]]:
        tz = self.host.tz
        return [(i, Job(f"schedule.{self.id}.{i}", build_trigger(entry, tz), 3600.0))
                for i, entry in enumerate(self.config.schedule)]

    def snapshot(self) -> dict[str, Any]:
        return {"mode": self.mode, "preset": self.preset, "manual": self.manual, "manual_until": self.manual_until}

    def start(self, cause: str | None, restored: dict[str, Any] | None) -> None:
        if restored:
            if restored.get("mode") in self.config.modes():
                self.mode = str(restored["mode"])
            if restored.get("preset") in m.THERMOSTAT_PRESETS:
                self.preset = str(restored["preset"])
            manual = number(restored.get("manual"))
            until = number(restored.get("manual_until"))
            expired = until is not None and self.host.runtime.events.clock.time() >= until
            if manual is not None and self.config.lowest_setpoint <= manual <= self.config.max_setpoint and not expired:
                self.manual, self.manual_until = manual, until
        self._arm_stale()
        self._control(cause, "started")

    def reconfigure(self, config: Any, fingerprint: str) -> None:
        super().reconfigure(config, fingerprint)
        if self.mode not in self.config.modes():
            self.mode = self.config.default_mode()
        self._control(None, "configuration reloaded")

    def stop(self) -> None:
        super().stop()
        for handle in (self._stale, self._wait):
            if handle is not None:
                handle.cancel()

    # -- the target ---------------------------------------------------------------------

    def target(self) -> float:
        if self.preset == "away":
            return self.config.frost_setpoint
        if self.manual is not None:
            return self.manual
        scheduled = self.scheduled(self.host.local_now())
        return self.config.setpoint if scheduled is None else scheduled

    def _next_point(self) -> float | None:
        now = self.host.local_now()
        if now is None:
            return None
        times = [when.timestamp() for _, job in self.jobs()
                 if (when := job.trigger.get_next_fire_time(None, now)) is not None]
        return min(times, default=None)

    def scheduled(self, now: dt.datetime | None) -> float | None:
        """The setpoint of the latest schedule entry at or before ``now`` (the week wraps round)."""
        if now is None or not self.config.schedule:
            return None
        minute_now = now.weekday() * 1440 + now.hour * 60 + now.minute
        best: tuple[int, float] | None = None
        for entry in self.config.schedule:
            for day in entry.days:
                minute = m.weekday_index(day) * 1440 + entry.at.hour * 60 + entry.at.minute
                age = (minute_now - minute) % _WEEK
                if best is None or age < best[0]:
                    best = (age, entry.setpoint)
        return None if best is None else best[1]

    # -- inputs -------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if event.entity != self.config.sensor:
            if event.kind is Kind.STATE:
                self._publish(event.id, f"{event.entity} is {'on' if is_on(event.value) else 'off'}")
            return
        if event.kind is Kind.AVAILABILITY:
            if not event.value:
                self._go_safe(f"sensor {self.config.sensor} unavailable"
                              + (f" ({event.detail})" if event.detail else ""), event.id)
            return
        value = number(event.value)
        if value is None:
            return
        self.temperature = value
        self.fault = None
        self._cause = event.id
        self._arm_stale()
        self._control(event.id, f"{self.config.sensor} = {value:g}")

    def on_schedule(self, index: int, event: Event) -> None:
        self.manual = self.manual_until = None
        self.host.changed()
        self._control(event.id, f"schedule point {index}")

    def command(self, event: Event) -> None:
        value = event.value
        if isinstance(value, str):
            text = value.strip().lower()
            try:
                value = float(text)
            except ValueError:
                self._command_text(event, text)
                return
        setpoint = number(value)
        if setpoint is None:
            self._reject(event, "expected a setpoint number, a mode or away/home")
            return
        low, high = self.config.lowest_setpoint, self.config.max_setpoint
        if not low <= setpoint <= high:
            self._reject(event, f"setpoint {setpoint:g} outside the limits {low:g}..{high:g}")
            return
        self.manual = setpoint
        self.manual_until = self._next_point()
        self.host.changed()
        self._control(event.id, f"setpoint {setpoint:g} by {event.rule or 'the hub'}")
        self._acknowledge(event)

    def _command_text(self, event: Event, text: str) -> None:
        if text in m.THERMOSTAT_PRESETS:
            self.preset = text
        elif text in self.config.modes():
            self.mode = text
        else:
            self._reject(event, f"unknown mode {text!r}: expected {sorted(self.config.modes())} or away/home")
            return
        self.host.changed()
        self._control(event.id, f"{text} by {event.rule or 'the hub'}")
        self._acknowledge(event)

    def _acknowledge(self, event: Event) -> None:
        """Every accepted command ends in a ``state`` it caused, even when nothing changed (``heat`` while
        already heating): the hub's answer on ``result/<id>`` is ``done``, not a wait that ends in ``failed``."""
        if self._last_cause != event.id:
            runtime = self.host.runtime
            runtime.emit(runtime.events.make(Kind.STATE, self.id, self.mode, rule=self.id, cause=event.id,
                                             detail="unchanged"))

    def _reject(self, event: Event, why: str) -> None:
        runtime = self.host.runtime
        runtime.emit(runtime.events.make(Kind.REJECTED, self.id, event.value, rule=self.id, cause=event.id,
                                         detail=why))

    # -- control --------------------------------------------------------------------------

    def _arm_stale(self) -> None:
        if self._stale is not None:
            self._stale.cancel()
        seconds = self.config.stale_after

        def stale() -> None:
            self._stale = None
            self._go_safe(f"sensor {self.config.sensor} silent for {format_duration(seconds)}", self._cause)

        self._stale = self.host.runtime.call_later(seconds, stale)

    def _go_safe(self, why: str, cause: str | None) -> None:
        self.fault = why
        self.temperature = None
        for entity in (self.config.heater, self.config.cooler):
            if entity is not None:
                self._switch(entity, False, cause, f"{why}: {entity} to its safe state (off)", force=True)
        self._publish(cause, why)

    def _control(self, cause: str | None, why: str) -> None:
        target = self.target()
        heater, cooler = self.config.heater, self.config.cooler
        if self.fault is not None or self.temperature is None:
            why_off = self.fault or "waiting for a first reading"
            for entity in (heater, cooler):
                if entity is not None:
                    self._switch(entity, False, cause, f"{why_off}: {entity} off", force=True)
            self._publish(cause, why)
            return
        t, h = self.temperature, self.config.hysteresis
        heat = cool = False
        if heater and self.mode in ("heat", "heat_cool"):
            heat = t < target if self._wants(heater) else t <= target - h
        if cooler and self.mode in ("cool", "heat_cool"):
            cool = t > target if self._wants(cooler) else t >= target + h
        reason = f"{t:g} °C, target {target:g} °C, {why}"
        if heater:
            self._switch(heater, heat, cause, reason)
        if cooler:
            self._switch(cooler, cool, cause, reason)
        self._publish(cause, why)

    def _wants(self, entity: str) -> bool | None:
        """What this thermostat's claim on ``entity`` asks (None: no claim, e.g. the envelope ended it)."""
        claim = self.host.runtime.outputs.claim_of(entity, self.id)
        return None if claim is None else is_on(claim.value)

    def _relay_on(self, entity: str | None) -> bool:
        """The output's confirmed state: what the relay is, not what was asked."""
        if entity is None:
            return False
        outputs = self.host.runtime.outputs
        value = outputs.confirmed(entity) if entity in outputs else self.host.runtime.state.value(entity)
        return is_on(value)

    def _switch(self, entity: str, on: bool, cause: str | None, why: str, force: bool = False) -> None:
        """Claim ``entity`` on or off. The minimum on/off times hold a change back, except ``force`` (safety)."""
        current = self._wants(entity)
        if current is on:
            return
        now = self.host.runtime.events.clock.monotonic()
        if not force and current is not None:
            hold = self.config.min_on if current else self.config.min_off
            since = now - self.switched.get(entity, -1e18)
            if since < hold:
                self._retry_in(hold - since)
                return
        if current is not None:  # the first claim after start does not start a minimum time
            self.switched[entity] = now
        runtime = self.host.runtime
        runtime.emit(runtime.events.make(Kind.COMMAND, entity, on, rule=self.id, cause=cause, detail=why))

    def _retry_in(self, seconds: float) -> None:
        if self._wait is not None:
            self._wait.cancel()

        def retry() -> None:
            self._wait = None
            self._control(self._cause, "minimum on/off time over")

        self._wait = self.host.runtime.call_later(seconds, retry)

    def _action(self) -> str:
        """What the equipment does, from the relays' confirmed state: ``heating`` exactly while the
        heater relay is on (whoever holds it: the thermostat or a hub override)."""
        if self._relay_on(self.config.heater):
            return "heating"
        if self._relay_on(self.config.cooler):
            return "cooling"
        if self.fault is not None:
            return "fault"
        if self.mode == "off":
            return "off"
        return "idle"

    def _publish(self, cause: str | None, why: str) -> None:
        values: dict[str, Value] = {
            self.id: self.mode,
            f"{self.id}_setpoint": self.target(),
            f"{self.id}_preset": self.preset,
            f"{self.id}_action": self._action(),
        }
        runtime = self.host.runtime
        for entity, value in values.items():
            if entity in self._published and self._published[entity] == value:
                continue
            self._published[entity] = value
            self._last_cause = cause
            detail = self.fault if entity.endswith("_action") and self.fault else why
            runtime.emit(runtime.events.make(Kind.STATE, entity, value, rule=self.id, cause=cause, detail=detail))
