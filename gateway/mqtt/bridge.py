"""The MQTT bridge: forwards every event to the hub and brings the hub's commands in.

Threads and who owns what::

    dispatcher thread ── forward(event) ──> outbox.add (memory) + latest state (memory)   never waits on I/O
    publisher thread  ── commits the outbox every batch window, hands committed rows to paho
                         within the in-flight window and the drain rate, publishes retained
                         states, health and discovery, deletes acknowledged rows
    paho network thread ── connects with backoff + jitter, calls our guarded callbacks, which
                         only record acks, flip the connection state or post command events

One owner of retransmission: paho re-sends its unacknowledged QoS 1 messages
after *every* reconnect, kept session or not (``_messages_reconnect_reset_out``
in paho's client.py). So within one process a row is handed to paho exactly
once and paho owns its retry; the outbox never re-sends on reconnect. Across
a restart paho's memory is gone, and the outbox re-sends every row that was
not acknowledged. Duplicates therefore come only from the in-flight window
(at most ``max_inflight`` rows per outage or restart), and the hub drops them
by ``id``.

Commands the broker kept while the gateway was offline (its session is persistent, so the broker
queues them) arrive first after a reconnection, before anything sent after it. After every
connection that found its session, the bridge publishes a marker with a fresh token to a topic it is
subscribed to (``<base>/set/_marker``); every command delivered before the marker comes back is
from that backlog, and is applied only if it carries an MQTT 5 message expiry (the sender's own
bound on its age: the broker never delivers an expired one). Others are refused with a reason on
``result/<entity>``. See docs/mqtt.md, *Commands sent while the gateway was offline*.

Ordering: outbox rows are sent strictly in ``seq`` order, so after an outage
live events queue behind the backlog, which drains at ``drain_rate``. The
retained ``state/<entity>`` topics are not queued behind it: they always
carry the newest value as soon as the broker is reachable.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.entities import EntitySpec
from core.events import Event, EventFactory, Kind, Value, publish_request
from core.guard import guarded
from gateway.config import Config
from gateway.mqtt.commands import CommandRejected, Validator, decode, validate, validator_for
from gateway.mqtt.connection import Jitter, connect_properties, is_mqtt5, make_client, set_nodelay
from gateway.mqtt.discovery import Discovery, Extra
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.topics import (
    OFFLINE,
    ONLINE,
    STATE_KINDS,
    Topics,
    dumps,
    event_payload,
    iso_utc,
    result_payload,
    state_payload,
)

log = logging.getLogger(__name__)

IDLE_WAKE = 5.0
"""Seconds the publisher sleeps when nothing is due. Everything that needs it (events, acks, results,
connections, the hub's birth, commit and health deadlines, the drain bucket) wakes it or bounds the wait;
this is only a backstop, kept long so an idle gateway does not wake a Pi's CPU for nothing."""
MAX_TRACKED_COMMANDS = 1000
"""Accepted hub commands remembered until their outcome (state or rejection) is published."""
STOP_RESERVE = 0.4
"""Part of stop()'s timeout kept for the offline status, the disconnect and the thread join."""
MARKER_TIMEOUT = 10.0
"""Seconds after a reconnection within which the marker is expected back. A broker delivers the
backlog in milliseconds; a marker that never returns (an ACL that forbids publishing it) must not
make the gateway refuse the hub's commands for ever, so after this they are taken as live again."""
MARKER_EXPIRY = 60
"""MQTT 5 expiry of the marker: one that outlives its connection is not kept in the session for long."""
STALE_LOGGED = 5
"""Refused backlog commands logged one by one per reconnection; the rest are summed up."""
STALE_REASON = (
    "sent while the gateway was offline and kept by the broker; not applied, as it may be long out of date. "
    "Send it again, or with an MQTT 5 message expiry interval if it may wait"
)

HealthSource = Callable[[], Mapping[str, Any]]


@dataclass(slots=True)
class _Backlog:
    """The catch-up after a reconnection: commands arriving before ``token`` comes back were queued
    by the broker while the gateway was offline. Touched on paho's network thread only."""

    token: bytes
    since: float
    refused: int = 0


def software_version() -> str:
    try:
        return importlib.metadata.version("edge-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


class TokenBucket:
    """``rate`` tokens a second up to ``burst``: paces the outbox drain after an outage."""

    __slots__ = ("_burst", "_monotonic", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = max(1.0, burst)
        self._tokens = self._burst
        self._monotonic = monotonic
        self._stamp = monotonic()

    def take(self, wanted: int) -> int:
        now = self._monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return max(0, granted)

    def refund(self, count: int) -> None:
        self._tokens = min(self._burst, self._tokens + count)

    def wait(self) -> float:
        """Seconds until the next whole token."""
        return max(0.0, (1.0 - self._tokens) / self._rate)


@dataclass(slots=True)
class BridgeCounters:
    events_in: int = 0
    """Events handed to :meth:`MqttBridge.forward`."""
    events_out: int = 0
    """Outbox rows acknowledged by the broker."""
    broker_refused: int = 0
    """Rows the broker answered with a failure reason (e.g. not authorised); not retried."""
    states_published: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0
    """Refused at validation, plus accepted ones the gateway then failed to apply."""
    hub_births: int = 0
    """Home Assistant birth messages seen (each re-sends discovery and states)."""
    commands_retained_ignored: int = 0
    """Retained messages on set topics, replayed by the broker at subscribe: never applied."""
    commands_stale: int = 0
    """Commands the broker kept while the gateway was offline, without a message expiry: refused."""
    commands_backlog_applied: int = 0
    """Commands from that backlog applied because they carried an MQTT 5 message expiry."""
    retained_refused: int = 0
    """Retained states or messages larger than the broker's maximum packet size, never sent."""
    connect_attempts: int = 0
    connects: int = 0
    disconnects: int = 0


class MqttBridge:
    """See the module docstring and ``docs/mqtt.md``."""

    def __init__(
        self,
        config: Config,
        entities: Mapping[str, EntitySpec],
        post: Callable[[Event], None],
        events: EventFactory,
    ) -> None:
        self.config = config
        self.entities = dict(entities)
        self.topics = Topics(config.base_topic, config.mqtt.discovery_prefix)
        self.counters = BridgeCounters()
        self._post = post
        self._events = events
        section = config.mqtt
        self._mqtt5 = is_mqtt5(section)
        self._configured_packet_limit = section.max_packet_size
        self.outbox = Outbox(
            config.gateway.state_dir / "outbox.sqlite3",
            batch_ms=config.outbox.batch_ms,
            synchronous=config.outbox.synchronous,
            max_events=config.outbox.max_events,
            max_packet_size=section.max_packet_size,
            mqtt5=self._mqtt5,
            seq_floor=int(events.clock.time() * 1000),  # only a new outbox (a replaced or in-memory one) uses it
        )
        self._window = section.max_inflight
        self._bucket = TokenBucket(section.drain_rate, section.max_inflight)
        self._jitter = Jitter(section.reconnect_min, section.reconnect_max)
        self._lock = threading.Lock()
        self._retained: dict[str, bytes] = {}
        self._dirty: dict[str, bytes] = {}
        self._last_state: dict[str, tuple[Value, str | None]] = {}
        self._available: dict[str, bool] = {}
        self._acks: deque[tuple[int, ReasonCode]] = deque()
        self._inflight: dict[int, int] = {}
        self._handed = 0
        self._catch_up_to = 0
        """The newest seq accepted when the link came up: rows up to it drain at ``drain_rate``."""
        self._more = False
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._connected = False
        self._outage_logged = False
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._health_sources: dict[str, HealthSource] = {}
        self._next_health = 0.0
        self._flush_deadline = 0.0
        self._last_error: str | None = None
        self._resuming = False
        self._refused = False
        self._results: deque[tuple[str, bytes]] = deque()
        self._backlog: _Backlog | None = None
        self._commands: dict[str, Validator] = {
            entity: validator_for(spec) for entity, spec in self.entities.items() if spec.writable
        }
        self._awaiting: OrderedDict[str, str] = OrderedDict()
        self._awaiting_lock = threading.Lock()
        self._extras: dict[str, Extra] = {}
        self._discovery = (
            Discovery(self.topics, config.gateway.id, config.gateway.name, software_version(),
                      config.gateway.state_dir / "discovery.json")
            if section.discovery else None
        )
        for entity in self.entities:
            self._set_available(entity, True)
        try:
            self._client: mqtt.Client = self._make_client()
        except BaseException:
            self.outbox.close()
            raise

    # -- the lead's interface ------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        """The configured client with our guarded callbacks; reads the password and the TLS files
        now, so a mistake there is a :class:`~gateway.mqtt.MqttSetupError` at construction."""
        client = make_client(self.config, self.topics)
        client.on_connect = guarded("mqtt on_connect")(self._on_connect)
        client.on_connect_fail = guarded("mqtt on_connect_fail")(self._on_connect_fail)
        client.on_disconnect = guarded("mqtt on_disconnect")(self._on_disconnect)
        client.on_publish = guarded("mqtt on_publish")(self._on_publish)
        client.on_pre_connect = guarded("mqtt on_pre_connect")(self._on_pre_connect)
        client.on_socket_open = guarded("mqtt on_socket_open")(self._on_socket_open)
        client.on_log = guarded("mqtt on_log")(self._on_log)
        client.message_callback_add(self.topics.set_filter, guarded("mqtt command")(self._on_command))
        client.message_callback_add(self.topics.hub_status, guarded("mqtt hub status")(self._on_hub_status))
        return client

    def start(self) -> None:
        """Begin connecting in the background; returns at once, whatever the network does."""
        if self._thread is not None:
            return
        client = self._client
        section = self.config.mqtt
        if self._mqtt5:
            client.connect_async(section.host, section.port, section.keepalive, clean_start=False,
                                 properties=connect_properties(section))
        else:
            client.connect_async(section.host, section.port, section.keepalive)
        client.loop_start()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def forward(self, event: Event) -> None:
        """Queue ``event`` for ``event/<entity>`` and update the retained state; never waits on I/O."""
        self.counters.events_in += 1
        self._publish_message(event)
        self.outbox.add(
            self.topics.event(event.entity),
            functools.partial(event_payload, event),
            droppable=event.kind is Kind.READING,
            ts=event.ts,
        )
        if event.kind in STATE_KINDS:
            self._update_state(event)
        elif event.kind is Kind.AVAILABILITY:
            self._set_available(event.entity, bool(event.value))
        if event.cause is not None and event.kind in (Kind.STATE, Kind.REJECTED):
            self._command_outcome(event)
        self._wakeup.set()

    def stop(self, timeout: float = 1.5) -> None:
        """Flush what the timeout allows, publish ``offline`` (retained), disconnect. Returns within ``timeout``."""
        deadline = time.monotonic() + timeout
        self._flush_deadline = deadline - STOP_RESERVE
        self._stopping.set()
        self._jitter.cancel()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic() - STOP_RESERVE / 2))
        self.outbox.close()
        client = self._client
        if self._thread is None:
            return
        connected = self._connected
        if connected:
            info = client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            remaining = deadline - time.monotonic() - STOP_RESERVE / 2
            if remaining > 0:
                info.wait_for_publish(remaining)
        client.disconnect()
        # paho's thread may sit in its backoff sleep (up to 1 s slices); it is a daemon and ends by
        # itself once disconnected, so only a connected link is worth waiting for (a clean close).
        stopper = threading.Thread(target=self._release, args=(client,), name="mqtt-loop-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.0, deadline - time.monotonic()) if connected else 0.05)

    def _release(self, client: mqtt.Client) -> None:
        """End paho's thread, then drop its references to us: without the cycle, the client is freed
        (and paho closes its wake-up socket pair) as soon as the bridge is, not at some later GC."""
        client.loop_stop()
        for name in ("on_connect", "on_connect_fail", "on_disconnect", "on_publish", "on_pre_connect",
                     "on_socket_open", "on_log"):
            setattr(client, name, None)
        client.message_callback_remove(self.topics.set_filter)
        client.message_callback_remove(self.topics.hub_status)

    # -- extension points ------------------------------------------------------------------------

    def register_command(self, entity: str, validator: Validator) -> None:
        """Accept hub commands on ``<base>/set/<entity>``, checked by ``validator`` (see
        :mod:`gateway.mqtt.commands`). Accepted ones are posted as ``Kind.COMMAND`` events for
        ``entity``; whoever owns the entity (a controller) reacts to them on the dispatcher.
        Replaces the built-in validator of a configured entity. Call before :meth:`start`."""
        self._commands[entity] = validator

    def update_registrations(
        self,
        entities: Mapping[str, EntitySpec],
        commands: Mapping[str, Validator],
        discovery: Iterable[tuple[str, str, Mapping[str, Any]]],
    ) -> None:
        """After a rule reload: the entities, command targets and discovery extras as they are now.

        Replaces what :meth:`register_command` and :meth:`register_discovery` set before start;
        the hub gets the new discovery at once, and entities that are gone are removed from it.
        Safe from any thread."""
        built_in = {entity: validator_for(spec) for entity, spec in entities.items() if spec.writable}
        extras = {entity: Extra(component, dict(config)) for entity, component, config in discovery}
        with self._lock:
            self.entities = dict(entities)
            self._commands = {**built_in, **commands}
            self._extras = extras
        for entity in (*entities, *extras):
            if entity not in self._available:
                self._set_available(entity, True)
        self._republish(removals=True)
        self._wakeup.set()

    def add_health_source(self, name: str, source: HealthSource) -> None:
        """Add ``name: source()`` to every health report (e.g. the drivers' health).
        ``source`` is called on the publisher thread and must be thread-safe and quick."""
        self._health_sources[name] = source

    def register_discovery(self, entity: str, component: str, config: Mapping[str, Any]) -> None:
        """Announce ``entity`` to Home Assistant as ``component`` (e.g. ``climate``,
        ``alarm_control_panel``) with its component-specific keys; the device block,
        availability, unique id and QoS are added (see :mod:`gateway.mqtt.discovery`).
        Call before :meth:`start`; the entity's state and availability topics are
        ``bridge.topics.state(entity)`` / ``bridge.topics.availability(entity)``."""
        self._extras[entity] = Extra(component, dict(config))
        if entity not in self._available:
            self._set_available(entity, True)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def started(self) -> bool:
        """:meth:`start` was called: from then on hub commands may be posted onto the bus."""
        return self._thread is not None

    def health(self) -> dict[str, Any]:
        """The figures published on ``<base>/health`` every ``health_interval`` (see docs/mqtt.md),
        plus each :meth:`add_health_source` under its name. Safe from any thread."""
        outbox = self.outbox
        oldest = outbox.oldest_ts()
        trouble = outbox.trouble
        report: dict[str, Any] = {
            "uptime": round(time.monotonic() - self._started, 1),
            "connection": self._connection_state(),
            "forwarding": "degraded" if trouble else "ok",
            **({"forwarding_reason": trouble} if trouble else {}),
            "events_in": self.counters.events_in,
            "events_out": self.counters.events_out,
            "outbox": {
                "depth": outbox.depth,
                "oldest_age": None if oldest is None else round(max(0.0, self._events.clock.time() - oldest), 3),
                **asdict(outbox.counters),
            },
            "broker_refused": self.counters.broker_refused,
            "retained_refused": self.counters.retained_refused,
            "commands": {
                "accepted": self.counters.commands_accepted,
                "rejected": self.counters.commands_rejected,
                "retained_ignored": self.counters.commands_retained_ignored,
                "stale_refused": self.counters.commands_stale,
                "backlog_applied": self.counters.commands_backlog_applied,
            },
            "connects": self.counters.connects,
            "disconnects": self.counters.disconnects,
        }
        for name, source in self._health_sources.items():
            report[name] = dict(source())
        return report

    def _connection_state(self) -> str:
        if self._connected:
            return "connected"
        if self._refused:
            return "refused"
        return "unreachable" if self._outage_logged else "connecting"

    def _publish_message(self, event: Event) -> None:
        """A rule's ``publish`` action: ``payload`` on ``<base>/<topic>``, durable like every event
        (retained ones keep only the latest, as retained states do)."""
        try:
            request = publish_request(event)
        except ValueError as exc:
            log.error("publish event %s is malformed (%s): %.200r", event.id, exc, event.value)
            return
        if request is None:
            return
        topic = f"{self.topics.base}/{request.topic}"
        payload = request.payload.encode()
        if request.retain:
            self._retain(topic, payload)
        else:
            self.outbox.add(topic, lambda seq: payload, droppable=False, ts=event.ts)

    # -- retained state ----------------------------------------------------------------------------

    def _update_state(self, event: Event) -> None:
        """A reading always refreshes the retained state (the hub's ``expire_after`` counts on it);
        a confirmed actuator state is published when it changes."""
        current = (event.value, event.unit)
        if not self._available.get(event.entity, True):
            self._set_available(event.entity, True)
        if event.kind is Kind.STATE and self._last_state.get(event.entity) == current:
            return
        self._last_state[event.entity] = current
        self._retain(self.topics.state(event.entity), state_payload(event.value))

    def _set_available(self, entity: str, available: bool) -> None:
        self._available[entity] = available
        self._retain(self.topics.availability(entity), (ONLINE if available else OFFLINE).encode())

    def _retain(self, topic: str, payload: bytes) -> None:
        """Latest value wins. One that can never fit the broker's packet limit is refused here, or its
        republishing would make the broker drop the link again and again."""
        if not self.outbox.fits(topic, payload):
            self.counters.retained_refused += 1
            log.error("retained %s refused: %d bytes exceed the broker's maximum packet size", topic, len(payload))
            return
        with self._lock:
            self._retained[topic] = payload
            self._dirty[topic] = payload

    # -- paho callbacks (network thread) -----------------------------------------------------------

    def _on_pre_connect(self, client: mqtt.Client, userdata: Any) -> None:
        self._jitter.before_attempt()
        self.counters.connect_attempts += 1

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        # paho reports why a socket failed (a TLS alert, a reset) only here, at ERR level.
        if level == mqtt.MQTT_LOG_ERR:
            self._last_error = text[:300]

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        set_nodelay(sock)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        section = self.config.mqtt
        self._refused = reason.is_failure
        if reason.is_failure:
            if not self._outage_logged:
                log.error("broker %s:%d refused the connection: %s", section.host, section.port, reason)
                self._outage_logged = True
            return
        self._jitter.connected()
        broker_limit = getattr(properties, "MaximumPacketSize", None) if properties is not None else None
        limits = [x for x in (self._configured_packet_limit, broker_limit) if x is not None]
        self.outbox.max_packet_size = min(limits) if limits else None
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        topics = [(self.topics.set_filter, 1)]
        if self._discovery is not None:
            topics.append((self.topics.hub_status, 1))
        client.subscribe(topics)
        self._expect_backlog(client, flags.session_present)
        self._republish(removals=True)
        self.counters.connects += 1
        log.info("connected to broker %s:%d (session present: %s)", section.host, section.port, flags.session_present)
        self._outage_logged = False
        self._next_health = 0.0
        self._resuming = True
        self._catch_up_to = self.outbox.last_seq
        self._connected = True
        self._wakeup.set()

    def _on_hub_status(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Home Assistant's birth message: a restarted hub needs discovery and states again."""
        if message.payload == ONLINE.encode() and not message.retain:
            self.counters.hub_births += 1
            log.info("the hub came online: re-sending discovery and states")
            self._republish(removals=False)
            self._wakeup.set()

    def _republish(self, *, removals: bool) -> None:
        """Queue discovery (removals first), then every retained state and availability.

        Added to what still waits, never replacing it: a removal queued while the link was down (a
        reload) is remembered as sent in ``discovery.json`` already, so it exists only in ``_dirty``."""
        announce: dict[str, bytes] = {}
        if self._discovery is not None:
            configs = self._discovery.configs(self.entities, self._extras)
            if removals:
                announce.update(self._discovery.removals(configs))
            announce.update(configs)
        with self._lock:
            self._dirty = {**self._dirty, **announce, **self._retained}

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its ``except OSError``: the reason (refused, TLS) is still at hand.
        error = sys.exc_info()[1]
        self._note_outage(f"unreachable ({error})" if error is not None else "unreachable")

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected, self._connected = self._connected, False
        if self._stopping.is_set():
            return
        if was_connected:
            self.counters.disconnects += 1
            self._note_outage(f"connection lost ({self._last_error or reason})")
        else:
            self._note_outage(f"closed the connection before accepting the login: client certificate or "
                              f"credentials rejected? ({self._last_error or reason})")
        self._last_error = None

    def _note_outage(self, what: str) -> None:
        if self._outage_logged or self._stopping.is_set():
            return
        self._outage_logged = True
        section = self.config.mqtt
        log.warning("broker %s:%d %s: events wait in the outbox; retrying with backoff",
                    section.host, section.port, what)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        # Called under paho's message lock: only record, never publish or take our locks here.
        self._acks.append((mid, reason))
        self._wakeup.set()

    # -- hub commands (network thread) ---------------------------------------------------------------

    def _on_command(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.marker:
            self._on_marker(bytes(message.payload))
            return
        entity = message.topic[len(self.topics.set_prefix):]
        if message.retain:
            self.counters.commands_retained_ignored += 1
            log.info("ignoring a retained command on %s: a command left on the broker is not replayed",
                     message.topic[:200])
            return
        backlog = self._pending_backlog()
        if backlog is not None:
            expiry = getattr(getattr(message, "properties", None), "MessageExpiryInterval", None)
            if expiry is None:
                self._refuse_stale(backlog, entity, bytes(message.payload))
                return
            self.counters.commands_backlog_applied += 1
            log.info("a command for %s kept by the broker while the gateway was offline is applied: "
                     "it carries a message expiry (%d s left)", entity[:64], expiry)
        self.handle_command(entity, bytes(message.payload))

    # -- the backlog of commands kept while offline (network thread) ----------------------------------

    def _expect_backlog(self, client: mqtt.Client, session_present: bool) -> None:
        """After a connection: without a kept session the broker has queued nothing for us; with one,
        publish the marker that closes the backlog (it queues behind whatever the session holds)."""
        if not session_present:
            self._backlog = None
            return
        backlog = self._backlog = _Backlog(uuid.uuid4().hex.encode(), time.monotonic())
        properties = None
        if self._mqtt5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.MessageExpiryInterval = MARKER_EXPIRY
        client.publish(self.topics.marker, backlog.token, qos=1, properties=properties)

    def _pending_backlog(self) -> _Backlog | None:
        """The catch-up in progress: this connection's marker has not come back (within
        :data:`MARKER_TIMEOUT`), so a command arriving now was queued while the gateway was offline."""
        backlog = self._backlog
        if backlog is None:
            return None
        if time.monotonic() - backlog.since <= MARKER_TIMEOUT:
            return backlog
        log.warning("the broker did not return the gateway's marker on %s within %g s: hub commands are "
                    "taken as live from now on (may the gateway publish there? see docs/mqtt.md)",
                    self.topics.marker, MARKER_TIMEOUT)
        self._end_backlog()
        return None

    def _on_marker(self, payload: bytes) -> None:
        backlog = self._backlog
        if backlog is not None and payload == backlog.token:
            self._end_backlog()
        # Otherwise an earlier connection's marker (it came back in this backlog) or not ours: ignored.

    def _end_backlog(self) -> None:
        backlog, self._backlog = self._backlog, None
        if backlog is not None and backlog.refused:
            log.warning("%d hub command(s) the broker kept while the gateway was offline were refused "
                        "(no message expiry); each was answered on its result topic", backlog.refused)

    def _refuse_stale(self, backlog: _Backlog, entity: str, payload: bytes) -> None:
        backlog.refused += 1
        self.counters.commands_stale += 1
        if backlog.refused <= STALE_LOGGED:
            log.warning("refused a command for %s that the broker kept while the gateway was offline: it may "
                        "be long out of date and carries no message expiry", entity[:64])
        self._reject(entity[:64], STALE_REASON, payload)

    def handle_command(self, entity: str, payload: bytes) -> Event | None:
        """Validate one hub command; post it as a COMMAND event, or answer why not. Never raises."""
        validator = self._commands.get(entity)
        try:
            if validator is None:
                raise CommandRejected(f"{entity[:64]!r} is not an entity the hub may command")
            value = validate(validator, decode(payload, self.config.mqtt.command_max_bytes))
        except CommandRejected as exc:
            self._reject(entity[:64], str(exc), payload)
            return None
        command = self._events.make(Kind.COMMAND, entity, value, detail="hub")
        with self._awaiting_lock:
            self._awaiting[command.id] = entity
            while len(self._awaiting) > MAX_TRACKED_COMMANDS:
                self._awaiting.popitem(last=False)
        self.counters.commands_accepted += 1
        self._result(entity, "accepted", command.id, value=value)
        self._post(command)
        return command

    def _reject(self, entity: str, reason: str, payload: bytes) -> None:
        """The refusal carries the reason and the payload's size, never the payload itself:
        it may hold an alarm code or a password sent to the wrong topic, and events are published."""
        self.counters.commands_rejected += 1
        event = self._events.make(
            Kind.REJECTED, entity, None, detail=f"hub command rejected: {reason} ({len(payload)} bytes)"
        )
        self._result(entity, "rejected", event.id, reason=reason)
        self._post(event)

    def _command_outcome(self, event: Event) -> None:
        with self._awaiting_lock:
            entity = self._awaiting.pop(event.cause or "", None)
        if entity is None:
            return
        if event.kind is Kind.STATE:
            self._result(entity, "done", event.cause, value=event.value)
        else:
            self.counters.commands_rejected += 1
            self._result(entity, "failed", event.cause, reason=event.detail or "not applied")

    def _result(self, entity: str, status: str, command_id: str | None, *, value: Value = None,
                reason: str | None = None) -> None:
        payload = result_payload(entity, status, command_id, self._events.clock.time(), value=value, reason=reason)
        self._results.append((self.topics.result(entity), payload))
        self._wakeup.set()

    # -- the publisher thread ------------------------------------------------------------------------

    def _run(self) -> None:
        step = guarded("mqtt publisher")(self._step)
        while True:
            self._wakeup.wait(self._idle_timeout())
            self._wakeup.clear()
            step()
            if self._stopping.is_set() and (self._flushed() or time.monotonic() >= self._flush_deadline):
                return

    def _flushed(self) -> bool:
        return not self._connected or (not self._inflight and self.outbox.depth == 0)

    def _step(self) -> None:
        if self._stopping.is_set():
            self.outbox.commit()
        else:
            self.outbox.commit_if_due()
        self._take_acks()
        if self._connected:
            self._send_retained(self._client)
            self._send_outbox(self._client)
            self._send_health(self._client)

    def _send_health(self, client: mqtt.Client) -> None:
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + self.config.mqtt.health_interval
        report = {"ts": iso_utc(self._events.clock.time()), "version": software_version(), **self.health()}
        client.publish(self.topics.health, dumps(report), qos=1, retain=True)

    def _idle_timeout(self) -> float:
        waits = [IDLE_WAKE]
        if self._connected:
            waits.append(max(0.0, self._next_health - time.monotonic()))
        due = self.outbox.due_in()
        if due is not None:
            waits.append(due)
        if self._more and self._connected and len(self._inflight) < self._window:
            waits.append(self._bucket.wait())
        if self._stopping.is_set():
            waits.append(0.01)
        return max(0.0, min(waits))

    def _take_acks(self) -> None:
        while self._acks:
            mid, reason = self._acks.popleft()
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue
            self.outbox.ack(seq)
            if reason.is_failure:
                self.counters.broker_refused += 1
                log.error("broker refused event seq %d: %s (not retried)", seq, reason)
            else:
                self.counters.events_out += 1

    def _send_retained(self, client: mqtt.Client) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        for topic, payload in dirty.items():
            client.publish(topic, payload, qos=1, retain=True)
            self.counters.states_published += 1
        while self._results:
            topic, payload = self._results.popleft()
            client.publish(topic, payload, qos=1)

    def _send_outbox(self, client: mqtt.Client) -> None:
        if self._resuming:
            # paho re-sends its unacknowledged rows right after on_connect returns; a new row
            # handed over before then could overtake them. So after a reconnect, new rows wait
            # until the re-sent window is acknowledged (one round trip, only after an outage).
            if self._inflight:
                return
            self._resuming = False
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        # Only the backlog found at (re)connection is paced by drain_rate (an outage, a restart);
        # live events go out as fast as the window allows.
        paced = self._handed < self._catch_up_to
        granted = self._bucket.take(room) if paced else room
        rows = self.outbox.fetch(self._handed, granted)
        if paced:
            self._bucket.refund(granted - len(rows))
        self._more = granted == 0 or len(rows) == granted
        for row in rows:
            self._handed = row.seq
            if not self.outbox.fits(row.topic, row.payload):
                log.error("event seq %d on %s is larger than the broker accepts: removed from the outbox",
                          row.seq, row.topic)
                self.outbox.refuse(row.seq)
                continue
            info = client.publish(row.topic, row.payload, qos=1)
            self._inflight[info.mid] = row.seq
