"""Hub-command validators for the entities the rules add (thermostats, alarms).

The MQTT bridge validates every hub command at the edge, on paho's thread,
before it becomes an event (``bridge.register_command(entity, validator)``,
see :mod:`gateway.mqtt.commands`). :func:`command_validators` gives one
validator per thermostat and alarm of a rule set:

* thermostat ``<id>``: a number (or numeric text) within ``min_setpoint`` (or ``frost_setpoint`` if lower) ..
  ``max_setpoint``, a mode (``heat``, ``cool``, ``heat_cool``, ``off`` as the
  thermostat has outputs for), or the preset ``away`` / ``home``;
* alarm ``<id>``: ``arm_home``, ``arm_away``, ``arm_night``, ``disarm`` (any
  case), or ``{"action": "DISARM", "code": "1234"}`` as Home Assistant's
  ``command_template`` sends it with ``code: REMOTE_CODE``. The code is checked
  here against the salted scrypt hash and never returned: the event carries only
  the action, so no code reaches the bus, a log line or a topic. After
  ``max_failed_codes`` wrong codes in a row the alarm refuses every command
  that needs a code for ``lockout``; each further lockout lasts twice as long
  as the one before (60 s, 120 s, 240 s ...) up to ``max_lockout`` (1 h by
  default); a correct code once a lockout is over starts again from nothing.

The wrong-code memory is a :class:`CodeGuard`, not the validators: validators
are rebuilt on every rule reload, the guard lives as long as the process and
keeps its records in ``<state_dir>/alarm-codes.json`` so that a restart (a
crash, or an intruder pulling the plug) forgets nothing. The file holds counts
and remaining times only, never a code or a hash.

A validator returns the event value or raises ``ValueError`` with the reason.
``gateway simulate`` runs scripted hub commands through the same validators.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.claims import Owner
from core.clock import Clock
from core.events import Value
from rules import model as m
from rules.alarm import COMMANDS
from rules.codes import verify_code
from rules.loader import RuleSet
from rules.ownership import output_owners
from rules.timers import anchor, elapsed_since
from rules.traces import read_json, write_json

log = logging.getLogger(__name__)

Validator = Callable[[Any], Value]
LOCKOUT_FILE = "alarm-codes.json"
"""The :class:`CodeGuard`'s file in the gateway's ``state_dir``."""
_MAX_DOUBLINGS = 32  # 2**32 times any lockout is past any cap: no float overflow from a long siege


def command_validators(ruleset: RuleSet, clock: Clock, guard: CodeGuard | None = None) -> dict[str, Validator]:
    """One validator per thermostat and alarm of ``ruleset``, and a refusing one for each output
    they own that the hub may not override.

    ``guard`` keeps the alarms' wrong codes and lockouts: pass the same one after every reload
    (the app owns one for the life of the process). Without it, a fresh in-memory guard on
    ``clock`` (``gateway simulate``, tests).
    """
    guard = guard if guard is not None else CodeGuard(clock)
    validators: dict[str, Validator] = {}
    for declared in ruleset.thermostats:
        if isinstance(declared.item, m.Thermostat):
            validators[declared.item.id] = thermostat_validator(declared.item)
    for declared in ruleset.alarms:
        if isinstance(declared.item, m.Alarm):
            validators[declared.item.id] = AlarmCommandValidator(declared.item, guard)
    for entity, owner in output_owners(ruleset).items():
        if owner.override_s is None:
            validators[entity] = owned_output_validator(entity, owner)
    return validators


def owned_output_validator(entity: str, owner: Owner) -> Validator:
    """A hub command to an output a controller owns (and does not let the hub override) is refused
    at the edge, naming the owner; the arbiter would refuse it too (gateway/authority.py)."""
    reason = owner.refuses(entity)

    def refuse(raw: Any) -> Value:
        raise ValueError(reason)

    return refuse


def thermostat_validator(config: m.Thermostat) -> Validator:
    modes = config.modes()

    def validate(raw: Any) -> Value:
        if isinstance(raw, str):
            text = raw.strip().lower()
            if text in modes or text in m.THERMOSTAT_PRESETS:
                return text
            if text == "none":  # Home Assistant's "no preset"
                return "home"
            try:
                raw = float(text)
            except ValueError:
                raise ValueError(f"expected a setpoint, one of {sorted(modes)} or away/home") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:  # noqa: PLR0124 - NaN
            raise ValueError("expected a setpoint number")
        if not config.lowest_setpoint <= raw <= config.max_setpoint:
            raise ValueError(f"setpoint {raw:g} outside {config.lowest_setpoint:g}..{config.max_setpoint:g}")
        return float(raw)

    return validate


class AlarmCommandValidator:
    """Checks the action and the code; thread-safe (paho's thread); the lockout lives in ``guard``."""

    def __init__(self, config: m.Alarm, guard: CodeGuard) -> None:
        self.config = config
        self.guard = guard

    def __call__(self, raw: Any) -> Value:
        code: str | None = None
        if isinstance(raw, dict):
            action = str(raw.get("action", ""))
            if raw.get("code") not in (None, ""):
                code = str(raw["code"])
        elif isinstance(raw, str):
            action = raw
        else:
            raise ValueError("expected arm_home, arm_away, arm_night or disarm")
        action = action.strip().lower()
        if action not in COMMANDS:
            raise ValueError("expected arm_home, arm_away, arm_night or disarm")
        if self._needs_code(action):
            self._check(code)
        return action

    def _needs_code(self, action: str) -> bool:
        return self.config.code_hash is not None and (action == "disarm" or self.config.code_arm_required)

    def _check(self, code: str | None) -> None:
        self.guard.check(self.config, code)


def lockout_length(config: m.Alarm, earlier: int) -> float:
    """The lockout after ``earlier`` lockouts without a correct code: ``lockout`` doubled each time, capped."""
    cap = max(config.lockout, config.max_lockout)
    return min(config.lockout * 2.0 ** min(earlier, _MAX_DOUBLINGS), cap)


@dataclass(slots=True)
class _Record:
    failed: int = 0
    """Wrong codes since the last lockout began (or the last correct code)."""
    lockouts: int = 0
    """Lockouts since the last correct code: the next one lasts ``lockout * 2**lockouts``."""
    until: float = 0.0
    """End of the current lockout on the monotonic clock (0: none)."""


class CodeGuard:
    """Wrong codes and lockouts of every alarm, by alarm id; outlives the validators.

    One per process: the app makes it with its ``state_dir`` and hands it to
    :func:`command_validators` at start and after every reload, so neither a
    reload nor (with ``path``) a restart ends a lockout or forgets its escalation.

    Thread-safe: validators call :meth:`check` on paho's network thread, and the
    old and new validators of a reload may overlap. One lock covers the check,
    the count and the file write, so concurrent wrong codes are counted exactly.

    Persistence: ``path`` (``<state_dir>/alarm-codes.json``) is written atomically
    when a wrong code is counted and when a correct code clears what wrong codes
    left; an ordinary correct command writes nothing. It holds, per alarm, the
    count, the number of lockouts and the seconds of lockout left, with an
    anchor (wall clock, monotonic clock, boot id). After a restart the time away
    is measured on the monotonic clock if the board did not reboot, else on the
    wall clock, and never counts as negative: a wall clock stepped back (a board
    without a clock battery, before NTP) cannot lengthen a lockout, and no
    lockout outlasts the alarm's ``max_lockout``. A clock stepped forward ends
    the current lockout early but keeps its escalation.
    """

    def __init__(self, clock: Clock, path: Path | None = None) -> None:
        self.clock = clock
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        if path is not None:
            self._load(path)

    def check(self, config: m.Alarm, code: str | None) -> None:
        """Return if ``code`` is ``config``'s code and the alarm is not locked out; else ``ValueError(why)``."""
        stored = config.code_hash
        assert stored is not None
        with self._lock:
            now = self.clock.monotonic()
            record = self._records.get(config.id)
            if record is not None and now < record.until:
                record.until = min(record.until, now + max(config.lockout, config.max_lockout))
                raise ValueError(f"locked for {record.until - now:.0f}s after wrong codes")
            if code is None:
                raise ValueError("code required")
            if verify_code(code, stored):
                if record is not None:
                    del self._records[config.id]
                    self._save(now)
                return
            record = self._records.setdefault(config.id, _Record())
            record.failed += 1
            if record.failed >= config.max_failed_codes:
                length = lockout_length(config, record.lockouts)
                record.failed, record.lockouts, record.until = 0, record.lockouts + 1, now + length
                log.warning("alarm %s: %d wrong codes in a row: locked out for %.0fs (lockout %d since the last "
                            "correct code)", config.id, config.max_failed_codes, length, record.lockouts)
            self._save(now)
            raise ValueError("wrong code")

    def _save(self, now: float) -> None:
        if self.path is None:
            return
        data = {
            "version": 1,
            "anchor": anchor(self.clock),
            "alarms": {alarm: {"failed": r.failed, "lockouts": r.lockouts, "remaining": max(0.0, r.until - now)}
                       for alarm, r in self._records.items()},
        }
        try:
            write_json(self.path, data)
        except OSError as exc:  # the lockout still holds in memory; only a restart would forget it
            log.error("cannot save the alarm lockouts in %s: %s", self.path, exc)

    def _load(self, path: Path) -> None:
        data = read_json(path)
        if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("alarms"), dict):
            return
        saved_anchor = data.get("anchor")
        away = elapsed_since(saved_anchor if isinstance(saved_anchor, dict) else {}, self.clock)
        now = self.clock.monotonic()
        for alarm, item in data["alarms"].items():
            try:
                failed, lockouts = max(0, int(item["failed"])), max(0, int(item["lockouts"]))
                left = max(0.0, float(item["remaining"]) - away)  # NaN -> 0; too long is cut at check()
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring an unreadable lockout record for alarm %s in %s", alarm, path)
                continue
            self._records[str(alarm)] = _Record(failed, lockouts, now + left if left > 0 else 0.0)
            if left > 0:
                log.warning("alarm %s: still locked out for %.0fs after wrong codes before the restart", alarm, left)
