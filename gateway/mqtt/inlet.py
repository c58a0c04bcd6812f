"""The command inlet: hub commands off ``<base>/set/<entity>``, onto the bus, answered on ``result/<entity>``.

A command is checked here, on paho's network thread, before anything reaches the bus
(:mod:`gateway.mqtt.commands` says how); a retained one is ignored and a stale one from the
broker's backlog refused (:mod:`gateway.mqtt.backlog`). What becomes of it is published on
``result/<entity>``: ``accepted`` or ``rejected`` at once, then ``done`` or ``failed`` when the
dispatcher's answer (a state or a rejection caused by the command) comes back through
:meth:`CommandInlet.outcome`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

import paho.mqtt.client as mqtt

from core.entities import EntitySpec
from core.events import Event, EventFactory, Kind, Value
from gateway.mqtt.backlog import STALE_REASON, OfflineBacklog
from gateway.mqtt.commands import CommandRejected, Validator, decode, validate, validator_for
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.topics import Topics, result_payload

log = logging.getLogger(__name__)

MAX_TRACKED_COMMANDS = 1000
"""Accepted hub commands remembered until their outcome (state or rejection) is published."""


def built_in_validators(entities: Mapping[str, EntitySpec]) -> dict[str, Validator]:
    return {entity: validator_for(spec) for entity, spec in entities.items() if spec.writable}


class CommandInlet:
    """Commands come in on paho's network thread; outcomes on the dispatcher thread; results go
    out on the publisher thread."""

    def __init__(
        self, topics: Topics, entities: Mapping[str, EntitySpec], backlog: OfflineBacklog, counters: BridgeCounters,
        *, max_bytes: int, post: Callable[[Event], None], events: EventFactory, wake: Callable[[], None],
    ) -> None:
        self._topics = topics
        self.backlog = backlog
        self._counters = counters
        self._max_bytes = max_bytes
        self._post = post
        self._events = events
        self._wake = wake
        self._validators = built_in_validators(entities)
        self._awaiting: OrderedDict[str, str] = OrderedDict()
        """Accepted command's event id -> its entity, until its outcome."""
        self._awaiting_lock = threading.Lock()
        self._results: deque[tuple[str, bytes]] = deque()

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
        if not self.backlog.admits(entity, message):
            self._reject(entity[:64], STALE_REASON, bytes(message.payload))
            return
        self.handle(entity, bytes(message.payload))

    def handle(self, entity: str, payload: bytes) -> Event | None:
        """Validate one hub command; post it as a COMMAND event, or answer why not. Never raises."""
        validator = self._validators.get(entity)
        try:
            if validator is None:
                raise CommandRejected(f"{entity[:64]!r} is not an entity the hub may command")
            value = validate(validator, decode(payload, self._max_bytes))
        except CommandRejected as exc:
            self._reject(entity[:64], str(exc), payload)
            return None
        command = self._events.make(Kind.COMMAND, entity, value, detail="hub")
        with self._awaiting_lock:
            self._awaiting[command.id] = entity
            while len(self._awaiting) > MAX_TRACKED_COMMANDS:
                self._awaiting.popitem(last=False)
        self._counters.commands_accepted += 1
        self._result(entity, "accepted", command.id, value=value)
        self._post(command)
        return command

    def outcome(self, event: Event) -> None:
        """A state or rejection the dispatcher forwarded: ``done`` or ``failed`` if a hub command caused it."""
        with self._awaiting_lock:
            entity = self._awaiting.pop(event.cause or "", None)
        if entity is None:
            return
        if event.kind is Kind.STATE:
            self._result(entity, "done", event.cause, value=event.value)
        else:
            self._counters.commands_rejected += 1
            self._result(entity, "failed", event.cause, reason=event.detail or "not applied")

    def send_results(self, client: mqtt.Client) -> None:
        """Publish the results that wait (publisher thread, while connected)."""
        while self._results:
            topic, payload = self._results.popleft()
            client.publish(topic, payload, qos=1)

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
        self._results.append((self._topics.result(entity), payload))
        self._wake()
