"""One authority per output: every writer holds a *claim*; the output follows the strongest.

The model is building automation's BACnet priority array. Everything that
wants an output — the fail-safe, the alarm, the hub, the thermostat, rules —
writes a claim at its :class:`Level`; the output follows the highest-priority
claim in force (the lowest level number; within one level the newest claim
wins), and when the last claim is relinquished it returns to its *default*,
its safe state. Writing ``None`` relinquishes the writer's own claim, as
writing NULL does in BACnet: a rule's ``turn_on … for`` ends by letting go,
not by writing "off", so two rules holding the same light keep it on until
both have let go.

The levels (docs/rules.md, "Who drives an output")::

    1 safety      the driver failed: held at the safe value until it restarts
    3 alarm       an alarm panel's siren
    5 override    the hub overriding an output a controller owns (time-limited)
    8 controller  a thermostat's heater and cooler
   10 rules       rules, and the hub on an output nobody owns

**Ownership.** An output a controller names (a thermostat's ``heater``, an
alarm's ``siren``) is not a free switch. A hub command to it is refused with a
reason naming the owner, unless the owner allows an ``override`` (thermostats
may: ``override = "1h"``), in which case it becomes an override claim that
expires by itself. Silencing a siren takes a disarm, with the code. A hub command may also carry its
own end (``Event.hold_s``: Home Assistant's siren ``duration``): its claim lets go by itself then. A rule
cannot claim an owned output either. When a reload takes an output away from a
controller (or removes a rule), that writer's claims are relinquished.

**Reconciliation.** The authority compares what the strongest claim asks
with what the driver *confirmed*, and drives the output whenever they differ
and the safety envelope (:mod:`drivers.envelope`) allows it. A deferral is
retried at the instant the envelope names; a refusal (an interlock) is retried
whenever another output changes. A move to the safe value is never limited by
the envelope. At an output's ``max_on_s`` every claim holding it away from
safe is relinquished (the holders are named); a controller that still wants it
claims again, and the envelope's ``min_off_s`` applies.

Every claim change ends in exactly one event: ``STATE`` (the confirmed value;
``detail`` names the claim in force and those waiting) or ``REJECTED``
(refused or deferred, and why). Everything here runs on the dispatcher thread.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from core.claims import DRIVER_FAILED, HUB, Claim, Level, Owner, holder_text
from core.clock import Clock
from core.events import Event, EventFactory, Kind, Value
from core.values import is_on
from drivers.base import Actuator
from drivers.envelope import Envelope

log = logging.getLogger(__name__)



class ClaimStatus(TypedDict):
    """One claim on an output in :meth:`Authority.status`."""

    holder: str
    level: str
    """The claim's :class:`~core.claims.Level`, lower case (``"rules"``)."""
    value: Value
    in_force: bool


class OutputStatus(TypedDict):
    """One output in :meth:`Authority.status` (``gateway status``)."""

    value: Value
    safe: Value
    default: Value
    owner: str | None
    claims: list[ClaimStatus]


def _rank(claim: Claim) -> tuple[Level, int]:
    return claim.level, -claim.seq


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


@dataclass(slots=True)
class _Output:
    entity: str
    actuator: Actuator
    safe: Value
    """Where the output goes when its driver fails, at max_on_s, at shutdown."""
    default: Value
    """Where it goes while no claim holds it: the safe value unless the device configures a default."""
    confirmed: Value
    claims: dict[str, Claim] = field(default_factory=dict)
    retry: _Cancellable | None = None
    max_on: _Cancellable | None = None
    expiry: _Cancellable | None = None
    refused: bool = False
    last_state: str | None = None
    """The id of the latest STATE event the authority emitted for this output."""

    def ranked(self) -> list[Claim]:
        """The claims, strongest first: by level, then the newest within a level."""
        return sorted(self.claims.values(), key=_rank)

    def strongest(self) -> Claim | None:
        return min(self.claims.values(), key=_rank, default=None)

    def desired(self) -> Value:
        claim = self.strongest()
        return self.default if claim is None else claim.value


class Host(Protocol):
    """What the authority needs of the dispatcher (``gateway.dispatcher.Dispatcher`` fits)."""

    events: EventFactory
    clock: Clock

    def emit(self, event: Event) -> None: ...

    def call_at(self, deadline: float, callback: Callable[[], None]) -> _Cancellable: ...

    def before_output(self) -> None:
        """Called before every write to an output: the dispatcher sends what its batch queued for the hub first."""


class Authority:
    """The arbiter of every output. See the module docstring."""

    def __init__(self, host: Host, actuators: Mapping[str, Actuator], envelope: Envelope | None = None) -> None:
        self.host = host
        self.envelope = envelope or Envelope({})
        self.on_driver_failure: Callable[[str, str], None] | None = None
        """Told ``(driver id, reason)`` when an actuator raised while applying (the supervisor)."""
        self.failures = 0
        self._outputs: dict[str, _Output] = {}
        for entity, actuator in actuators.items():
            safe, default = _safe_and_default(actuator, entity)
            self._outputs[entity] = _Output(entity, actuator, safe, default, safe)
        self._owners: dict[str, Owner] = {}
        self._levels: dict[str, Level] = {}
        self._seq = itertools.count()
        self._stopped = False

    def stop(self) -> None:
        """The gateway is shutting down: the outputs go safe and stay so; claims are still recorded (and
        shown) but drive nothing any more, or a claim could switch an output on again on the way out."""
        self._stopped = True

    def __contains__(self, entity: str) -> bool:
        return entity in self._outputs

    @property
    def entities(self) -> list[str]:
        return list(self._outputs)

    # -- who may write ------------------------------------------------------------------

    def set_owners(self, owners: Mapping[str, Owner], writers: Mapping[str, Level]) -> None:
        """The controllers' outputs and the controllers' claim levels (after a start or a reload).

        A claim of a controller on an output it does not own any more is relinquished.
        """
        self._owners = {entity: owner for entity, owner in owners.items() if entity in self._outputs}
        self._levels = dict(writers)
        for out in self._outputs.values():
            owner = self._owners.get(out.entity)
            stale = [h for h in out.claims if h in self._levels and (owner is None or owner.holder != h)]
            for holder in stale:
                del out.claims[holder]
            if stale:
                self._reconcile(out, None, None, f"no longer owned by {', '.join(map(holder_text, stale))}")

    def release_holder(self, holder: str, why: str) -> None:
        """Relinquish every claim of ``holder`` (a rule or controller a reload removed or changed)."""
        for out in self._outputs.values():
            if out.claims.pop(holder, None) is not None:
                self._reconcile(out, None, holder, f"{holder_text(holder)} {why}: claim relinquished")

    # -- events from the dispatcher -----------------------------------------------------------

    def command(self, event: Event) -> None:
        """A ``COMMAND`` for one of the outputs: record (or relinquish) the writer's claim, then reconcile."""
        out = self._outputs[event.entity]
        holder = event.rule or HUB
        owner = self._owners.get(out.entity)
        level = self._levels.get(holder, Level.RULES)
        expires: float | None = None
        if owner is not None and holder != owner.holder and event.value is not None:
            if holder != HUB or owner.override_s is None:
                self._refuse(event, f"refused: {owner.refuses(out.entity)}")
                return
            level = Level.OVERRIDE
            expires = self.host.clock.monotonic() + owner.override_s
        if event.hold_s is not None and event.value is not None:  # a hub siren's duration: a claim with an end
            held_until = self.host.clock.monotonic() + event.hold_s
            expires = held_until if expires is None else min(expires, held_until)
        if event.value is None:
            if out.claims.pop(holder, None) is None:
                return
            self._reconcile(out, event.id, event.rule, f"{holder_text(holder)} let go")
            return
        out.claims[holder] = Claim(holder, level, event.value, next(self._seq), event.id, expires)
        self._arm_expiry(out)  # also when this claim replaced a timed one: its old deadline must not end it
        self._reconcile(out, event.id, event.rule, None)

    def _refuse(self, event: Event, why: str) -> None:
        self.host.emit(self.host.events.make(Kind.REJECTED, event.entity, event.value, rule=event.rule,
                                             cause=event.id, detail=why))

    def observe(self, event: Event) -> None:
        """A ``STATE`` for an output. One its driver posted (at start, after a restart) is the new truth."""
        out = self._outputs[event.entity]
        if event.id == out.last_state:
            return  # our own confirmation: already recorded
        out.confirmed = event.value
        self.envelope.record(out.entity, event.value, self.host.clock.monotonic())  # e.g. a restarted driver: safe
        if out.claims.pop(DRIVER_FAILED, None) is not None:
            log.info("%s: driver running again: the claims in force drive it", out.entity)
        if out.desired() != out.confirmed:
            self._reconcile(out, event.id, None, "driver reported its state")

    # -- what controllers and status ask --------------------------------------------------------

    def claim_of(self, entity: str, holder: str) -> Claim | None:
        out = self._outputs.get(entity)
        return None if out is None else out.claims.get(holder)

    def in_force(self, entity: str) -> Claim | None:
        out = self._outputs.get(entity)
        return None if out is None else out.strongest()

    def standing(self, entity: str, holder: str, level: Level = Level.RULES) -> str:
        """How a new claim by ``holder`` at ``level`` will stand among the others (for rule traces):
        ``in force``, ``in force over …`` or ``waiting below …``."""
        out = self._outputs.get(entity)
        if out is None:
            return ""
        others = [c for c in out.ranked() if c.holder != holder]
        if not others:
            return "in force"
        if others[0].level < level:
            return f"waiting below {others[0].describe()}"
        return "in force over " + ", ".join(c.describe() for c in others)

    def confirmed(self, entity: str) -> Value:
        return self._outputs[entity].confirmed

    def describe(self, entity: str) -> str:
        """``rule r (rules) True; waiting: hub (rules) False`` — who drives the output and who waits."""
        out = self._outputs[entity]
        ranked = out.ranked()
        if not ranked:
            return f"no claim: default {out.default!r}"
        text = ranked[0].describe()
        if len(ranked) > 1:
            text += "; waiting: " + ", ".join(c.describe() for c in ranked[1:])
        return text

    def status(self) -> dict[str, OutputStatus]:
        """Per output: its confirmed value, the claim in force and those waiting (``gateway status``)."""
        report: dict[str, OutputStatus] = {}
        for entity, out in self._outputs.items():
            ranked = out.ranked()
            owner = self._owners.get(entity)
            report[entity] = {
                "value": out.confirmed,
                "safe": out.safe,
                "default": out.default,
                "owner": owner.what if owner is not None else None,
                "claims": [{"holder": c.holder, "level": c.level.name.lower(), "value": c.value,
                            "in_force": i == 0} for i, c in enumerate(ranked)],
            }
        return report

    # -- driving the output --------------------------------------------------------------------

    def _reconcile(self, out: _Output, cause: str | None, rule: str | None, why: str | None) -> None:
        """Drive ``out`` to what its strongest claim asks, as far as the envelope allows; one event says how."""
        if out.retry is not None:
            out.retry.cancel()
            out.retry = None
        if self._stopped:
            return
        if DRIVER_FAILED in out.claims and out.claims[DRIVER_FAILED] is out.strongest():
            self._state(out, cause, rule, why)
            return
        desired = out.desired()
        now = self.host.clock.monotonic()
        decision = self.envelope.decide(out.entity, desired, now)
        if decision.verdict == "allow":
            out.refused = False
            self._apply(out, desired, cause, rule, why)
            return
        detail = f"{decision.reason}"
        if decision.until is not None:
            out.retry = self.host.call_at(decision.until, lambda: self._reconcile(out, cause, rule, "deferred: now"))
            detail = f"deferred {decision.until - now:.0f} s: {detail}"
        else:
            out.refused = True
            detail = f"refused: {detail}"
        self.host.emit(self.host.events.make(Kind.REJECTED, out.entity, desired, rule=rule, cause=cause,
                                             detail=detail))

    def _apply(self, out: _Output, value: Value, cause: str | None, rule: str | None, why: str | None) -> None:
        self.host.before_output()
        try:
            confirmed = out.actuator.apply(out.entity, value)
        except Exception as exc:
            self._driver_failed(out, value, exc, cause, rule)
            return
        changed = confirmed != out.confirmed
        out.confirmed = confirmed
        self.envelope.record(out.entity, confirmed, self.host.clock.monotonic())
        self._arm_max_on(out)
        self._state(out, cause, rule, why)
        if changed:
            self._retry_refused(out)

    def _state(self, out: _Output, cause: str | None, rule: str | None, why: str | None) -> None:
        detail = self.describe(out.entity)
        if why:
            detail = f"{why}; {detail}"
        event = self.host.events.make(Kind.STATE, out.entity, out.confirmed, rule=rule, cause=cause, detail=detail)
        out.last_state = event.id
        self.host.emit(event)

    def _driver_failed(self, out: _Output, value: Value, exc: Exception, cause: str | None, rule: str | None) -> None:
        self.failures += 1
        log.error("actuator %s failed to apply %r: %s; held at its safe value until the driver restarts",
                  out.entity, value, exc)
        try:
            out.actuator.to_safe_state()
        except Exception:
            log.exception("actuator %s could not reach its safe state", out.entity)
        out.confirmed = out.safe
        self.envelope.record(out.entity, out.safe, self.host.clock.monotonic())
        out.claims[DRIVER_FAILED] = Claim(DRIVER_FAILED, Level.SAFETY, out.safe, next(self._seq), cause)
        self.host.emit(self.host.events.make(Kind.REJECTED, out.entity, value, rule=rule, cause=cause,
                                             detail=f"driver failed: {exc}"))
        if self.on_driver_failure is not None:
            self.on_driver_failure(out.actuator.id, f"apply failed: {exc}")

    def _retry_refused(self, changed: _Output) -> None:
        """Another output changed: an interlock that refused may allow now."""
        for out in self._outputs.values():
            if out is not changed and out.refused and out.desired() != out.confirmed:
                out.refused = False
                claim = out.strongest()
                self._reconcile(out, claim.cause if claim else None, None, f"{changed.entity} changed")

    # -- time limits -------------------------------------------------------------------------------

    def _arm_max_on(self, out: _Output) -> None:
        if out.max_on is not None:
            out.max_on.cancel()
            out.max_on = None
        deadline = self.envelope.max_on_deadline(out.entity)
        if deadline is not None:
            out.max_on = self.host.call_at(deadline, lambda: self._max_on_reached(out))

    def _max_on_reached(self, out: _Output) -> None:
        """Every claim holding the output away from its safe value is relinquished; holders may claim again."""
        out.max_on = None
        safe_on = is_on(out.safe)
        holders = [h for h, c in out.claims.items() if is_on(c.value) != safe_on]
        for holder in holders:
            del out.claims[holder]
        names = ", ".join(map(holder_text, holders)) or "nobody"
        self._reconcile(out, None, "envelope", f"maximum on time reached: released {names}")

    def _arm_expiry(self, out: _Output) -> None:
        if out.expiry is not None:
            out.expiry.cancel()
            out.expiry = None
        deadlines = [c.expires for c in out.claims.values() if c.expires is not None]
        if deadlines:
            out.expiry = self.host.call_at(min(deadlines), lambda: self._expire(out))

    def _expire(self, out: _Output) -> None:
        out.expiry = None
        now = self.host.clock.monotonic()
        expired = [h for h, c in out.claims.items() if c.expires is not None and c.expires <= now]
        for holder in expired:
            del out.claims[holder]
        self._arm_expiry(out)
        if expired:
            names = ", ".join(map(holder_text, expired))
            self._reconcile(out, None, None, f"{names}: time is up (override or duration ended)")


def _safe_and_default(actuator: Actuator, entity: str) -> tuple[Value, Value]:
    for spec in actuator.entities():
        if spec.id == entity:
            return spec.safe_value, spec.safe_value if spec.default is None else spec.default
    return None, None


def outputs_of(actuators: Iterable[Actuator]) -> dict[str, Actuator]:
    """Entity id -> the actuator that drives it."""
    return {spec.id: actuator for actuator in actuators for spec in actuator.entities()}
