"""Building the paho client: protocol, session, last will, TLS, credentials, socket options.

Kept apart from the bridge so that everything about *how* we connect is in
one screen: the bridge only decides *what* to publish.

Secrets: the password is read from ``password_file`` or the environment
variable named by ``password_env`` at start, handed to paho, and never
logged or stored on the bridge.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.config import Config, MqttSection
from gateway.mqtt import MqttSetupError
from gateway.mqtt.topics import OFFLINE, Topics

log = logging.getLogger(__name__)

INFLIGHT_HEADROOM = 100
"""paho's own window is the outbox window plus room for states, results and discovery."""
MAX_QUEUED = 20_000
"""The bound of paho's outgoing queue (in flight and waiting), ~6 MB of small messages. paho's default
is no bound at all. Outbox rows never come near it (the publish window hands paho ``max_inflight``
at a time, and a row paho refuses stays in the outbox); it caps what is published outside the
outbox (retained states, command results, discovery) when the link cannot keep up."""


class CredentialsError(MqttSetupError):
    """The MQTT password could not be read (the message never contains the secret)."""


def read_password(section: MqttSection) -> str | None:
    if section.password_file is not None:
        try:
            return section.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise CredentialsError(f"mqtt.password_file {section.password_file}: {exc.strerror}") from None
    if section.password_env is not None:
        value = os.environ.get(section.password_env)
        if value is None:
            raise CredentialsError(f"mqtt.password_env: environment variable {section.password_env} is not set")
        return value
    return None


KEEPALIVE_ROUND = 1.0
"""Seconds between idle network rounds when paho's keepalive state cannot be read (paho's ``loop_forever`` used
1 s)."""
KEEPALIVE_SLACK = 0.01
"""Past paho's keepalive deadline when the idle loop wakes, so that the round finds it due (not a moment early)."""


class GatewayClient(mqtt.Client):
    """paho's client, resolving an ASCII broker name given as bytes, and telling when its keepalive is due.

    Resolving: ``socket.getaddrinfo`` encodes a ``str`` host with the IDNA codec, whatever it holds, and the
    codec imports ``encodings.idna``, ``stringprep`` and ``unicodedata``: 0.43 MB kept for the process's life
    to spell ``localhost`` the same (issue 14's 40 MB). A non-ASCII name, or a proxy (PySocks), goes through
    paho's own path."""

    def _create_socket_connection(self) -> socket.socket:
        if not self._host.isascii() or self._get_proxy():
            return super()._create_socket_connection()
        return socket.create_connection((self._host.encode("ascii"), self._port),  # type: ignore[arg-type]
                                        timeout=self._connect_timeout,
                                        source_address=(self._bind_address, self._bind_port))

    def keepalive_due_in(self) -> float:
        """Seconds until paho's keepalive has something to do (a PINGREQ to send, or a broker that has not
        answered one to give up on): how long the idle loop may sleep. Waking once a second, as paho's own loop
        does, was most of an idle gateway's CPU (issue 14). Everything else wakes the loop at once: a packet
        from the broker, a write that did not fit, the socket closed on another thread, stop. The caller holds
        :attr:`~gateway.mqtt.netloop.SerialisedClient.io_lock` (the uplink's), or runs on paho's own loop thread
        (:class:`InletClient`)."""
        try:
            keepalive = float(self._keepalive)
            with self._msgtime_mutex:
                last = min(self._last_msg_out, self._last_bytes_received)
            ping = self._ping_t
        except AttributeError:  # another paho than the one this was written against
            return KEEPALIVE_ROUND
        if keepalive <= 0:
            return KEEPALIVE_ROUND
        due = last + keepalive if ping <= 0 else min(last, ping) + keepalive
        return max(0.0, due - mqtt.time_func()) + KEEPALIVE_SLACK


class InletClient(GatewayClient):
    """The inlet's client, on paho's ``loop_start`` thread, which sleeps until its keepalive is due rather than a
    second at a time. Every other reason to wake breaks paho's select at once: a packet from the broker, a packet
    queued on another thread (paho writes to its wake-up socket pair: ``disconnect`` when the gateway stops)."""

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        return super()._loop(self.keepalive_due_in())


def is_mqtt5(section: MqttSection) -> bool:
    return section.protocol == "5"


INLET_SUFFIX = "-in"
"""The inlet connection's client id is the gateway's with this suffix (docs/mqtt.md, *Two connections*)."""


def make_client(config: Config, topics: Topics, *, inlet: bool = False,
                client_class: type[mqtt.Client] = GatewayClient) -> mqtt.Client:
    """A configured, unconnected client; the caller sets callbacks and calls ``connect_async``.

    Both of the gateway's connections keep a persistent session (MQTT 3.1.1 ``clean_session=False``;
    MQTT 5 ``clean_start=False`` with ``session_expiry``). The uplink (``inlet=False``) carries the last
    will on ``<base>/status``; the inlet (client id + :data:`INLET_SUFFIX`) has none: availability is the
    uplink's, the connection the hub's states and answers come on."""
    section = config.mqtt
    mqtt5 = is_mqtt5(section)
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=config.client_id + INLET_SUFFIX if inlet else config.client_id,
        protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
        clean_session=None if mqtt5 else False,
    )
    if not inlet:
        client.will_set(topics.status, OFFLINE, qos=1, retain=True)
    client.max_inflight_messages_set(section.max_inflight + INFLIGHT_HEADROOM)
    client.max_queued_messages_set(max(MAX_QUEUED, section.max_inflight + INFLIGHT_HEADROOM))
    client.reconnect_delay_set(max(1, round(section.reconnect_min)), max(1, round(section.reconnect_max)))
    if section.tls is not None:
        from gateway.mqtt.tls import tls_context  # only a gateway with TLS loads ssl (core.lean_imports)

        client.tls_set_context(tls_context(section.tls))
    if section.username is not None:
        client.username_pw_set(section.username, read_password(section))
    return client


def properties_for(packet_type: int) -> Properties:
    """Empty MQTT 5 properties for a packet (``PacketTypes.CONNECT``, ``.PUBLISH``): set them as attributes."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves this constructor unannotated


def property_of(properties: Properties | None, name: str) -> int | None:
    """An integer MQTT 5 property (``MaximumPacketSize``, ``MessageExpiryInterval``), None when absent:
    paho sets only the properties a packet carried, and none at all under MQTT 3.1.1."""
    value = getattr(properties, name, None)
    return value if isinstance(value, int) else None


def connect_properties(section: MqttSection) -> Properties | None:
    if not is_mqtt5(section):
        return None
    properties = properties_for(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = section.session_expiry
    return properties


def set_nodelay(sock: object) -> None:
    """Nagle's algorithm added ~40 ms to single small publishes (TESTING.md): turn it off."""
    setsockopt = getattr(sock, "setsockopt", None)
    if setsockopt is not None:
        setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Jitter:
    """Random extra wait before each *re*connect attempt, so a fleet of gateways does not
    reconnect in lock-step after a broker restart. paho supplies the exponential backoff
    (``reconnect_min`` doubling to ``reconnect_max``); this adds up to half of the current step.
    The wait is interruptible by :meth:`cancel` so stop() stays prompt."""

    def __init__(self, minimum: float, maximum: float, rng: random.Random | None = None) -> None:
        self._min = minimum
        self._max = maximum
        self._failures = 0
        self._first = True
        self._rng = rng or random.Random()
        self._cancel = threading.Event()

    def before_attempt(self) -> None:
        self._cancel.wait(self.next_wait())

    def next_wait(self) -> float:
        """The jitter for the attempt about to start: 0 for the very first connection."""
        if self._first:
            self._first = False
            return 0.0
        step = min(self._max, self._min * 2 ** min(self._failures, 30))
        self._failures += 1
        return self._rng.uniform(0, step / 2)

    def connected(self) -> None:
        self._failures = 0

    def pause(self, seconds: float) -> None:
        """A longer wait before this attempt (a contested client id); :meth:`cancel` ends it too."""
        self._cancel.wait(seconds)

    def cancel(self) -> None:
        self._cancel.set()
