"""The command inlet: hub commands off ``<base>/set/<entity>``, onto the bus, answered on ``result/<entity>``.

A command is checked here, on paho's network thread, before anything reaches the bus
(:mod:`gateway.mqtt.commands` says how); a retained one is ignored and a stale one from the
broker's backlog refused (:mod:`gateway.mqtt.backlog`). What becomes of it is published on
``result/<entity>``: ``accepted`` or ``rejected`` at once, then ``done`` or ``failed`` when the
dispatcher's answer (a state or a rejection caused by the command) comes back through
:meth:`CommandInlet.outcome`.

Under a flood (a broken hub, an attacker on the network) everything here is bounded
(docs/mqtt.md, *Floods*): commands are rate-limited per entity and in total before anything else
is done with them (:class:`CommandLimiter`), and the excess is answered ``rejected: rate limit``
once per burst, not once per message; the commands awaiting their outcome are capped (a command
beyond the cap is refused ``busy``, never one already accepted forgotten); the results waiting for
the publisher are capped too. Every accepted command gets exactly one final answer: ``done``,
``failed``, or ``done`` with nothing to change when the dispatcher went past it without a state or
rejection of its own (a thermostat told ``heat`` while already heating).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from core.entities import EntitySpec
from core.events import Event, EventFactory, Kind, Value
from gateway.mqtt.backlog import OfflineBacklog
from gateway.mqtt.commands import CommandRejected, Validator, decode, validate_command, validator_for
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.topics import Topics, result_payload

log = logging.getLogger(__name__)

MAX_TRACKED_COMMANDS = 1000
"""Accepted hub commands remembered until their outcome (state or rejection) is published. When it is
reached a new command is refused (``busy``): forgetting an accepted one would leave it unanswered."""
TRACK_TIMEOUT = 60.0
"""Seconds an accepted command waits for its outcome before it is answered ``failed`` (a command the
bus had to drop, a dispatcher that hangs): the hub is never left waiting for ever."""
MAX_RESULTS = 2000
"""Results waiting for the publisher. Beyond it the oldest ``accepted`` is shed (a final answer follows
it); final answers are kept up to :data:`MAX_FINAL_RESULTS`. Each shed result is counted in
``shed.results_shed``."""
MAX_FINAL_RESULTS = MAX_RESULTS + 2 * MAX_TRACKED_COMMANDS
"""Final answers waiting for the publisher. The tracked tables bound them (each tracked command has
one, the rate limiter bounds refusals), so this cap is only reached while the broker is away for
long: the oldest is then shed, and its command is older than anything the hub still waits for."""
TOTAL_FACTOR = 5
"""The gateway's total command rate and burst are this many times one entity's (``command_rate``,
``command_burst``): a scene switching a few lights at once passes, a flood over many entities does not."""
RATE_LIMIT_REASON = "rate limit"
BUSY_REASON = "busy"
NOT_TRACKED_REASON = "not tracked"
SUPERSEDED_REASON = "superseded"
MAX_REASON = 200


def unchanged_reason(value: Value) -> str:
    """The ``reason`` of a ``done`` for a command that changed nothing."""
    if value is None:
        return "nothing to change: no claim to release"
    shown = ("on" if value else "off") if isinstance(value, bool) else value
    return f"nothing to change: already {shown}"


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; one token per command."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def refill(self, now: float) -> bool:
        """Add what ``now`` earned; whether the bucket is full (no excess for ``burst / rate`` s)."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens >= self.burst

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class CommandLimiter:
    """Per-entity and total token buckets for hub commands (paho's network thread only).

    :meth:`admit` says ``"ok"``, ``"refuse"`` (the first refusal of a burst: answer it) or
    ``"silent"`` (later refusals of the same burst: count them, answer nothing). A burst ends when
    its bucket has filled up again, i.e. the excess stopped for ``burst / rate`` seconds: a sustained
    flood is answered once, however long it lasts (the commands admitted within it are answered as
    usual, at most at the rate). Memory is bounded: one bucket per entity the hub may command,
    one shared by every other name (a flood of made-up topics cannot grow the table)."""

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float], *,
                 known: Callable[[str], bool]) -> None:
        self._rate = rate
        self._burst = burst
        self._monotonic = monotonic
        self._known = known
        self._total = TokenBucket(rate * TOTAL_FACTOR, burst * TOTAL_FACTOR, monotonic())
        self._buckets: dict[str, TokenBucket] = {}
        self._limited: set[str] = set()
        """Keys (an entity, ``""`` for unknown names, ``"*"`` for the total) in a refused burst."""

    def admit(self, entity: str) -> str:
        now = self._monotonic()
        key = entity if self._known(entity) else ""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, now)
        if bucket.refill(now):
            self._limited.discard(key)
        if self._total.refill(now):
            self._limited.discard("*")
        if not bucket.take(now):
            return self._refused(key)
        if not self._total.take(now):
            bucket.tokens = min(bucket.burst, bucket.tokens + 1.0)  # not spent: the total refused it
            return self._refused("*")
        return "ok"

    def describe(self, entity: str) -> str:
        return (f"{RATE_LIMIT_REASON}: more than {self._rate:g} commands/s for one entity (burst "
                f"{self._burst}) or {self._rate * TOTAL_FACTOR:g}/s in all; until the rate falls, "
                f"further commands are refused without an answer")

    def _refused(self, key: str) -> str:
        if key in self._limited:
            return "silent"
        self._limited.add(key)
        return "refuse"


@dataclass(slots=True)
class _Tracked:
    entity: str
    value: Value
    since: float


def built_in_validators(entities: Mapping[str, EntitySpec]) -> dict[str, Validator]:
    return {entity: validator_for(spec) for entity, spec in entities.items() if spec.writable}


class CommandInlet:
    """Commands come in on paho's network thread; outcomes on the dispatcher thread; results go
    out on the publisher thread."""

    def __init__(
        self, topics: Topics, entities: Mapping[str, EntitySpec], backlog: OfflineBacklog, counters: BridgeCounters,
        *, max_bytes: int, post: Callable[[Event], None], events: EventFactory, wake: Callable[[], None],
        rate: float = 10.0, burst: int = 20,
    ) -> None:
        self._topics = topics
        self.backlog = backlog
        self._counters = counters
        self._max_bytes = max_bytes
        self._post = post
        self._events = events
        self._wake = wake
        self._validators = built_in_validators(entities)
        self._awaiting: OrderedDict[str, _Tracked] = OrderedDict()
        """Accepted command's event id -> what it asked, until its outcome; in the order accepted,
        which is the order the dispatcher takes them (commands are never reordered on the bus)."""
        self._deferred: OrderedDict[str, _Tracked] = OrderedDict()
        """Commands the safety envelope deferred: answered ``deferred`` and waiting for the state the
        arbiter applies them with (same cause), out of the accepted-order sweep of :attr:`_awaiting`."""
        self._awaiting_lock = threading.Lock()
        self._results: deque[tuple[str, bytes, bool]] = deque()
        """(topic, payload, final) waiting for the publisher; at most :data:`MAX_RESULTS`."""
        self._results_lock = threading.Lock()
        self.limiter = CommandLimiter(rate, burst, events.clock.monotonic, known=self._knows)
        self.listeners: list[Callable[[str, str, str | None, Value, str | None], None]] = []
        """Told every result as it is made, ``(entity, status, command id, value, reason)``, on the thread
        that makes it (the local web page answers its own commands with them); must be quick, never raise."""

    @property
    def tracked(self) -> int:
        """Accepted commands still waiting for their outcome."""
        return len(self._awaiting)

    @property
    def results_waiting(self) -> int:
        return len(self._results)

    def _knows(self, entity: str) -> bool:
        return entity in self._validators

    def register(self, entity: str, validator: Validator) -> None:
        self._validators[entity] = validator

    def replace(self, entities: Mapping[str, EntitySpec], validators: Mapping[str, Validator]) -> None:
        """After a rule reload: the built-in validators of ``entities`` and the registered ones."""
        self._validators = {**built_in_validators(entities), **validators}

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """paho's callback for ``<base>/set/+``."""
        if message.topic == self._topics.marker:
            self.backlog.on_marker(bytes(message.payload))
            return
        entity = message.topic[len(self._topics.set_prefix):]
        if message.retain:
            self._counters.commands_retained_ignored += 1
            log.info("ignoring a retained command on %s: a command left on the broker is not replayed",
                     message.topic[:200])
            return
        verdict = self.limiter.admit(entity)
        if verdict != "ok":
            self._counters.commands_rate_limited += 1
            if verdict == "refuse":
                log.warning("hub commands for %s over the rate limit: refusing them until the rate falls "
                            "(one answer per burst)", entity[:64])
                self._reject(entity[:64], self.limiter.describe(entity), bytes(message.payload))
            return
        if not self.backlog.admits(entity, message):
            self._reject(entity[:64], self.backlog.reason, bytes(message.payload))
            return
        self.handle(entity, bytes(message.payload))

    def handle(self, entity: str, payload: bytes) -> Event | None:
        """Validate one hub command; post it as a COMMAND event, or answer why not. Never raises."""
        validator = self._validators.get(entity)
        try:
            if validator is None:
                raise CommandRejected(f"{entity[:64]!r} is not an entity the hub may command")
            value, hold_s = validate_command(validator, decode(payload, self._max_bytes))
        except CommandRejected as exc:
            self._reject(entity[:64], str(exc), payload)
            return None
        self._expire()
        command = self._events.make(Kind.COMMAND, entity, value, detail="hub", hold_s=hold_s)
        with self._awaiting_lock:
            full = len(self._awaiting) >= MAX_TRACKED_COMMANDS
            if not full:
                self._awaiting[command.id] = _Tracked(entity, value, self._events.clock.monotonic())
        if full:
            self._counters.commands_busy += 1
            self._reject(entity[:64], f"{BUSY_REASON}: {MAX_TRACKED_COMMANDS} commands still wait for their "
                                      f"outcome; send it again later", payload)
            return None
        self._counters.commands_accepted += 1
        self._result(entity, "accepted", command.id, value=value)
        self._post(command)
        return command

    def outcome(self, event: Event) -> None:
        """A state or rejection the dispatcher forwarded: ``done`` or ``failed`` if a hub command caused it.

        The dispatcher takes hub commands in the order they were accepted and finishes each one (all
        it causes) before the next, so an outcome for a command also closes every command accepted
        before it that is still waiting: the dispatcher went past them and nothing came of them, as
        when a thermostat is told ``heat`` while already heating. Those are answered ``done`` with
        the value they asked for."""
        passed: list[tuple[str, _Tracked]] = []
        with self._awaiting_lock:
            deferred = self._deferred.pop(event.cause, None) if event.cause is not None else None
            superseded = [] if deferred is not None else self._superseded_by(event)
        for command_id, earlier in superseded:
            self._supersede(command_id, earlier, event)
        with self._awaiting_lock:
            if deferred is not None:
                self._final(deferred, event)
                return
            if event.cause not in self._awaiting:
                return
            while True:  # the dict is in the order accepted: everything before the cause was passed
                command_id, tracked = self._awaiting.popitem(last=False)
                if command_id == event.cause:
                    break
                passed.append((command_id, tracked))
        for command_id, earlier in passed:
            self._unchanged(command_id, earlier)
        if event.kind is Kind.REJECTED and (event.detail or "").startswith("deferred"):
            evicted: list[tuple[str, _Tracked]] = []
            with self._awaiting_lock:
                self._deferred[event.cause or ""] = tracked
                while len(self._deferred) > MAX_TRACKED_COMMANDS:
                    evicted.append(self._deferred.popitem(last=False))
            self._result(tracked.entity, "deferred", event.cause, reason=event.detail)
            for command_id, oldest in evicted:
                self._counters.commands_unresolved += 1
                self._counters.commands_rejected += 1
                self._result(oldest.entity, "failed", command_id, reason=f"{NOT_TRACKED_REASON}: more than "
                             f"{MAX_TRACKED_COMMANDS} deferred commands wait; send it again later")
        else:
            self._final(tracked, event)
        self._expire()

    def settle(self, event: Event) -> None:
        """The dispatcher finished ``event`` and everything it caused (dispatcher thread).

        A hub command still waiting then changed nothing: the thermostat was already in that mode, a
        claim to release was not held. It is answered ``done`` with ``already …`` at once (and so is
        every command accepted before it that is still waiting: the dispatcher took them first)."""
        if event.kind is not Kind.COMMAND:
            return
        passed: list[tuple[str, _Tracked]] = []
        with self._awaiting_lock:
            if event.id not in self._awaiting:
                return
            while self._awaiting:
                command_id, tracked = self._awaiting.popitem(last=False)
                passed.append((command_id, tracked))
                if command_id == event.id:
                    break
        for command_id, tracked in passed:
            self._unchanged(command_id, tracked)

    def _unchanged(self, command_id: str, tracked: _Tracked) -> None:
        self._result(tracked.entity, "done", command_id, value=tracked.value, reason=unchanged_reason(tracked.value))

    def _superseded_by(self, event: Event) -> list[tuple[str, _Tracked]]:
        """Deferred commands for ``event``'s entity that ``event`` overtook (call with the lock held).

        The arbiter re-decides an output on every change and cancels the retry of a deferral
        each time, so a state or a new deferral with another cause means the deferred command
        will never be applied as such."""
        if event.kind is Kind.REJECTED and not (event.detail or "").startswith("deferred"):
            return []
        overtaken = [command_id for command_id, tracked in self._deferred.items()
                     if tracked.entity == event.entity and command_id != event.cause]
        return [(command_id, self._deferred.pop(command_id)) for command_id in overtaken]

    def _supersede(self, command_id: str, tracked: _Tracked, event: Event) -> None:
        if event.kind is Kind.STATE and event.value == tracked.value:
            self._result(tracked.entity, "done", command_id, value=event.value,
                         reason="applied with a later decision")
            return
        self._counters.commands_rejected += 1
        by = f" by {event.cause}" if event.cause else ""  # the newer hub command, or the event that decided
        self._result(tracked.entity, "failed", command_id,
                     reason=f"{SUPERSEDED_REASON}{by} before it could be applied: {event.detail or 'another decision'}"
                     [:MAX_REASON])

    def _final(self, tracked: _Tracked, event: Event) -> None:
        """``done`` for a state the command caused, ``failed`` for a refusal."""
        if event.kind is Kind.STATE:
            self._result(tracked.entity, "done", event.cause, value=event.value)
        else:
            self._counters.commands_rejected += 1
            self._result(tracked.entity, "failed", event.cause, reason=event.detail or "not applied")

    def send_results(self, client: mqtt.Client) -> None:
        """Publish the results that wait (publisher thread, while connected)."""
        self._expire()
        while True:
            with self._results_lock:
                if not self._results:
                    return
                topic, payload, _ = self._results.popleft()
            client.publish(topic, payload, qos=1)

    def _expire(self) -> None:
        """Answer ``failed`` the commands that waited :data:`TRACK_TIMEOUT` for an outcome (any thread)."""
        limit = self._events.clock.monotonic() - TRACK_TIMEOUT
        expired: list[tuple[str, _Tracked]] = []
        with self._awaiting_lock:
            while self._awaiting:
                command_id = next(iter(self._awaiting))
                if self._awaiting[command_id].since > limit:
                    break
                expired.append(self._awaiting.popitem(last=False))
        for command_id, tracked in expired:
            self._counters.commands_unresolved += 1
            self._counters.commands_rejected += 1
            self._result(tracked.entity, "failed", command_id,
                         reason=f"no outcome within {TRACK_TIMEOUT:g} s: the gateway is overloaded")

    def _reject(self, entity: str, reason: str, payload: bytes) -> None:
        """The refusal carries the reason and the payload's size, never the payload itself:
        it may hold an alarm code or a password sent to the wrong topic, and events are published."""
        self._counters.commands_rejected += 1
        event = self._events.make(
            Kind.REJECTED, entity, None, detail=f"hub command rejected: {reason} ({len(payload)} bytes)"
        )
        self._result(entity, "rejected", event.id, reason=reason)
        self._post(event)

    def _result(self, entity: str, status: str, command_id: str | None, *, value: Value = None,
                reason: str | None = None) -> None:
        payload = result_payload(entity, status, command_id, self._events.clock.time(), value=value, reason=reason)
        for listener in self.listeners:
            listener(entity, status, command_id, value, reason)
        with self._results_lock:
            self._results.append((self._topics.result(entity), payload, status != "accepted"))
            if len(self._results) > MAX_RESULTS:
                self._shed_result(len(self._results) > MAX_FINAL_RESULTS)
        self._wake()

    def _shed_result(self, over_hard_cap: bool) -> None:
        """The oldest ``accepted`` goes (its final answer follows); a final answer only above the hard cap."""
        for index, (_, _, final) in enumerate(self._results):
            if not final:
                del self._results[index]
                break
        else:
            if not over_hard_cap:
                return
            self._results.popleft()
        self._counters.results_shed += 1
