"""Commands the broker kept while the gateway was offline, told from live ones by a marker.

The gateway's session is persistent, so the broker queues the hub's commands while the gateway is
away and delivers them first after a reconnection, before anything sent after it. After every
connection that found its session, the gateway publishes a marker with a fresh token to a topic it
is subscribed to (``<base>/set/_marker``); every command delivered before the marker comes back is
from that backlog, and is applied only if it carries an MQTT 5 message expiry (the sender's own
bound on its age: the broker never delivers an expired one). Others are refused with
:data:`STALE_REASON` on ``result/<entity>``. See docs/mqtt.md, *Commands sent while the gateway
was offline*.

The same machinery serves the inlet's purge (:mod:`gateway.mqtt.lag`): after the inlet dropped a flood's
backlog by reconnecting, its session delivers again the QoS 1 commands it kept, in order; those in front of
the probe that was outstanding at the purge waited longer than the lag limit and are refused with
:data:`LAGGED_REASON`, and the probe's return (or the marker's) ends the catch-up.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes

from gateway.mqtt.connection import properties_for, property_of
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.topics import Topics

log = logging.getLogger(__name__)

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
LAGGED_REASON = (
    "waited behind a flood in the broker's queue for the gateway for longer than the lag limit; not applied, "
    "as it may be out of date. Send it again"
)


@dataclass(slots=True)
class _CatchUp:
    """One reconnection's catch-up: commands arriving before one of ``tokens`` comes back are from the backlog."""

    tokens: frozenset[bytes]
    since: float
    reason: str = STALE_REASON
    refused: int = 0


class OfflineBacklog:
    """Used on paho's network thread only."""

    def __init__(self, topics: Topics, counters: BridgeCounters, *, mqtt5: bool) -> None:
        self._topics = topics
        self._counters = counters
        self._mqtt5 = mqtt5
        self._catch_up: _CatchUp | None = None
        self._purge_boundary: bytes | None = None

    @property
    def reason(self) -> str:
        """Why a command :meth:`admits` refused was refused (for its answer)."""
        catch_up = self._catch_up
        return catch_up.reason if catch_up is not None else STALE_REASON

    def purged(self, probe: bytes) -> None:
        """The inlet is about to drop its queue (:mod:`gateway.mqtt.lag`): ``probe`` is the payload of the probe
        that was outstanding, the boundary of the commands the session will deliver again."""
        self._purge_boundary = probe

    def expect(self, client: mqtt.Client, session_present: bool) -> None:
        """After a connection: without a kept session the broker has queued nothing for us; with one,
        publish the marker that closes the backlog (it queues behind whatever the session holds). After a
        purge the outstanding probe closes it too, and sooner: it is in the session, in front of the marker."""
        boundary, self._purge_boundary = self._purge_boundary, None
        if not session_present:
            self._catch_up = None
            return
        token = uuid.uuid4().hex.encode()
        tokens = frozenset({token} if boundary is None else {token, boundary})
        self._catch_up = _CatchUp(tokens, time.monotonic(), STALE_REASON if boundary is None else LAGGED_REASON)
        properties = None
        if self._mqtt5:
            properties = properties_for(PacketTypes.PUBLISH)
            properties.MessageExpiryInterval = MARKER_EXPIRY
        client.publish(self._topics.marker, token, qos=1, properties=properties)

    def on_marker(self, payload: bytes) -> None:
        """A marker or a probe came back (the network thread)."""
        catch_up = self._catch_up
        if catch_up is not None and payload in catch_up.tokens:
            self._end()
        # Otherwise an earlier connection's marker (it came back in this backlog) or not ours: ignored.

    def admits(self, entity: str, message: mqtt.MQTTMessage) -> bool:
        """Whether a command arriving now may be applied: a live one, or one from the backlog with a
        message expiry. A stale one is counted and logged here; the caller answers it."""
        catch_up = self._pending()
        if catch_up is None:
            return True
        expiry = property_of(message.properties, "MessageExpiryInterval")
        if expiry is None:
            catch_up.refused += 1
            self._counters.commands_stale += 1
            if catch_up.refused <= STALE_LOGGED and catch_up.reason is STALE_REASON:
                log.warning("refused a command for %s that the broker kept while the gateway was offline: it "
                            "may be long out of date and carries no message expiry", entity[:64])
            return False
        self._counters.commands_backlog_applied += 1
        log.info("a command for %s kept by the broker while the gateway was offline is applied: "
                 "it carries a message expiry (%d s left)", entity[:64], expiry)
        return True

    def _pending(self) -> _CatchUp | None:
        """The catch-up in progress: this connection's marker has not come back (within
        :data:`MARKER_TIMEOUT`), so a command arriving now was queued while the gateway was offline."""
        catch_up = self._catch_up
        if catch_up is None:
            return None
        if time.monotonic() - catch_up.since <= MARKER_TIMEOUT:
            return catch_up
        log.warning("the broker did not return the gateway's marker on %s within %g s: hub commands are "
                    "taken as live from now on (may the gateway publish there? see docs/mqtt.md)",
                    self._topics.marker, MARKER_TIMEOUT)
        self._end()
        return None

    def _end(self) -> None:
        catch_up, self._catch_up = self._catch_up, None
        if catch_up is not None and catch_up.refused:
            kept = ("while the gateway was offline" if catch_up.reason is STALE_REASON
                    else "behind a flood, longer than the lag limit,")
            log.warning("%d hub command(s) the broker kept %s were refused (no message expiry); each was "
                        "answered on its result topic", catch_up.refused, kept)
