"""The connection's lifecycle: connect in the background, retry, say once why the broker is away,
come up, close cleanly.

paho supplies the exponential backoff and :class:`~gateway.mqtt.connection.Jitter` spreads a
fleet's attempts. paho's callbacks run on its network thread, each through
:func:`~core.guard.guarded` (an exception raised in one would kill the link); they only flip the
connection state, log, and call the bridge back when a connection is accepted (:data:`CameUp`).
*How* the client is built (protocol, session, last will, TLS, credentials) is
:mod:`gateway.mqtt.connection`.

The gateway has two links to the same broker (docs/mqtt.md, *Two connections*): the **uplink**
publishes everything (events, states, results, discovery, health) and carries the last will and
``<base>/status``; it subscribes to nothing. The **inlet** (built with ``follows=uplink``, client id
``<client_id>-in``) only subscribes: hub commands, hub births, ``[[mqtt_entities]]``, remote rules.
Apart, a flood of QoS 0 messages to the inlet cannot queue in front of the PUBACKs the uplink waits
for (measured: 65 s at p99 on one connection, docs/reliability.md). The inlet follows the uplink's
broker choice (``follows``): it connects where the uplink is, or last tried, and never moves the list on
its own failures. Each link has its own duplicate-identity guard, so a take-over of either id is seen.

The inlet also watches its own lag (``lag``, :mod:`gateway.mqtt.lag`): under a flood it probes how far behind it
reads, and *purges* a backlog older than the limit by closing its socket and reconnecting at once (no backoff,
no jitter; not an outage, not a take-over). The uplink is another connection and is not touched.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core.guard import guarded
from gateway.config import Config
from gateway.mqtt.connection import (
    INLET_SUFFIX,
    InletClient,
    Jitter,
    connect_properties,
    is_mqtt5,
    make_client,
    property_of,
    set_nodelay,
)
from gateway.mqtt.failover import Brokers, aim
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.identity import TakeoverGuard
from gateway.mqtt.lag import LagWatch, Redeliveries
from gateway.mqtt.netloop import NetLoop, SerialisedClient
from gateway.mqtt.topics import OFFLINE, ONLINE, Topics

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

log = logging.getLogger(__name__)

CameUp = Callable[[mqtt.Client, bool, int | None], None]
"""Called on the network thread after each accepted connection, once ``online`` is published and the
routes are subscribed, before the link counts as connected: (client, session present, the broker's
maximum packet size if it announced one)."""
MessageCallback = Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]
PublishCallback = Callable[[mqtt.Client, object, int, ReasonCode, Properties | None], None]


JOIN_MARGIN = 0.05
"""Seconds of the stop's budget kept for what follows the join (the caller returns within its timeout)."""


class Link:
    """One broker connection; :meth:`start` and :meth:`close` are called from the application's thread."""

    def __init__(
        self, config: Config, topics: Topics, counters: BridgeCounters, stopping: threading.Event, *,
        came_up: CameUp, wake: Callable[[], None], follows: Link | None = None,
        forget: Callable[[], list[str]] | None = None, lag: LagWatch | None = None,
        purged: Callable[[bytes], None] | None = None, hurry: Callable[[], bool] = lambda: False,
    ) -> None:
        """``follows``: make this the inlet, connecting wherever that link (the uplink) is or last tried.
        ``forget``: filters the uplink unsubscribes when it finds a kept session (a session kept from
        before the two connections still holds the hub's subscriptions: unsubscribed, the flood it
        would bring stays off the uplink). ``lag``: the inlet's lag watch; ``purged`` is told the boundary
        probe's payload just before a purge (the backlog refuses what the session kept in front of it). ``hurry``:
        the uplink's acks are wanted at once (the publish window is filling: netloop.py)."""
        self.inlet = follows is not None
        """This is the inlet connection: subscribes, publishes nothing but the backlog's marker and its lag probes."""
        self._follows = follows
        # reads the password and TLS files: MqttSetupError now
        self.client = make_client(config, topics, inlet=self.inlet,
                                  client_class=InletClient if self.inlet else SerialisedClient)
        self._client_id = config.client_id + INLET_SUFFIX if self.inlet else config.client_id
        self._forget = forget
        self._section = config.mqtt
        self._topics = topics
        self._counters = counters
        self._stopping = stopping
        self._came_up = came_up
        self._wake = wake
        self._jitter = Jitter(self._section.reconnect_min, self._section.reconnect_max)
        self.brokers: Brokers = (follows.brokers if follows is not None
                                 else Brokers(self._section.brokers(), self._section.host_order))
        """``[mqtt] hosts`` (or the one ``host``): which broker the next attempt goes to (failover.py);
        the inlet shares the uplink's and only reads it."""
        self.identity = TakeoverGuard(time.monotonic)
        """Counts session take-overs; stops the link when another client keeps taking our id (identity.py)."""
        self._routes: list[str] = []
        self._lag = lag
        self._redeliveries = Redeliveries()
        """QoS 1 messages handled whose acknowledgement a connection's end may have lost (lag.py)."""
        self._purged = purged
        self._purging = False
        """This link closed its own socket to drop a flood's backlog: the disconnection is neither an outage nor
        a take-over, and the reconnection waits for nothing."""
        self._delays = (max(1, round(self._section.reconnect_min)), max(1, round(self._section.reconnect_max)))
        """paho's reconnect delays, as make_client set them (a purge lifts them for one attempt)."""
        self._loop: NetLoop | None = None
        """The uplink's own network loop (netloop.py: a publish on any thread writes to the socket itself);
        the inlet runs paho's ``loop_start``."""
        if isinstance(self.client, SerialisedClient):
            self._loop = NetLoop(self.client, delays=self._delays, before_attempt=self._before_attempt,
                                 name="mqtt-uplink", hurry=hurry)
        self._connected = False
        self._broker = ""
        """The broker this link last connected to (``host:port``)."""
        self._outage_logged = False
        """The current outage (or refusal) is logged: one line per outage, not one per attempt."""
        self._refused = False
        self._last_error: str | None = None
        """paho's last ERR log line (a TLS alert, a reset): the reason the next disconnection gives."""
        client = self.client
        client.on_connect = guarded("mqtt on_connect")(self._on_connect)
        client.on_connect_fail = guarded("mqtt on_connect_fail")(self._on_connect_fail)
        client.on_disconnect = guarded("mqtt on_disconnect")(self._on_disconnect)
        client.on_pre_connect = guarded("mqtt on_pre_connect")(self._on_pre_connect)
        client.on_socket_open = guarded("mqtt on_socket_open")(self._on_socket_open)
        client.on_log = guarded("mqtt on_log")(self._on_log)
        if isinstance(client, SerialisedClient):
            client.log_levels = frozenset({mqtt.MQTT_LOG_ERR})  # all that _on_log keeps

    def route(self, topic_filter: str, callback: MessageCallback, what: str) -> None:
        """Messages on ``topic_filter`` go to ``callback``; subscribed (QoS 1) on every connection. With a lag
        watch, every message is shown to it first (:meth:`_watched`)."""
        watched = callback if self._lag is None else self._watched(callback, self._lag)
        self.client.message_callback_add(topic_filter, guarded(what)(watched))
        self._routes.append(topic_filter)

    def _watched(self, callback: MessageCallback, lag: LagWatch) -> MessageCallback:
        def watched(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            if self._redeliveries.repeat(message):
                self._counters.inlet_redelivered_skipped += 1
                return  # handled on the connection that ended; paho acknowledges it now
            verdict = lag.observe(message.topic, message.payload)
            if verdict == "purge":
                self._purge(client, lag)
                return  # this message was in the stale backlog too
            if verdict == "send":
                client.publish(lag.topic, lag.probe(), qos=1)
            callback(client, userdata, message)
            self._redeliveries.handled(message)

        return watched

    def _purge(self, client: mqtt.Client, lag: LagWatch) -> None:
        """Drop what the broker and both kernels hold for this connection: close the socket under paho (its
        next read fails, it reconnects). A shutdown alone would not do: Linux still hands out what the socket
        has buffered, megabytes of the flood. The next attempt waits for no backoff (:meth:`_on_pre_connect`)."""
        if self._purged is not None and lag.boundary is not None:
            self._purged(lag.boundary)
        self._purging = True
        # Counted here: paho may notice the closed socket in select() and reconnect without on_disconnect.
        self._connected = False
        self._counters.disconnects += 1
        self._redeliveries.connection_ended()
        log.debug("the inlet drops its backlog: reconnecting to broker %s", self.brokers.current_label)
        client.reconnect_delay_set(0, self._delays[1])
        sock = client.socket()
        close = getattr(sock, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()

    def acks_to(self, callback: PublishCallback, run: Callable[[list[int]], None] | None = None) -> None:
        """``callback`` is paho's ``on_publish``; ``run``, if given, takes a run of success acks in one call (the
        uplink's client only: ``SerialisedClient.on_publish_run``); without it, ``callback`` is told every ack."""
        self.client.on_publish = guarded("mqtt on_publish")(callback)
        if isinstance(self.client, SerialisedClient):
            self.client.on_publish_run = None if run is None else guarded("mqtt on_publish")(run)

    @property
    def connected(self) -> bool:
        return self._connected

    def state(self) -> str:
        """``connected``, ``refused`` (the broker said no), ``unreachable``, ``connecting``, or
        ``duplicate client id`` (stopped: see :mod:`gateway.mqtt.identity`): for health."""
        if self.identity.stopped:
            return "duplicate client id"
        if self._connected:
            return "connected"
        if self._refused:
            return "refused"
        if self._follows is not None and not self._follows.connected and not self._outage_logged:
            return self._follows.state()  # the same outage: the uplink's word for it
        return "unreachable" if self._outage_logged else "connecting"

    def acks_wanted(self) -> None:
        """The publish window is filling: the uplink reads its acks at once (netloop.py). Any thread."""
        if self._loop is not None:
            self._loop.acks_wanted()

    @property
    def network_thread(self) -> threading.Thread | None:
        """The thread that reads this connection (the uplink's :class:`NetLoop`, or paho's for the inlet)."""
        if self._loop is not None:
            return self._loop.thread
        thread: threading.Thread | None = getattr(self.client, "_thread", None)
        return thread

    @property
    def routes(self) -> list[str]:
        return list(self._routes)

    @property
    def client_id(self) -> str:
        return self._client_id

    def broker_changed(self) -> None:
        """The uplink came up on another broker than this (inlet) link is connected to: drop the socket,
        so paho's loop reconnects and :meth:`_on_pre_connect` aims at the uplink's broker. Any thread."""
        if not self._connected or self._broker == self.brokers.current_label:
            return
        sock = self.client.socket()
        shutdown = getattr(sock, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(OSError):  # already closing: paho reconnects anyway
                shutdown(socket.SHUT_RDWR)

    def facts(self) -> dict[str, object]:
        """For health: ``broker`` (``host:port`` in use, or being tried), ``failovers`` (moves to another
        broker since start) and ``identity`` (:meth:`~gateway.mqtt.identity.TakeoverGuard.report`)."""
        return {"broker": self.brokers.current_label, "failovers": self.brokers.failovers,
                "identity": self.identity.report()}

    def start(self) -> None:
        """Begin connecting in the background; returns at once, whatever the network does."""
        section = self._section
        host, port = self.brokers.current
        if is_mqtt5(section):
            self.client.connect_async(host, port, section.keepalive, clean_start=False,
                                      properties=connect_properties(section))
        else:
            self.client.connect_async(host, port, section.keepalive)
        if self._loop is not None:
            self._loop.start()
        else:
            self.client.loop_start()

    def cancel_backoff(self) -> None:
        """Cut short a jitter wait (stopping)."""
        self._jitter.cancel()

    def close(self, *, offline_by: float, release_by: float) -> threading.Thread:
        """The uplink publishes ``offline`` (retained) if connected, waiting for its ack until ``offline_by``;
        disconnect; end paho's thread, waiting until ``release_by`` (monotonic). Returns the thread that ends
        paho's (the caller may join it longer)."""
        client = self.client
        connected = self._connected
        if connected and not self.inlet:
            info = client.publish(self._topics.status, OFFLINE, qos=1, retain=True)
            remaining = offline_by - time.monotonic()
            if remaining > 0:
                info.wait_for_publish(remaining)
        if self._loop is not None:  # not behind a connection attempt that holds the I/O lock: within the budget
            self._loop.disconnect(release_by - time.monotonic() - JOIN_MARGIN)
        else:
            client.disconnect()
        # paho's thread may sit in its backoff sleep, or be reconnecting right now (the broker came back
        # during the stop): wait for it within the stop's budget either way, or it may connect again and
        # run on after the gateway is gone. It is a daemon, so the budget still bounds the stop.
        stopper = threading.Thread(target=self._release, args=(client,), name="mqtt-loop-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.0, release_by - time.monotonic() - JOIN_MARGIN))
        return stopper

    def _release(self, client: mqtt.Client) -> None:
        """End paho's thread, then drop its references to us and close its sockets.

        paho closes its wake-up socket pair only in ``__del__``; a client left in a reference cycle is
        freed by some later garbage collection, which may finalize the sockets first (a ResourceWarning,
        an error under the tests' ``filterwarnings = error``). With the thread ended, nothing else uses them."""
        try:
            if self._loop is not None:
                self._loop.stop()
                self._loop.join()
            else:
                client.loop_stop()
        except AttributeError:  # paho's thread cleared its own handle between loop_stop's two reads: it has ended
            pass
        finally:
            client.on_connect = client.on_connect_fail = client.on_disconnect = None
            client.on_publish = client.on_pre_connect = client.on_socket_open = client.on_log = None
            client.on_socket_close = None
            if isinstance(client, SerialisedClient):
                client.on_publish_run = None
            for topic_filter in self._routes:
                client.message_callback_remove(topic_filter)
        reset_sockets = getattr(client, "_reset_sockets", None)  # paho 2.x; no public way to close the pair
        if callable(reset_sockets):
            reset_sockets()

    # -- paho callbacks (network thread) -----------------------------------------------------------

    def _before_attempt(self) -> None:
        """The waits of ours before an attempt, after paho's backoff: the jitter and the take-over guard's hold.
        The uplink's :class:`NetLoop` calls this outside its I/O lock; the inlet's paho loop in ``on_pre_connect``."""
        if self._purging:  # our own purge: at once (the flood is a local matter, not a broker restart)
            self._purging = False
            self.client.reconnect_delay_set(*self._delays)
        else:
            self._jitter.before_attempt()
        hold = self.identity.hold()
        if hold > 0:  # another client keeps taking our client id: keep off (identity.py)
            self._jitter.pause(hold)

    def _on_pre_connect(self, client: mqtt.Client, userdata: object) -> None:
        if self._loop is None:
            self._before_attempt()
        self._counters.connect_attempts += 1
        aim(client, *self.brokers.current)  # the inlet: wherever the uplink is or last tried

    def _on_log(self, client: mqtt.Client, userdata: object, level: int, text: str) -> None:
        # paho reports why a socket failed (a TLS alert, a reset) only here, at ERR level.
        if level == mqtt.MQTT_LOG_ERR:
            self._last_error = text[:300]

    def _on_socket_open(self, client: mqtt.Client, userdata: object, sock: SocketLike) -> None:
        set_nodelay(sock)

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        broker = self.brokers.current_label
        self._refused = reason.is_failure
        if reason.is_failure:
            if not self._outage_logged and not self._echo():
                log.error("broker %s refused the %s: %s", broker, self._connection_name, reason)
                self._outage_logged = True
            return  # paho closes the connection next: _on_disconnect moves to the next broker
        self._jitter.connected()
        self.identity.connected()
        self._broker = broker
        if not self.inlet:
            client.publish(self._topics.status, ONLINE, qos=1, retain=True)
            stale = self._forget() if self._forget is not None and flags.session_present else []
            if stale:
                client.unsubscribe(stale)
        if self._routes:
            client.subscribe([(topic_filter, 1) for topic_filter in self._routes])
        if self._lag is not None:
            client.publish(self._lag.topic, self._lag.connected(), qos=1)
        self._came_up(client, flags.session_present, property_of(properties, "MaximumPacketSize"))
        self._counters.connects += 1
        log.info("%s connected to broker %s (session present: %s)", self._what, broker, flags.session_present)
        self._outage_logged = False
        self._connected = True
        self._wake()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this inside its ``except OSError``: the reason (refused, TLS) is still at hand.
        error = sys.exc_info()[1]
        self._note_outage(f"unreachable ({error})" if error is not None else "unreachable")
        self._attempt_failed()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: mqtt.DisconnectFlags, reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected, self._connected = self._connected, False
        if self._stopping.is_set():
            return
        if self._purging:  # counted by _purge
            self._last_error = None  # paho's complaint about the socket we closed ourselves
            return
        if was_connected:
            self._counters.disconnects += 1
            self._redeliveries.connection_ended()
            if self.identity.lost(reason):
                self._give_up(client, reason)
                return
            # the same broker gets one more attempt (a blip, a restart): on_connect_fail moves on
            self._note_outage(f"connection lost ({self._last_error or reason})")
        else:
            self._note_outage(f"closed the connection before accepting the login: client certificate or "
                              f"credentials rejected? ({self._last_error or reason})")
            self._attempt_failed()
        self._last_error = None

    def _attempt_failed(self) -> None:
        """The uplink moves the broker list on; the inlet follows it and never moves it."""
        if not self.inlet:
            self.brokers.attempt_failed()

    @property
    def _what(self) -> str:
        return "hub commands' inlet" if self.inlet else "uplink"

    def _give_up(self, client: mqtt.Client, reason: ReasonCode) -> None:
        """Another client keeps taking our session: the next attempt waits the guard's hold (in
        :meth:`_on_pre_connect`); say why, in full the first time."""
        self._outage_logged = True
        if self.identity.trips > 1:
            log.info("client id %r still contested on broker %s: keeping off for %.0f s again",
                     self._client_id, self.brokers.current_label, self.identity.hold())
            return
        log.error("another MQTT client keeps taking over client id %r on broker %s (%d take-overs, last: %s): "
                  "two gateways share an id (a cloned SD card? a copied config.toml?). This gateway keeps off "
                  "the broker for %.0f s at a time while it lasts; %s. Give each "
                  "gateway its own gateway.id (or mqtt.client_id), then restart it.",
                  self._client_id, self.brokers.current_label, self.identity.takeovers, reason,
                  self.identity.hold(), "hub commands are not heard meanwhile" if self.inlet
                  else "events wait in the outbox")

    def _echo(self) -> bool:
        """This is the inlet and the uplink is not connected either: the uplink's line says it all (one line
        per outage). Not marked as logged, so the first failure once the uplink is up is logged."""
        if self._follows is None or self._follows.connected:
            return False
        log.debug("the inlet's attempt on broker %s failed too", self.brokers.current_label)
        return True

    @property
    def _connection_name(self) -> str:
        return "inlet connection (hub commands)" if self.inlet else "connection"

    def _note_outage(self, what: str) -> None:
        if self._outage_logged or self._stopping.is_set() or self._echo():
            return
        self._outage_logged = True
        if self.inlet:
            log.warning("broker %s %s (the inlet, the connection hub commands come in on): retrying with "
                        "backoff", self.brokers.current_label, what)
            return
        more = f" (then the next of {len(self.brokers)} brokers)" if len(self.brokers) > 1 else ""
        log.warning("broker %s %s: events wait in the outbox; retrying with backoff%s",
                    self.brokers.current_label, what, more)
