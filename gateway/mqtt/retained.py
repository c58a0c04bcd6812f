"""Retained topics: every entity's latest state and availability, and Home Assistant discovery.

They are not queued behind the outbox: the latest value of a topic replaces the one still
waiting, and goes out as soon as the broker is reachable. Everything ever retained is kept, to be
published again after each connection and each birth of the hub (Home Assistant forgets what it
had when it restarts); discovery goes first, with removals for entities no longer configured.

A reading's retained state is throttled per entity (the event stream keeps every value): the first
reading after a quiet :data:`READING_STATE_INTERVAL` is published at once, later ones within the
interval only replace the held value, and the newest goes out when the interval is over. A sensor
sending 1,000 lines a second therefore costs 4 state messages a second instead of 1,000 (issue 14:
the state publish was a third of the MQTT messages per reading), and the hub's ``expire_after``
(three reporting intervals) is still refreshed in time. A confirmed actuator state is never held.

A hub's births are coalesced: the first one is answered at once, those within
:data:`BIRTH_INTERVAL` of a re-announcement only mark one more as due when the interval is over
(counted in ``shed.births_coalesced``). A flood of births (a hub in a restart loop, an attacker)
therefore costs at most one re-announcement a second, and memory for one copy of each topic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

from core.entities import Component, EntitySpec
from core.events import K_READING, K_STATE, Event, Value
from gateway.mqtt.discovery import Discovery, Extra
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.topics import OFFLINE, ONLINE, Topics, remember_topic, state_payload

log = logging.getLogger(__name__)

BIRTH_INTERVAL = 1.0
"""Seconds: at most one re-announcement for the hub's births in each."""

MOMENT_MAX_AGE = 5.0
"""Seconds: a gesture of an ``event`` entity (a button's press) older than this when the broker can take it
is not sent at all: a press from before an outage must not switch a light when the link returns."""
MOMENTS_MAX = 32
"""Gestures kept while they wait to be sent (the oldest go first)."""
READING_STATE_INTERVAL = 0.25
"""Seconds: at most one retained state per entity from readings in each (the newest; see the module
docstring)."""


_EVENT_COMPONENT = Component.EVENT
"""Read at every reading: a module constant, as ``core.events``' ``K_*`` kinds (an enum class's attribute is slow
to read on Python 3.11)."""

_NEVER = float("-inf")
"""A topic whose reading state was never published: not held (a constant, not a float built per reading)."""


class Publishes(Protocol):
    """What :meth:`RetainedTopics.send` needs of paho's client (a test hands it a recorder)."""

    def publish(self, topic: str, payload: bytes, qos: int = ..., retain: bool = ...) -> object: ...


class RetainedTopics:
    """Fed on the dispatcher thread (states, availability, registrations) and on paho's network
    thread (republishing on a connection or the hub's birth); sent on the publisher thread."""

    def __init__(
        self, topics: Topics, entities: Mapping[str, EntitySpec], discovery: Discovery | None,
        counters: BridgeCounters, fits: Callable[[str, bytes], bool], *,
        monotonic: Callable[[], float] = time.monotonic, reading_interval: float = READING_STATE_INTERVAL,
    ) -> None:
        self.topics = topics
        self.entities = dict(entities)
        self.discovery = discovery
        self._extras: dict[str, Extra] = {}
        self._counters = counters
        self._fits = fits
        self._lock = threading.Lock()
        self._announcing = threading.Lock()
        """Held through an announcement (:meth:`republish`, :meth:`replace`), taken before ``_lock``: a reload
        (the caller's thread) and a connection (the uplink's network thread) both announce, and interleaved, one
        could compute its configs from the entities before the reload and queue them after the reload's removals,
        or both rewrite ``discovery.json`` at once (a corrupt file: entities removed later stay on the hub)."""
        self._retained: dict[str, bytes] = {}
        """Every retained topic's latest payload: republished after a connection or the hub's birth."""
        self._dirty: dict[str, bytes] = {}
        """What waits to be published, in publishing order."""
        self._last_state: dict[str, tuple[Value, str | None]] = {}
        self._state_topics: dict[str, str] = {}
        """Entity -> its ``state/<entity>`` topic (:meth:`_state_topic`; dispatcher thread only)."""
        self._available: dict[str, bool] = {}
        self._monotonic = monotonic
        self._next_birth = float("-inf")
        """Monotonic time before which a hub birth is folded into a pending re-announcement."""
        self._birth_pending = False
        self._moments: deque[tuple[float, str, bytes]] = deque(maxlen=MOMENTS_MAX)
        """Gestures of ``event`` entities, (monotonic time, topic, payload), sent in order and not retained."""
        self.moments_dropped = 0
        """Gestures not sent: older than :data:`MOMENT_MAX_AGE` when the broker could take them."""
        self._reading_interval = reading_interval
        self._held: dict[str, Value] = {}
        """Readings' states held until their topic's interval is over: topic -> newest value. A value, not its
        payload: a flood replaces it hundreds of times for each one sent (issue 14)."""
        self._next_reading: dict[str, float] = {}
        """topic -> monotonic time before which a reading's state is held rather than published."""
        for entity in self.entities:
            self.set_available(entity, True)

    @property
    def waiting(self) -> bool:
        """Something waits to be published, or a coalesced re-announcement or a held state is still due."""
        return bool(self._dirty) or bool(self._moments) or self._birth_pending or bool(self._held)

    @property
    def held(self) -> bool:
        """Readings' states wait for their interval to end."""
        return bool(self._held)

    def update_state(self, event: Event) -> None:
        """A reading always refreshes the retained state (the hub's ``expire_after`` counts on it), at
        most once per :data:`READING_STATE_INTERVAL` per entity, the newest value last; a confirmed
        actuator state is published when it changes, at once.

        An ``event`` entity's gesture (a button's ``press``) is a moment, not a state: it is sent once, in
        order and not retained, so the rest (null) its driver posts right after it cannot replace it before
        it is sent (Home Assistant would never see the press), and a hub subscribing later sees the button
        at rest."""
        entity = event.entity
        if not self._available.get(entity, True):
            self.set_available(entity, True)
        value = event.value
        spec = self.entities.get(entity)
        if spec is not None and spec.component is _EVENT_COMPONENT and value is not None:
            topic = self.topics.state(entity)
            payload = state_payload(value)
            if self._fits(topic, payload):
                with self._lock:
                    self._moments.append((self._monotonic(), topic, payload))
            return
        kind = event.kind
        current = (value, event.unit)
        if kind is K_STATE and self._last_state.get(entity) == current:
            return
        self._last_state[entity] = current
        topic = self._state_topics.get(entity) or self._state_topic(entity)
        if kind is not K_READING or self._reading_interval <= 0:
            with self._lock:
                self._held.pop(topic, None)
            self.retain(topic, state_payload(value))
            return
        now = self._monotonic()
        with self._lock:
            if now < self._next_reading.get(topic, _NEVER):
                self._held[topic] = value  # its payload is made once, when it is sent (issue 14)
                return
        payload = state_payload(value)
        if not self._fits(topic, payload):
            self.retain(topic, payload)  # refused there, counted and logged
            return
        with self._lock:
            self._next_reading[topic] = now + self._reading_interval
            self._held.pop(topic, None)
        self.retain(topic, payload)

    def _state_topic(self, entity: str) -> str:
        """``state/<entity>``, remembered for the entity's next state (:meth:`update_state`, dispatcher thread): a
        lookup rather than a call and a string built per reading (issue 14), for up to :data:`TOPICS_REMEMBERED`
        entities."""
        return remember_topic(self._state_topics, entity, self.topics.state(entity))

    def wait(self) -> float | None:
        """Seconds until the first held reading's state is due; None if none is held (publisher thread)."""
        with self._lock:
            if not self._held:
                return None
            due = min(self._next_reading[topic] for topic in self._held)
        return max(0.0, due - self._monotonic())

    def _release_held(self, flush: bool) -> None:
        """Move the held states whose interval is over (all of them with ``flush``) to what waits (as
        :meth:`retain`: one that cannot fit the broker's packet limit is refused)."""
        now = self._monotonic()
        with self._lock:
            if not self._held:
                return
            due = {t: self._held.pop(t) for t in [t for t in self._held if flush or now >= self._next_reading[t]]}
            for topic in due:
                self._next_reading[topic] = now + self._reading_interval
        for topic, value in due.items():
            self.retain(topic, state_payload(value))

    def _held_payloads(self) -> dict[str, bytes]:
        """The held readings' states as payloads, those that fit (under the lock: a republish sends the newest)."""
        payloads = {topic: state_payload(value) for topic, value in self._held.items()}
        return {topic: payload for topic, payload in payloads.items() if self._fits(topic, payload)}

    def set_available(self, entity: str, available: bool) -> None:
        self._available[entity] = available
        self.retain(self.topics.availability(entity), (ONLINE if available else OFFLINE).encode())

    def retain(self, topic: str, payload: bytes) -> None:
        """Latest value wins. One that can never fit the broker's packet limit is refused here, or its
        republishing would make the broker drop the link again and again."""
        if not self._fits(topic, payload):
            self._counters.retained_refused += 1
            log.error("retained %s refused: %d bytes exceed the broker's maximum packet size", topic, len(payload))
            return
        with self._lock:
            self._retained[topic] = payload
            self._dirty[topic] = payload

    def register(self, entity: str, extra: Extra) -> None:
        """A component other code describes (a thermostat, an alarm panel); before start."""
        self._extras[entity] = extra
        if entity not in self._available:
            self.set_available(entity, True)

    def replace(self, entities: Mapping[str, EntitySpec], extras: Mapping[str, Extra]) -> None:
        """After a rule reload: the entities and extras as they are now; the hub hears at once."""
        with self._announcing:
            with self._lock:
                self.entities = dict(entities)
                self._extras = dict(extras)
            for entity in (*entities, *extras):
                if entity not in self._available:
                    self.set_available(entity, True)
            self._republish(removals=True)

    def discovery_configs(self) -> dict[str, bytes]:
        """Config topic -> payload of what is announced now (empty without discovery); any thread."""
        if self.discovery is None:
            return {}
        with self._lock:
            entities, extras = dict(self.entities), dict(self._extras)
        return self.discovery.configs(entities, extras)

    def republish(self, *, removals: bool) -> None:
        """Queue discovery (removals first), then every retained state and availability.

        Added to what still waits, never replacing it: a removal queued while the link was down (a
        reload) is remembered as sent in ``discovery.json`` already, so it exists only in ``_dirty``.

        Without ``removals`` (a hub's birth) it is coalesced: at most one per :data:`BIRTH_INTERVAL`;
        one asked for sooner is done by :meth:`send` once the interval is over. Any thread: one at a time."""
        with self._announcing:
            self._republish(removals=removals)

    def _republish(self, *, removals: bool) -> None:
        if not removals:
            now = self._monotonic()
            with self._lock:
                if now < self._next_birth:
                    self._birth_pending = True
                    self._counters.births_coalesced += 1
                    return
                self._next_birth = now + BIRTH_INTERVAL
                self._birth_pending = False
        announce: dict[str, bytes] = {}
        if self.discovery is not None:
            configs = self.discovery.configs(self.entities, self._extras)
            if removals:
                announce.update(self.discovery.removals(configs))
            announce.update(configs)
        with self._lock:
            self._dirty = {**self._dirty, **announce, **self._retained, **self._held_payloads()}

    def send(self, client: Publishes, *, flush: bool = False) -> None:
        """Publish what waits (publisher thread, while connected), with a coalesced birth's
        re-announcement once its interval is over, and the held readings' states whose interval is over
        (all of them with ``flush``: the gateway is stopping)."""
        if self._birth_pending and self._monotonic() >= self._next_birth:
            self.republish(removals=False)
        self._release_held(flush)
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            moments, self._moments = list(self._moments), deque(maxlen=MOMENTS_MAX)
        now = self._monotonic()
        for at, topic, payload in moments:
            if now - at > MOMENT_MAX_AGE:
                self.moments_dropped += 1
                log.info("%s not sent: %.0f s old when the broker could take it", topic, now - at)
                continue
            client.publish(topic, payload, qos=1, retain=False)
        for topic, payload in dirty.items():
            client.publish(topic, payload, qos=1, retain=True)
            self._counters.states_published += 1
