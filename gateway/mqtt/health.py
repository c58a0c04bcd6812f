"""The bridge's figures: its counters, and the report it publishes (retained) on ``<base>/health``.

Every part of the bridge bumps its counters in one shared :class:`BridgeCounters`; the report reads
them with the outbox's figures and whatever the application adds (:meth:`HealthReporter.add_source`,
e.g. the drivers' health). The fields are documented in docs/mqtt.md, ``<base>/health``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt

from core.clock import Clock
from gateway import __version__
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.topics import dumps, iso_utc

HealthSource = Callable[[], Mapping[str, object]]
"""More figures for the report, under a name; called on the publisher thread: thread-safe and quick."""


def software_version() -> str:
    """The gateway's version, :data:`gateway.__version__`: a constant, not a lookup in the installed
    distributions (``importlib.metadata`` and its scan cost 1.3 MB and 4 ms on the bench machine; issue 14)."""
    return __version__


@dataclass(slots=True)
class BridgeCounters:
    """Figures since start, bumped by the thread that sees each thing happen; read from any thread."""

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
    commands_rate_limited: int = 0
    """Hub commands over the rate limit (per entity or in total): refused, one answer per burst."""
    commands_busy: int = 0
    """Hub commands refused because :data:`~gateway.mqtt.inlet.MAX_TRACKED_COMMANDS` still await their outcome."""
    commands_unresolved: int = 0
    """Accepted commands answered ``failed`` after waiting :data:`~gateway.mqtt.inlet.TRACK_TIMEOUT` for an outcome."""
    results_shed: int = 0
    """Results (``accepted`` first) dropped because :data:`~gateway.mqtt.inlet.MAX_RESULTS` waited to be sent."""
    births_coalesced: int = 0
    """Hub births within a second of a re-announcement: folded into the next one, not each republished."""
    inlet_backlog_purged: int = 0
    """Times the inlet dropped a flood's backlog by reconnecting (:mod:`gateway.mqtt.lag`)."""
    inlet_redelivered_skipped: int = 0
    """QoS 1 messages the broker sent again after a connection ended though the inlet had handled them
    (their acknowledgement was lost with the connection): skipped, not answered twice (:mod:`gateway.mqtt.lag`)."""
    connect_attempts: int = 0
    connects: int = 0
    disconnects: int = 0


class HealthReporter:
    """Builds the report (any thread) and publishes it every ``interval`` seconds (publisher thread)."""

    def __init__(
        self, counters: BridgeCounters, outbox: Outbox, clock: Clock, *, interval: float, topic: str,
        connection: Callable[[], str], link_facts: HealthSource | None = None,
    ) -> None:
        self._counters = counters
        self._outbox = outbox
        self._clock = clock
        self._interval = interval
        self._topic = topic
        self._connection = connection
        self._link_facts = link_facts
        """The broker in use, failovers, the identity guard (:meth:`gateway.mqtt.link.Link.facts`): top-level fields."""
        self._sources: dict[str, HealthSource] = {}
        self._started = time.monotonic()
        self._next = 0.0
        """Monotonic time of the next report; 0 after a connection, so one goes out at once."""

    def add_source(self, name: str, source: HealthSource) -> None:
        self._sources[name] = source

    def mark_start(self) -> None:
        """The bridge starts: uptime counts from now."""
        self._started = time.monotonic()

    def due_now(self) -> None:
        self._next = 0.0

    def wait(self) -> float:
        """Seconds until the next report is due."""
        return max(0.0, self._next - time.monotonic())

    def send(self, client: mqtt.Client) -> None:
        """Publish the report if it is due (publisher thread, while connected)."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self._interval
        report = {"ts": iso_utc(self._clock.time()), "version": software_version(), **self.report()}
        client.publish(self._topic, dumps(report), qos=1, retain=True)

    def report(self) -> dict[str, Any]:
        """The figures of docs/mqtt.md, ``<base>/health``, plus each source under its name. Safe from any thread.

        Typed ``Any`` on purpose: it is a JSON document whose readers (``gateway status``, tests)
        index into its nested figures."""
        counters, outbox = self._counters, self._outbox
        oldest = outbox.oldest_ts()
        trouble = outbox.trouble
        report: dict[str, Any] = {
            "uptime": round(time.monotonic() - self._started, 1),
            "connection": self._connection(),
            **(self._link_facts() if self._link_facts is not None else {}),
            "forwarding": "degraded" if trouble else "ok",
            **({"forwarding_reason": trouble} if trouble else {}),
            "events_in": counters.events_in,
            "events_out": counters.events_out,
            "outbox": {
                "depth": outbox.depth,
                "oldest_age": None if oldest is None else round(max(0.0, self._clock.time() - oldest), 3),
                **asdict(outbox.counters),
            },
            "broker_refused": counters.broker_refused,
            "retained_refused": counters.retained_refused,
            "commands": {
                "accepted": counters.commands_accepted,
                "rejected": counters.commands_rejected,
                "retained_ignored": counters.commands_retained_ignored,
                "stale_refused": counters.commands_stale,
                "backlog_applied": counters.commands_backlog_applied,
            },
            "shed": {  # what floods cost, by kind (docs/mqtt.md, Floods)
                "commands_rate_limited": counters.commands_rate_limited,
                "commands_busy": counters.commands_busy,
                "commands_unresolved": counters.commands_unresolved,
                "results_shed": counters.results_shed,
                "births_coalesced": counters.births_coalesced,
                "inlet_backlog_purged": counters.inlet_backlog_purged,
            },
            "connects": counters.connects,
            "disconnects": counters.disconnects,
        }
        for name, source in self._sources.items():
            report[name] = dict(source())
        return report
