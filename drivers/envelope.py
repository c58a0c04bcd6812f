"""The safety envelope: limits on actuators that no rule and no hub command can break.

It sits below the rules, in the dispatcher, between a command and the driver.
:class:`Envelope` decides: ``decide(entity, value, now)`` answers allow, refuse
(with why) or defer (until when, and why); ``record`` tells it what the
hardware confirmed. The dispatcher's :class:`~gateway.authority.Authority`
consults it before driving an output to what the claim in force asks, turns a
refusal or a deferral into a ``Kind.REJECTED`` event whose ``detail`` says
why, tries again when the deferral ends, and at an output's maximum on time
relinquishes the claims that hold it on.

The contract
------------

**A move to the safe value is never delayed or refused.** Only *leaving* the
safe value is limited. "Toward safe" means ``is_on(value) == is_on(safe value)``
(:func:`core.values.is_on`): for a heater whose safe state is off, every off
command passes at once, whatever the minimum times, the switch budget or the
interlocks say - a vanished sensor, a failed driver or a hub's "off" must never
wait behind a limit that exists to spare the hardware.

Limits, per actuator (``envelope = { ... }`` in its device config):

* ``min_on_s`` / ``min_off_s`` - the minimum time *in the safe state* before
  leaving it: ``min_off_s`` for an output whose safe value is off, ``min_on_s``
  for one whose safe value is on. An early command is *deferred* to the first
  allowed instant. The other one never holds anything (it would delay a move
  to safe); a boiler's minimum run time is its controller's business (the
  thermostat's ``min_on``), which a fail-safe may cut short.
* ``max_on_s`` - an output on for this long (and whose safe value is off) goes
  to its safe value: the authority relinquishes every claim holding it on and
  names them (a ``STATE`` event with ``rule = "envelope"``); a controller that
  still wants it claims again, subject to the limits above.
* ``max_switches_per_hour`` - switches (either way) in a sliding hour. Leaving
  the safe value beyond the budget is *deferred* until enough past switches
  have left the hour, so an output still wanted on follows as soon as allowed.
* ``interlock`` + ``interlock_wait_s`` - outputs sharing a group name are never
  on together: leaving the safe value (off) while another of the group is on is
  *refused*; within ``interlock_wait_s`` after the other went off it is
  *deferred*. (An interlocked output whose safe value is on goes there anyway.)

**Defaults.** Every writable actuator entity is enveloped, even without an
``envelope`` in its config: :data:`DEFAULT_LIMITS` - at most 240 switches in a
sliding hour (120 times leaving the safe value) and at least 1 s in the safe
state before leaving it. A mechanical relay is rated for some 100,000 switchings
under load; a hub or rule that chatters it (1,850 switches/s were seen) would
wear it out in a minute, and at the default rate it would take weeks - long
enough for someone to notice. A person, a motion light or a thermostat never
comes near: 120 on-cycles an hour is one every 30 s, all hour long. The device's
``envelope`` overrides the defaults key by key (``min_off_s = 0`` and
``max_switches_per_hour = 3600`` switch them off).

**History across restarts.** With a ``state_file`` (``<state_dir>/envelope.json``)
the envelope remembers, per output, the last state, since when, and the switch
times of the last hour, so a crash loop cannot short-cycle an output: the
file is written (temporary file + rename) on every confirmed switch only -
switches are rare, the envelope limits them - never on the path of readings.
Times are stored on the wall clock (the monotonic clock restarts with the
board) and converted back on load; anything that lies in the future (a board
without a real-time clock that woke up in the past) counts as *now*. An output
that was away from its safe value when the process died is at its safe value
now, since the start drove it there: the load counts as a switch to safe, so
``min_off_s`` runs from the restart. A missing or unreadable file means no
history (with a warning), never a crash. The file survives a process crash
(the page cache does); it is not fsynced, so a power cut may cost the latest
switch, or the file (which then means no history).

A command that asks for the current value is always allowed and counts as no
switch.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from core.clock import Clock, SystemClock
from core.events import Value
from core.values import is_on

if TYPE_CHECKING:
    from drivers.base import Driver

log = logging.getLogger(__name__)

HOUR = 3600.0
STATE_FILE = "envelope.json"
"""The switch history's name in the gateway's ``state_dir``."""


class EnvelopeConfig(BaseModel):
    """``envelope = { min_off_s = 300, max_on_s = 7200, max_switches_per_hour = 6 }``"""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    min_on_s: float = Field(default=0.0, ge=0, le=86_400)
    """An output whose safe value is on stays on at least this long before it may go off."""
    min_off_s: float = Field(default=0.0, ge=0, le=86_400)
    """An output whose safe value is off stays off at least this long before it may go on."""
    max_on_s: float | None = Field(default=None, gt=0, le=7 * 86_400)
    max_switches_per_hour: int | None = Field(default=None, ge=1, le=3600)
    interlock: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    """Group name: outputs in the same group are never on at the same time."""
    interlock_wait_s: float = Field(default=0.0, ge=0, le=3600)
    """After another output of the group went off, wait this long before this one may go on."""

    @model_validator(mode="after")
    def _consistent(self) -> EnvelopeConfig:
        if self.max_on_s is not None and self.max_on_s < self.min_on_s:
            raise ValueError(f"max_on_s ({self.max_on_s:g}) is shorter than min_on_s ({self.min_on_s:g})")
        if self.interlock_wait_s and self.interlock is None:
            raise ValueError("interlock_wait_s needs an interlock group")
        return self


DEFAULT_LIMITS = EnvelopeConfig.model_construct(min_on_s=1.0, min_off_s=1.0, max_switches_per_hour=240)
"""What every actuator entity gets unless its ``envelope`` says otherwise (why: the module docstring).

Constructed, not validated: validating constants at import built the model's own validator in every start
(1.5 ms), which a house that declares no ``envelope`` never uses (the config's validator holds the
envelope's schema within it). The values are valid: a test validates them."""


def with_defaults(declared: EnvelopeConfig | None) -> EnvelopeConfig:
    """``declared`` with :data:`DEFAULT_LIMITS` for every key it does not set itself."""
    if declared is None:
        return DEFAULT_LIMITS
    merged = {name: getattr(DEFAULT_LIMITS, name) for name in DEFAULT_LIMITS.model_fields_set}
    if declared.max_on_s is not None:  # a default must not contradict what the installer set
        merged["min_on_s"] = min(DEFAULT_LIMITS.min_on_s, declared.max_on_s)
    merged.update(declared.model_dump(exclude_unset=True))
    return EnvelopeConfig.model_validate(merged)


@dataclass(slots=True, frozen=True)
class Decision:
    verdict: Literal["allow", "refuse", "defer"]
    reason: str = ""
    until: float | None = None

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"


ALLOW = Decision("allow")


@dataclass(slots=True, frozen=True)
class EnvelopeState:
    """What the envelope holds of one output at an instant (``Envelope.snapshot``): for ``gateway status``
    and the web page, which both word it with :meth:`describe` (one code path).

    ``hold`` names the minimum time that keeps the output where it is (``min_off`` for an output resting
    at a safe off, ``min_on`` for one resting at a safe on) and ``hold_left_s`` what is left of it; a
    minimum away from the safe value holds nothing (a move to safe is never delayed), so it is not
    reported. ``max_on_left_s`` is what is left before ``max_on_s`` sends it to safe; ``switches`` counts
    the switches of the sliding hour against ``switch_limit``."""

    on: bool
    for_s: float | None
    """Seconds in the current state; None if unknown (no switch since the history began)."""
    hold: Literal["min_on", "min_off"] | None
    hold_s: float
    hold_left_s: float
    max_on_left_s: float | None
    switches: int
    switch_limit: int | None

    def describe(self) -> str:
        """``min off 300 s: 212 s left; 3/6 switches this hour`` — the installer's words, or ``""``."""
        parts = []
        if self.hold is not None and self.hold_s > 0:
            name = self.hold.replace("_", " ")
            left = f"{self.hold_left_s:.0f} s left" if self.hold_left_s > 0 else "passed"
            parts.append(f"{name} {self.hold_s:g} s: {left}")
        if self.max_on_left_s is not None:
            parts.append(f"max on: {self.max_on_left_s:.0f} s left")
        limit = "" if self.switch_limit is None else f"/{self.switch_limit}"
        plural = "" if self.switches == 1 and not limit else "es"
        parts.append(f"{self.switches}{limit} switch{plural} this hour")
        return "; ".join(parts)


@dataclass(slots=True)
class _Output:
    limits: EnvelopeConfig
    safe: Value
    on: bool = False
    since: float = -math.inf
    switches: deque[float] = field(default_factory=deque)

    @property
    def safe_on(self) -> bool:
        return is_on(self.safe)

    def forget_before(self, now: float) -> None:
        while self.switches and self.switches[0] <= now - HOUR:
            self.switches.popleft()


class _SavedOutput(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    on: bool
    since: FiniteFloat | None = None
    switches: list[FiniteFloat] = []


class _Saved(BaseModel):
    """``envelope.json``: wall-clock times, so they mean something after a reboot. Built at the first read
    (``defer_build``): a first start has no file to read."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    version: Literal[1]
    outputs: dict[str, _SavedOutput]


class Envelope:
    """Decides on the limits; keeps no thread and no timer. Entities without limits are always allowed.

    ``now`` is the monotonic clock of the caller. ``clock`` (used only to turn
    monotonic times into wall-clock ones and back for the ``state_file``)
    must be the same clock.
    """

    def __init__(
        self,
        limits: Mapping[str, EnvelopeConfig],
        safe_values: Mapping[str, Value] | None = None,
        *,
        state_file: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        safe = safe_values or {}
        self._outputs = {entity: _Output(cfg, safe.get(entity), on=is_on(safe.get(entity)))
                         for entity, cfg in limits.items()}
        self.refused = 0
        self.deferred = 0
        self.state_file = state_file
        self.clock: Clock = clock or SystemClock()
        if state_file is not None:
            self._load(state_file)

    @classmethod
    def from_drivers(
        cls, drivers: Iterable[Driver], *, state_dir: Path | None = None, clock: Clock | None = None
    ) -> Envelope:
        """Every writable entity of every actuator among ``drivers``, with :func:`with_defaults` of what
        it declares (``Actuator.envelope()``) and its safe value; the history in ``<state_dir>/envelope.json``."""
        from drivers.base import Actuator  # drivers.base imports this module (EnvelopeConfig)

        limits: dict[str, EnvelopeConfig] = {}
        safe: dict[str, Value] = {}
        for driver in drivers:
            if not isinstance(driver, Actuator):
                continue
            own = driver.envelope()
            for spec in driver.entities():
                if not spec.writable:
                    continue
                limits[spec.id] = with_defaults(own.get(spec.id))
                safe[spec.id] = spec.safe_value
                _warn_inert(spec.id, own.get(spec.id), spec.safe_value)
        state_file = None if state_dir is None else Path(state_dir) / STATE_FILE
        return cls(limits, safe, state_file=state_file, clock=clock)

    def __contains__(self, entity: str) -> bool:
        return entity in self._outputs

    def decide(self, entity: str, value: Value, now: float) -> Decision:
        out = self._outputs.get(entity)
        if out is None:
            return ALLOW
        want_on = is_on(value)
        if want_on in (out.on, out.safe_on):
            return ALLOW  # no switch, or a move to the safe value: never delayed, never refused
        verdicts = [d for d in (self._timing(out, now), self._switch_budget(out, now),
                                self._interlock(entity, out, now)) if d is not None]
        if not verdicts:
            return ALLOW
        refusals = [d for d in verdicts if d.verdict == "refuse"]
        if refusals:
            self.refused += 1
            return refusals[0]
        self.deferred += 1
        return max(verdicts, key=lambda d: d.until or -math.inf)  # the instant every limit allows

    def record(self, entity: str, value: Value, now: float) -> None:
        """The hardware confirmed ``value`` at ``now``; a switch is saved to the ``state_file``."""
        out = self._outputs.get(entity)
        if out is None or is_on(value) == out.on:
            return
        out.on = is_on(value)
        out.since = now
        out.switches.append(now)
        out.forget_before(now)
        if self.state_file is not None:
            self._save(self.state_file, now)

    def max_on_deadline(self, entity: str) -> float | None:
        out = self._outputs.get(entity)
        if out is None or not out.on or out.safe_on or out.limits.max_on_s is None:
            return None
        return out.since + out.limits.max_on_s

    def snapshot(self, entity: str, now: float) -> EnvelopeState | None:
        """What holds ``entity`` at ``now`` (read only: nothing is decided or counted); None if not enveloped."""
        out = self._outputs.get(entity)
        if out is None:
            return None
        at_safe = out.on == out.safe_on
        hold: Literal["min_on", "min_off"] | None = ("min_on" if out.on else "min_off") if at_safe else None
        hold_s = 0.0 if hold is None else (out.limits.min_on_s if out.on else out.limits.min_off_s)
        deadline = self.max_on_deadline(entity)
        hour = [at for at in out.switches if at > now - HOUR]
        return EnvelopeState(
            on=out.on,
            for_s=now - out.since if math.isfinite(out.since) else None,
            hold=hold,
            hold_s=hold_s,
            hold_left_s=max(0.0, out.since + hold_s - now) if hold is not None else 0.0,
            max_on_left_s=None if deadline is None else max(0.0, deadline - now),
            switches=len(hour),
            switch_limit=out.limits.max_switches_per_hour,
        )

    def safe_value(self, entity: str) -> Value:
        out = self._outputs.get(entity)
        return None if out is None else out.safe

    # -- the limits on leaving the safe value --------------------------------------------------

    @staticmethod
    def _timing(out: _Output, now: float) -> Decision | None:
        minimum = out.limits.min_on_s if out.on else out.limits.min_off_s
        until = out.since + minimum
        if now >= until:
            return None
        state = "on" if out.on else "off"
        return Decision("defer", f"minimum {state} time {minimum:g} s: {state} for {now - out.since:.0f} s", until)

    @staticmethod
    def _switch_budget(out: _Output, now: float) -> Decision | None:
        limit = out.limits.max_switches_per_hour
        out.forget_before(now)
        count = len(out.switches)
        if limit is None or count < limit:
            return None
        # Allowed once only limit - 1 switches remain in the hour (moves to safe may have gone beyond it).
        until = out.switches[count - limit] + HOUR
        return Decision("defer", f"switched {count} times in the last hour (limit {limit})", until)

    def _interlock(self, entity: str, out: _Output, now: float) -> Decision | None:
        group = out.limits.interlock
        if group is None:
            return None
        wait_until = -math.inf
        for other_id, other in self._outputs.items():
            if other_id == entity or other.limits.interlock != group:
                continue
            if other.on:
                return Decision("refuse", f"interlock {group!r}: {other_id} is on")
            wait_until = max(wait_until, other.since + out.limits.interlock_wait_s)
        if now < wait_until:
            return Decision("defer", f"interlock {group!r}: waiting {out.limits.interlock_wait_s:g} s after the "
                                     "other output went off", wait_until)
        return None

    # -- the history across restarts ------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            saved = _Saved.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            log.info("no switch history in %s (a first start?): the envelope's limits count from now", path)
            return
        except (OSError, ValidationError) as exc:
            log.warning("no switch history: %s is unreadable (%s); the envelope's limits count from now",
                        path, _first_line(exc))
            return
        now, wall = self.clock.monotonic(), self.clock.time()

        def mono(at: float) -> float:
            return min(now, now - (wall - at))  # from the future (a wall-clock jump): now

        for entity, record in saved.outputs.items():
            out = self._outputs.get(entity)
            if out is None:
                continue
            out.switches = deque(sorted(mono(at) for at in record.switches))
            out.forget_before(now)
            if record.on != out.safe_on:  # it died away from safe; the start drove it safe just now
                out.since = now
                out.switches.append(now)
            else:
                out.since = -math.inf if record.since is None else mono(record.since)

    def _save(self, path: Path, now: float) -> None:
        offset = self.clock.time() - self.clock.monotonic()  # wall = mono + offset
        saved = {"version": 1, "outputs": {
            entity: {
                "on": out.on,
                "since": out.since + offset if math.isfinite(out.since) else None,
                "switches": [at + offset for at in out.switches if at > now - HOUR],
            }
            for entity, out in self._outputs.items()
        }}
        temporary = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(saved, separators=(",", ":")), encoding="utf-8")
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("cannot save the switch history in %s: %s", path, exc.strerror or exc)


def _warn_inert(entity: str, declared: EnvelopeConfig | None, safe: Value) -> None:
    """An installer who set a minimum time toward the safe value expects a protection it cannot give."""
    if declared is None:
        return
    key = "min_off_s" if is_on(safe) else "min_on_s"
    if key in declared.model_fields_set and getattr(declared, key) > 0:
        log.warning("%s: envelope %s = %g has no effect: a move to the safe value (%s) is never delayed",
                    entity, key, getattr(declared, key), "on" if is_on(safe) else "off")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
