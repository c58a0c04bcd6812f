"""The alarm panel: disarmed, armed_home, armed_away, armed_night, with exit and entry delays.

Declared in a rule file::

    [[alarms]]
    id = "house"
    code_hash = "scrypt$16384$8$1$...$..."   # python -m rules.codes
    exit_delay = "30s"
    entry_delay = "30s"
    siren = "siren"
    siren_time = "3m"
    instant = ["back_window"]                # no entry delay
    [alarms.sensors]
    armed_away = ["front_door", "hall_motion"]
    armed_home = ["front_door"]
    armed_night = ["front_door"]

States (Home Assistant's names): ``disarmed`` -> ``arming`` (exit delay) ->
``armed_*``; a sensor of the armed mode turning on -> ``pending`` (entry
delay) -> ``triggered`` (siren on for at most ``siren_time``, then back to the
armed mode). Every transition is a ``Kind.ALARM`` event (entity = alarm id,
value = new state, ``detail`` = why, ``cause`` = the event that caused it).

Swinger limit (EN 50131's "swinger shutdown"): a sensor whose activation has
started ``max_triggers`` alarms (default 3: the entry delay or an instant
trigger; an entry delay always ends in ``triggered`` unless disarmed, and disarm
clears the count) is bypassed until the panel is disarmed, so a faulty contact
cannot sound the siren all night. Reaching the limit is announced once by an
``ALARM`` event (value = the unchanged state, ``detail`` =
``"front_door bypassed: triggered 3 times since arming (swinger limit)"``).
The counts are part of the snapshot: they survive a reload and a restart.

Commands on the alarm's entity carry an action (``arm_away``, ``disarm``...).
A rule (``type = "alarm"``) needs no code; a hub command's code is checked at
the edge, before the command becomes an event, by
:class:`rules.commands.AlarmCommandValidator` (salted scrypt hash, lockout after
``max_failed_codes``, doubling with each further lockout, kept across reloads
and restarts by :class:`rules.commands.CodeGuard`), so no code ever reaches the
bus, a log or a topic.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from core.claims import Level, Owner
from core.events import Event, Kind, Value
from rules import model as m
from rules.controllers import Controller, Host
from rules.ownership import alarm_outputs
from rules.timers import Pending

log = logging.getLogger(__name__)

ARMED = ("armed_home", "armed_away", "armed_night")
COMMANDS = ("arm_home", "arm_away", "arm_night", "disarm")


def parse_command(value: Value) -> tuple[str | None, str | None]:
    """``(action, code)`` from ``"arm_away"``, ``"ARM_AWAY"`` or ``{"action": ..., "code": ...}``."""
    if not isinstance(value, str):
        return None, None
    text = value.strip()
    code: str | None = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None, None
        if not isinstance(data, dict):
            return None, None
        text = str(data.get("action", ""))
        raw_code = data.get("code")
        code = str(raw_code) if raw_code not in (None, "") else None
    action = text.lower()
    return (action if action in COMMANDS else None), code


class AlarmController(Controller):
    config: m.Alarm
    level = Level.ALARM

    def __init__(self, host: Host, config: m.Alarm, fingerprint: str) -> None:
        super().__init__(host, config, fingerprint)
        self.state: str = "disarmed"
        self.target: str | None = None
        self.triggers: dict[str, int] = {}
        """Alarms each sensor started since arming (the swinger limit); disarm clears it."""

    @property
    def _timer_key(self) -> str:
        return f"alarm:{self.id}"

    def owned(self) -> set[str]:
        return {self.id}

    def watched(self) -> set[str]:
        sensors = self.config.sensors
        return set(sensors.armed_home) | set(sensors.armed_away) | set(sensors.armed_night) | set(self.config.instant)

    def outputs(self) -> dict[str, Owner]:
        """The siren is the alarm's: the hub cannot silence it but by disarming, with the code."""
        return alarm_outputs(self.config)

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "target": self.target, "triggers": dict(self.triggers)}

    def start(self, cause: str | None, restored: dict[str, Any] | None) -> None:
        if restored and restored.get("state") in m.AlarmState.__args__:  # type: ignore[attr-defined]
            self.state = str(restored["state"])
            target = restored.get("target")
            self.target = str(target) if target in ARMED else None
            if self.state in ("arming", "pending", "triggered") and self.target is None:
                self.state = "disarmed"
            self.triggers = {} if self.state == "disarmed" else _trigger_counts(restored.get("triggers"))
            bypassed = sorted(sensor for sensor in self.triggers if self._bypassed(sensor))
            why = "restored after restart" + (f"; bypassed: {', '.join(bypassed)}" if bypassed else "")
            self._emit(self.state, why, cause)
        else:
            self._emit("disarmed", "started", cause)

    # -- transitions ------------------------------------------------------------------------

    def _emit(self, state: str, why: str, cause: str | None) -> None:
        """The transition (``ALARM``), then the panel's state (``STATE``: retained for the hub, read by conditions)."""
        self.state = state
        runtime = self.host.runtime
        runtime.emit(runtime.events.make(Kind.ALARM, self.id, state, rule=self.id, cause=cause, detail=why))
        runtime.emit(runtime.events.make(Kind.STATE, self.id, state, rule=self.id, cause=cause))
        self.host.changed()

    def _arm_timer(self, phase: str, seconds: float, cause: str | None) -> None:
        self.host.timers.arm(self._timer_key, self.id, self.fingerprint, seconds, {"phase": phase, "cause": cause},
                             self._timer_fired)

    def _timer_fired(self, entry: Pending) -> None:
        phase, cause = entry.data.get("phase"), entry.data.get("cause")
        if phase == "exit" and self.state == "arming" and self.target:
            self._emit(self.target, "exit delay over", cause)
        elif phase == "entry" and self.state == "pending":
            self._trigger("entry delay over without disarm", cause)
        elif phase == "siren" and self.state == "triggered":
            self._siren(False, cause, "siren time limit reached")
            self._emit(self.target or "disarmed", "siren time limit reached: back to armed", cause)

    def restore_timer(self, entry: Pending, remaining: float) -> None:
        """Alarm delays fire even when overdue: an entry delay that ran out while the gateway was down triggers."""
        phase = entry.data.get("phase")
        if phase == "siren" and self.state == "triggered":
            self._siren(True, entry.data.get("cause"), "siren resumed after restart")
        self.host.timers.arm(entry.key, self.id, self.fingerprint, max(0.0, remaining), entry.data,
                             self._timer_fired)

    def _siren(self, on: bool, cause: str | None, why: str) -> None:
        """Claim the siren on, or let go of it (``None``): off unless something stronger holds it."""
        if self.config.siren is None:
            return
        runtime = self.host.runtime
        runtime.emit(runtime.events.make(Kind.COMMAND, self.config.siren, True if on else None, rule=self.id,
                                         cause=cause, detail=why))

    def _trigger(self, why: str, cause: str | None) -> None:
        self.host.timers.cancel(self._timer_key)
        self._emit("triggered", why, cause)
        self._siren(True, cause, why)
        self._arm_timer("siren", self.config.siren_time, cause)

    # -- inputs -----------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        if event.kind not in (Kind.READING, Kind.STATE) or event.value is not True:
            return
        sensor = event.entity
        instant = sensor in self.config.instant
        if self.state in ARMED and sensor in getattr(self.config.sensors, self.state):
            if self._bypassed(sensor):
                log.debug("alarm %s: %s active but bypassed (swinger limit)", self.id, sensor)
                return
            self.target = self.state
            if instant or self.config.entry_delay <= 0:
                self._trigger(f"{sensor} active while {self.state}", event.id)
            else:
                self._emit("pending", f"{sensor} active while {self.state}: entry delay", event.id)
                self._arm_timer("entry", self.config.entry_delay, event.id)
            self._count_alarm(sensor, event.id)
        elif self.state == "pending" and instant and sensor in getattr(self.config.sensors, self.target or "", ()):
            if self._bypassed(sensor):
                log.debug("alarm %s: %s active but bypassed (swinger limit)", self.id, sensor)
                return
            self._trigger(f"{sensor} active during the entry delay", event.id)
            self._count_alarm(sensor, event.id)

    def _bypassed(self, sensor: str) -> bool:
        limit = self.config.max_triggers
        return limit > 0 and self.triggers.get(sensor, 0) >= limit

    def _count_alarm(self, sensor: str, cause: str | None) -> None:
        """``sensor`` started an alarm: count it; at the limit, bypass it until disarm and say so once."""
        count = self.triggers[sensor] = self.triggers.get(sensor, 0) + 1
        if self._bypassed(sensor):
            why = f"{sensor} bypassed: triggered {count} times since arming (swinger limit)"
            log.warning("alarm %s: %s", self.id, why)
            runtime = self.host.runtime
            runtime.emit(runtime.events.make(Kind.ALARM, self.id, self.state, rule=self.id, cause=cause, detail=why))
        self.host.changed()

    def command(self, event: Event) -> None:
        """An action from a rule or from the hub; the hub's code was checked at the edge (rules/commands.py)."""
        action, _ = parse_command(event.value)
        if action is None:
            self._reject(event, "not an alarm command: expected arm_home, arm_away, arm_night or disarm", None)
            return
        if action == "disarm":
            was = self.state
            self.host.timers.cancel(self._timer_key)
            if was == "triggered":
                self._siren(False, event.id, "disarmed")
            self.target = None
            self.triggers = {}  # a new arming starts with every sensor in service
            self._emit("disarmed", f"disarmed (was {was})", event.id)
            return
        mode = action.replace("arm_", "armed_")
        if self.state in ARMED or (self.state == "arming" and self.config.exit_delay <= 0):
            self.target = mode
            self._emit(mode, f"{action} (was {self.state})", event.id)
        elif self.state in {"disarmed", "arming"}:
            self.target = mode
            if self.config.exit_delay <= 0:
                self._emit(mode, action, event.id)
            else:
                self._emit("arming", f"{action}: exit delay {self.config.exit_delay:g}s", event.id)
                self._arm_timer("exit", self.config.exit_delay, event.id)
        else:
            self._reject(event, f"cannot {action} while {self.state}: disarm first", action)

    def _reject(self, event: Event, why: str, action: str | None) -> None:
        runtime = self.host.runtime
        runtime.emit(runtime.events.make(Kind.REJECTED, self.id, action, rule=self.id, cause=event.id, detail=why))


def _trigger_counts(raw: Any) -> dict[str, int]:
    """The swinger counts of a snapshot; anything unreadable counts as none."""
    if not isinstance(raw, dict):
        return {}
    return {str(sensor): count for sensor, count in raw.items()
            if isinstance(count, int) and not isinstance(count, bool) and count > 0}
