"""The MQTT bridge: forwards every event to the hub and brings the hub's commands in.

:class:`MqttBridge` is the small façade the application wires in; the work is done by its parts,
each in its own module::

    outbox      Outbox             every event, durable in SQLite until the broker acknowledges it
    retained    RetainedTopics     latest state and availability per entity, discovery
    inlet       CommandInlet       hub commands in (checked at the edge), results out
    backlog     OfflineBacklog     the marker that refuses commands the broker kept while offline
    lag         LagWatch           the inlet's lag under a flood: a backlog older than 1 s is dropped (reconnect)
    window      PublishWindow      outbox rows handed to paho: in-flight window, drain pacing
    health      HealthReporter     counters and the ``<base>/health`` report
    link        Link               the uplink connection (publishes): connect, backoff, outages, clean close
    inbound     Link               the inlet connection (subscribes: hub commands, births, foreign topics)
    publisher   Publisher          the thread that commits the outbox and sends all of the above

Threads and who owns what::

    dispatcher thread ── forward(event) ──> outbox.add (memory) + latest state (memory)   never waits on I/O
                         then, if the row is next and the window has room, paho.publish (window.hand_over)
    publisher thread  ── commits the outbox every batch window, hands the other rows to paho
                         within the in-flight window and the drain rate, publishes retained
                         states, results, health and discovery, deletes acknowledged rows
    network threads   ── one per connection, each connects with backoff + jitter and calls our
                         guarded callbacks, which only record acks, flip the connection state or
                         post command events. The uplink's thread reads only acknowledgements, so a
                         flood on the inlet never stands in front of them (docs/mqtt.md, *Two connections*).
                         The uplink's is ours (netloop.py): a publish on any thread writes to the socket
                         itself, under one lock, and wakes no thread; the inlet's is paho's (loop_start)

Delivery (one owner of retransmission, ordering) is explained in :mod:`gateway.mqtt.window`, the
commands kept while offline in :mod:`gateway.mqtt.backlog`; the contract is docs/mqtt.md.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import paho.mqtt.client as mqtt

from core.entities import EntitySpec
from core.events import (
    K_AVAILABILITY,
    K_COMMAND,
    K_READING,
    K_REJECTED,
    K_STATE,
    K_SYSTEM,
    Event,
    EventFactory,
    publish_request,
)
from gateway.bus import waker
from gateway.config import Config
from gateway.mqtt.backlog import OfflineBacklog
from gateway.mqtt.commands import Validator
from gateway.mqtt.connection import is_mqtt5
from gateway.mqtt.discovery import Discovery, Extra, hub_devices
from gateway.mqtt.foreign import ForeignEntities
from gateway.mqtt.health import BridgeCounters, HealthReporter, HealthSource, software_version
from gateway.mqtt.inlet import CommandInlet
from gateway.mqtt.lag import LagWatch
from gateway.mqtt.link import JOIN_MARGIN, Link
from gateway.mqtt.netloop import SerialisedClient
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.publisher import Publisher
from gateway.mqtt.retained import RetainedTopics
from gateway.mqtt.topics import ONLINE, STATE_KINDS, Topics, event_payload, remember_topic
from gateway.mqtt.window import PublishWindow

log = logging.getLogger(__name__)


def _write_nothing() -> None:
    """:meth:`MqttBridge.batch`'s write while nothing is corked."""

STOP_RESERVE = 0.4
"""Part of stop()'s timeout kept for the offline status, the disconnect and the thread join."""


class MqttBridge:
    """See the module docstring and ``docs/mqtt.md``, *For developers*."""

    def __init__(
        self,
        config: Config,
        entities: Mapping[str, EntitySpec],
        post: Callable[[Event], None],
        events: EventFactory,
    ) -> None:
        section = config.mqtt
        self.config = config
        self.topics = Topics(config.base_topic, section.discovery_prefix)
        self.counters = BridgeCounters()
        self._packet_limit = section.max_packet_size
        self.outbox = Outbox(
            config.gateway.state_dir / "outbox.sqlite3",
            batch_ms=config.outbox.batch_ms,
            synchronous=config.outbox.synchronous,
            max_events=config.outbox.max_events,
            reserve=config.outbox.reserve,
            max_packet_size=section.max_packet_size,
            mqtt5=is_mqtt5(section),
            seq_floor=int(events.clock.time() * 1000),  # only a new outbox (a replaced or in-memory one) uses it
        )
        self._stopping = threading.Event()
        self._stopped = False
        """``_stopping`` as a plain flag, for :meth:`_queue` on the dispatcher thread: ``Event.is_set`` is a
        Python-level call per message (issue 14). Set with it, in :meth:`stop` only."""
        wakeup = threading.Event()
        self._wake = waker(wakeup)
        discovery = (
            Discovery(self.topics, config.gateway.id, config.gateway.name, software_version(),
                      config.gateway.state_dir / "discovery.json", devices=hub_devices(config.drivers()))
            if section.discovery else None
        )
        self.retained = RetainedTopics(self.topics, entities, discovery, self.counters, self.outbox.fits)
        self.inlet = CommandInlet(
            self.topics, entities, OfflineBacklog(self.topics, self.counters, mqtt5=is_mqtt5(section)),
            self.counters, max_bytes=section.command_max_bytes, post=post, events=events, wake=self._wake,
            rate=section.command_rate, burst=section.command_burst,
        )
        self.window = PublishWindow(self.outbox, self.counters, size=section.max_inflight,
                                    drain_rate=section.drain_rate, wake=self._wake, stream=self.topics.events,
                                    batch_max=section.event_batch_max, batch_bytes=section.event_batch_bytes,
                                    batching=section.event_batches)
        self._stream = self.topics.events if section.event_batches else None
        """Where every event goes with ``event_batches``: the stream ``events``, whose rows the window sends as
        arrays (window.py); None: each entity's own ``event/<entity>``."""
        self._event_topics: dict[str, str] = {}
        """Entity -> its ``event/<entity>`` topic (:meth:`_event_topic`)."""
        self.inbound_counters = BridgeCounters()
        """The inlet connection's connects and disconnects (the bridge's own count the uplink's)."""
        try:
            self.link = Link(config, self.topics, self.counters, self._stopping, came_up=self._came_up,
                             wake=self._wake, forget=self.inbound_filters, hurry=self.window.filling)
            """The uplink: everything the gateway publishes, and its last will (link.py)."""
            self.lag = LagWatch(self.topics.marker, self.counters, time.monotonic)
            """The inlet's lag watch: a flood's backlog is dropped, not read for seconds (lag.py)."""
            self.inbound = Link(config, self.topics, self.inbound_counters, self._stopping,
                                came_up=self._inbound_came_up, wake=self._wake, follows=self.link,
                                lag=self.lag, purged=self.inlet.backlog.purged)
            """The inlet connection (``<client_id>-in``): everything the gateway subscribes to (link.py)."""
        except BaseException:
            self.outbox.close()
            raise
        self.subscribe(self.topics.set_filter, self.inlet.on_message, "mqtt command")
        self.foreign = ForeignEntities(config.mqtt_entities, post, events)
        """``[[mqtt_entities]]``: other devices' topics heard as readings (gateway/mqtt/foreign.py)."""
        for topic in self.foreign.topics:
            self.subscribe(topic, self.foreign.on_message, "mqtt entity")
        if discovery is not None:
            self.subscribe(self.topics.hub_status, self._on_hub_status, "mqtt hub status")
        self.link.acks_to(self.window.on_publish, self.window.on_publish_run)
        self.window.acks_wanted = self.link.acks_wanted
        self.reporter = HealthReporter(self.counters, self.outbox, events.clock, interval=section.health_interval,
                                       topic=self.topics.health, connection=self.link.state,
                                       link_facts=self.link.facts)
        self.reporter.add_source("inlet", self._inbound_facts)
        if self.foreign.topics:
            self.reporter.add_source("mqtt_entities", self.foreign.status)
        self._publisher = Publisher(self.outbox, self.window, retained=self.retained, inlet=self.inlet,
                                    reporter=self.reporter, link=self.link, stopping=self._stopping, wakeup=wakeup)

    # -- the application's interface -------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background; returns at once, whatever the network does."""
        if self._publisher.started:
            return
        self.link.start()
        self.inbound.start()
        self.reporter.mark_start()
        self._publisher.start()

    def forward(self, event: Event) -> None:
        """Queue ``event`` for ``event/<entity>`` (with ``[mqtt] event_batches``: for the stream ``events``) and
        update the retained state; never waits on I/O."""
        self.counters.events_in += 1
        batches = self.outbox.batches
        kind = event.kind  # a StrEnum: the outbox's kind name as it is (``.value`` is an enum descriptor's call)
        if kind is K_SYSTEM:  # only a system event can be a rule's publish request (publish_request)
            handed = self._publish_message(event)
            if handed is not None:
                self._wake_unless_handed(handed, batches)
                return
        key = self._event_topics.get(event.entity) or self._event_topic(event.entity, remember=kind is K_READING)
        if self._queue(self._stream or key, functools.partial(event_payload, event), kind=kind, ts=event.ts,
                       key=key) and kind is K_READING:
            self.retained.update_state(event)  # a reading's state is held or due: the next commit's round sends it
            if self.outbox.batches != batches:  # _wake_unless_handed(True, batches), a call less per reading
                self._wake()
            return
        if kind in STATE_KINDS:
            self.retained.update_state(event)
        elif kind is K_AVAILABILITY:
            self.retained.set_available(event.entity, bool(event.value))
        if event.cause is not None and kind in (K_STATE, K_REJECTED):
            self.inlet.outcome(event)
        self._wake()

    def _event_topic(self, entity: str, *, remember: bool) -> str:
        """``event/<entity>``, remembered for the next event of ``entity`` (dispatcher thread): a lookup rather than
        a call and a string built per event (issue 14), for up to :data:`TOPICS_REMEMBERED` entities. Only a
        reading's entity is remembered: readings come from the configured sensors and are the many events, while a
        hub's command to a made-up entity (its ``rejected`` event) would otherwise take a place for good."""
        topic = self.topics.event(entity)
        return remember_topic(self._event_topics, entity, topic) if remember else topic

    def batch(self) -> contextlib.AbstractContextManager[Callable[[], None]]:
        """Around a batch of events the dispatcher forwards (:attr:`Dispatcher.batch_scope`): the messages it hands
        paho reach the socket together when it ends, or when the function it gives is called
        (:meth:`SerialisedClient.batch`). Nothing while the uplink is down: the dispatcher hands paho nothing then,
        and must not meet the lock a connection attempt holds."""
        client = self.link.client
        if not self.link.connected or not isinstance(client, SerialisedClient):
            return contextlib.nullcontext(_write_nothing)
        return client.batch()

    def settle(self, event: Event) -> None:
        """The dispatcher finished ``event`` and all it caused: a hub command that changed nothing is
        answered ``done`` now (dispatcher thread; wired to :attr:`Dispatcher.commands_settled`, so it is not called
        for a reading: issue 14). Only a command can be one: any other event returns here."""
        if event.kind is K_COMMAND:
            self.inlet.settle(event)

    def stop(self, timeout: float = 1.5) -> None:
        """Flush what the timeout allows, publish ``offline`` (retained), disconnect. Returns within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._publisher.flush_until(deadline - STOP_RESERVE)
        self._stopped = True
        self._stopping.set()
        self.link.cancel_backoff()
        self.inbound.cancel_backoff()
        self._wake()
        self._publisher.join(deadline - STOP_RESERVE / 2)
        self.outbox.close()
        if self._publisher.started:
            # The inlet first, without waiting (no command is taken once stopping); then the uplink's
            # ``offline``; then whatever of the budget is left for the inlet's thread to end.
            inbound = self.inbound.close(offline_by=0.0, release_by=0.0)
            self.link.close(offline_by=deadline - STOP_RESERVE / 2, release_by=deadline)
            inbound.join(max(0.0, deadline - time.monotonic() - JOIN_MARGIN))

    def handle_command(self, entity: str, payload: bytes) -> Event | None:
        """Validate one hub command; post it as a COMMAND event, or answer why not. Never raises."""
        return self.inlet.handle(entity, payload)

    @property
    def connected(self) -> bool:
        """Both connections are up: the gateway publishes and hears the hub."""
        return self.link.connected and self.inbound.connected

    def subscribe(self, topic_filter: str, callback: Callable[[mqtt.Client, object, mqtt.MQTTMessage], None],
                  what: str) -> None:
        """Messages on ``topic_filter`` go to ``callback`` on the inlet connection's thread (through
        ``guarded``); subscribed at QoS 1 on every connection. Answers go out on the uplink. Call before
        :meth:`start`."""
        self.inbound.route(topic_filter, callback, what)

    def inbound_filters(self) -> list[str]:
        """What the inlet subscribes to (the uplink unsubscribes these from a session kept from before)."""
        return self.inbound.routes

    @property
    def started(self) -> bool:
        """:meth:`start` was called: from then on hub commands may be posted onto the bus."""
        return self._publisher.started

    @property
    def entities(self) -> dict[str, EntitySpec]:
        return self.retained.entities

    def health(self) -> dict[str, Any]:
        """The figures published on ``<base>/health`` every ``health_interval`` (see docs/mqtt.md),
        plus each :meth:`add_health_source` under its name. Safe from any thread."""
        return self.reporter.report()

    # -- extension points ------------------------------------------------------------------------

    def register_command(self, entity: str, validator: Validator) -> None:
        """Accept hub commands on ``<base>/set/<entity>``, checked by ``validator`` (see
        :mod:`gateway.mqtt.commands`). Accepted ones are posted as ``Kind.COMMAND`` events for
        ``entity``; whoever owns the entity (a controller) reacts to them on the dispatcher.
        Replaces the built-in validator of a configured entity. Call before :meth:`start`."""
        self.inlet.register(entity, validator)

    def register_discovery(self, entity: str, component: str, config: Mapping[str, object]) -> None:
        """Announce ``entity`` to Home Assistant as ``component`` (e.g. ``climate``,
        ``alarm_control_panel``) with its component-specific keys; the device block,
        availability, unique id and QoS are added (see :mod:`gateway.mqtt.discovery`).
        Call before :meth:`start`; the entity's state and availability topics are
        ``bridge.topics.state(entity)`` / ``bridge.topics.availability(entity)``."""
        self.retained.register(entity, Extra(component, dict(config)))

    def update_registrations(
        self,
        entities: Mapping[str, EntitySpec],
        commands: Mapping[str, Validator],
        discovery: Iterable[tuple[str, str, Mapping[str, object]]],
    ) -> None:
        """After a rule reload: the entities, command targets and discovery extras as they are now.

        Replaces what :meth:`register_command` and :meth:`register_discovery` set before start;
        the hub gets the new discovery at once, and entities that are gone are removed from it.
        Safe from any thread."""
        self.inlet.replace(entities, commands)
        self.retained.replace(entities, {entity: Extra(component, dict(config))
                                         for entity, component, config in discovery})
        self._wake()

    def add_health_source(self, name: str, source: HealthSource) -> None:
        """Add ``name: source()`` to every health report (e.g. the drivers' health).
        ``source`` is called on the publisher thread and must be thread-safe and quick."""
        self.reporter.add_source(name, source)

    # -- wiring between the parts ------------------------------------------------------------------

    def _publish_message(self, event: Event) -> bool | None:
        """A rule's ``publish`` action: ``payload`` on ``<base>/<topic>``, durable like every event
        (retained ones keep only the latest, as retained states do). None if ``event`` was not such a
        request; else whether paho already has the message (:meth:`_queue`). The message is all it costs on
        MQTT, with no copy of the request on ``event/publish`` (the rule's trace and the event history keep
        which rule sent it). A malformed request is logged and forwarded as an ordinary event, where it can
        be seen."""
        try:
            request = publish_request(event)
        except ValueError as exc:
            log.error("publish event %s is malformed (%s): %.200r", event.id, exc, event.value)
            return None
        if request is None:
            return None
        topic = f"{self.topics.base}/{request.topic}"
        payload = request.payload.encode()
        if request.retain:
            self.retained.retain(topic, payload)
            return False
        return self._queue(topic, lambda seq: payload, kind="publish", ts=event.ts)

    def _queue(self, topic: str, make_payload: Callable[[int], bytes], *, kind: str, ts: float,
               key: str | None = None) -> bool:
        """Add a row to the outbox and, when the uplink is up and the window lets it, hand it to paho here and
        now (:meth:`PublishWindow.hand_over`): the row is in the outbox before paho has it. True if paho has
        it; False leaves it to the publisher thread."""
        if self._stopped or not self.link.connected:
            self.outbox.add(topic, make_payload, kind=kind, ts=ts, key=key)
            return False
        added = self.outbox.add_made(topic, make_payload, kind=kind, ts=ts, key=key)
        return added is not None and self.window.hand_over(self.link.client, added[0], topic, added[1])

    def _wake_unless_handed(self, handed: bool, batches: int) -> None:
        """Wake the publisher unless paho already has the row and the outbox's batch window was open before
        it (then the publisher is due to commit it within ``batch_ms`` anyway: one thread wake-up less per
        event; issue 14)."""
        if not handed or self.outbox.batches != batches:
            self._wake()

    def _came_up(self, client: mqtt.Client, session_present: bool, broker_packet_limit: int | None) -> None:
        """A connection was accepted (network thread): the parts catch up before the link counts as up."""
        limits = [x for x in (self._packet_limit, broker_packet_limit) if x is not None]
        self.outbox.max_packet_size = min(limits) if limits else None
        self.retained.republish(removals=True)
        self.reporter.due_now()
        self.window.reconnected()
        self.inbound.broker_changed()  # a failover: the inlet follows the uplink to its broker

    def _inbound_came_up(self, client: mqtt.Client, session_present: bool, broker_packet_limit: int | None) -> None:
        """The inlet connection was accepted (its network thread): the marker that closes the backlog of
        commands its session kept goes out on it, behind that backlog."""
        self.inlet.backlog.expect(client, session_present)
        self.inbound.broker_changed()  # it reconnected while the uplink moved on

    def _inbound_facts(self) -> dict[str, object]:
        """Health's ``inlet``: the connection for hub commands, as ``connection`` and its facts are the uplink's."""
        counters = self.inbound_counters
        return {"connection": self.inbound.state(), "client_id": self.inbound.client_id, **self.inbound.facts(),
                "connects": counters.connects, "disconnects": counters.disconnects,
                "backlog_purged": self.counters.inlet_backlog_purged,
                "redelivered_skipped": self.counters.inlet_redelivered_skipped}

    def _on_hub_status(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        """Home Assistant's birth message: a restarted hub needs discovery and states again."""
        if message.payload == ONLINE.encode() and not message.retain:
            self.counters.hub_births += 1
            log.info("the hub came online: re-sending discovery and states")
            self.retained.republish(removals=False)
            self._wake()
