"""Hub-command validators for the entities the rules add (thermostats, alarms).

The MQTT bridge validates every hub command at the edge, on paho's thread,
before it becomes an event (``bridge.register_command(entity, validator)``,
see :mod:`gateway.mqtt.commands`). :func:`command_validators` gives one
validator per thermostat and alarm of a rule set:

* thermostat ``<id>``: a number (or numeric text) within ``min_setpoint`` ..
  ``max_setpoint``, a mode (``heat``, ``cool``, ``heat_cool``, ``off`` as the
  thermostat has outputs for), or the preset ``away`` / ``home``;
* alarm ``<id>``: ``arm_home``, ``arm_away``, ``arm_night``, ``disarm`` (any
  case), or ``{"action": "DISARM", "code": "1234"}`` as Home Assistant's
  ``command_template`` sends it with ``code: REMOTE_CODE``. The code is checked
  here against the salted scrypt hash and never returned: the event carries only
  the action, so no code reaches the bus, a log line or a topic. After
  ``max_failed_codes`` wrong codes the alarm refuses every command for
  ``lockout`` (counted on the injected monotonic clock).

A validator returns the event value or raises ``ValueError`` with the reason.
``gateway simulate`` runs scripted hub commands through the same validators.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from gateway.clock import Clock
from gateway.events import Value
from rules import model as m
from rules.alarm import COMMANDS
from rules.codes import verify_code
from rules.loader import RuleSet

Validator = Callable[[Any], Value]


def command_validators(ruleset: RuleSet, clock: Clock) -> dict[str, Validator]:
    validators: dict[str, Validator] = {}
    for declared in ruleset.thermostats:
        if isinstance(declared.item, m.Thermostat):
            validators[declared.item.id] = thermostat_validator(declared.item)
    for declared in ruleset.alarms:
        if isinstance(declared.item, m.Alarm):
            validators[declared.item.id] = AlarmCommandValidator(declared.item, clock)
    return validators


def thermostat_validator(config: m.Thermostat) -> Validator:
    modes = {"off"} | ({"heat"} if config.heater else set()) | ({"cool"} if config.cooler else set())
    if config.heater and config.cooler:
        modes.add("heat_cool")

    def validate(raw: Any) -> Value:
        if isinstance(raw, str):
            text = raw.strip().lower()
            if text in modes or text in ("away", "home"):
                return text
            if text == "none":  # Home Assistant's "no preset"
                return "home"
            try:
                raw = float(text)
            except ValueError:
                raise ValueError(f"expected a setpoint, one of {sorted(modes)} or away/home") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw != raw:  # noqa: PLR0124 - NaN
            raise ValueError("expected a setpoint number")
        if not config.min_setpoint <= raw <= config.max_setpoint:
            raise ValueError(f"setpoint {raw:g} outside {config.min_setpoint:g}..{config.max_setpoint:g}")
        return float(raw)

    return validate


class AlarmCommandValidator:
    """Checks the action and the code; thread-safe (paho's thread), lockout on the injected clock."""

    def __init__(self, config: m.Alarm, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._failed = 0
        self._locked_until = 0.0

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
        stored = self.config.code_hash
        assert stored is not None
        with self._lock:
            now = self.clock.monotonic()
            if now < self._locked_until:
                raise ValueError(f"locked for {self._locked_until - now:.0f}s after wrong codes")
            if code is None:
                raise ValueError("code required")
            if verify_code(code, stored):
                self._failed = 0
                return
            self._failed += 1
            if self._failed >= self.config.max_failed_codes:
                self._failed = 0
                self._locked_until = now + self.config.lockout
            raise ValueError("wrong code")
