"""The inlet's lag watch (gateway/mqtt/lag.py): a flood's backlog is dropped, never read for seconds.

The first tests drive the watch alone in virtual time; the last ones build a real backlog of several seconds
for the inlet on a real Mosquitto and ask how soon a command sent behind it is heard.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.clock import VirtualClock
from core.events import Kind
from gateway.control import format_status
from gateway.mqtt.backlog import LAGGED_REASON, OfflineBacklog
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.lag import FLOOD_RATE, LAG_LIMIT, PURGE_GAP, LagWatch, Redeliveries
from gateway.mqtt.topics import Topics
from tests.conftest import Broker
from tests.mqtt_support import Harness, make_bridge, make_config, recorder, wait_until
from tests.test_mqtt_two_connections import HeldReader, flood

TOPIC = "gateway/t/set/_marker"
COMMAND = "gateway/t/set/light"


def watch() -> tuple[LagWatch, VirtualClock, BridgeCounters]:
    clock = VirtualClock()
    counters = BridgeCounters()
    return LagWatch(TOPIC, counters, clock.monotonic), clock, counters


def hear(lag: LagWatch, clock: VirtualClock, count: int, seconds: float) -> list[str]:
    """``count`` commands spread evenly over ``seconds`` of virtual time, answered as the link does (a probe
    sent when asked, never coming back; a reconnection after a purge); the verdicts."""
    verdicts: list[str] = []
    for _ in range(count):
        clock.advance(seconds / count)
        verdict = lag.observe(COMMAND, b"ON")
        if verdict == "send":
            lag.probe()
        elif verdict == "purge":
            lag.connected()
        verdicts.append(verdict)
    return verdicts


def prove(lag: LagWatch) -> None:
    """The connection's first probe comes back: the broker lets the gateway publish it."""
    payload = lag.connected()
    assert lag.observe(TOPIC, payload) == "probe"


def test_an_idle_inlet_with_a_probe_that_never_came_back_never_purges() -> None:
    lag, clock, counters = watch()
    lag.connected()  # and it never returns
    clock.advance(3600)
    assert set(hear(lag, clock, 10, 10.0)) == {""}
    assert counters.inlet_backlog_purged == 0


def test_normal_traffic_never_probes_or_purges() -> None:
    lag, clock, counters = watch()
    prove(lag)
    verdicts = hear(lag, clock, 60 * FLOOD_RATE // 2, 60.0)  # half the flood rate, for a minute
    assert set(verdicts) == {""} and counters.inlet_backlog_purged == 0


def test_a_flood_sends_a_probe_and_purges_when_it_has_not_come_back_within_the_limit() -> None:
    lag, clock, counters = watch()
    prove(lag)
    per_second = 5 * FLOOD_RATE
    verdicts = hear(lag, clock, 2 * per_second, 2.0)  # the probe never comes back
    sent, purged = verdicts.index("send"), verdicts.index("purge")
    assert (purged - sent) / per_second == pytest.approx(LAG_LIMIT, abs=2 / per_second)
    assert counters.inlet_backlog_purged == verdicts.count("purge") == 1


def test_a_probe_that_comes_back_within_the_limit_purges_nothing() -> None:
    lag, clock, counters = watch()
    prove(lag)
    hear(lag, clock, 5 * FLOOD_RATE, 0.5)
    payload = lag.probe()
    clock.advance(LAG_LIMIT / 2)
    assert lag.observe(TOPIC, payload) == "probe"
    assert lag.last_lag == pytest.approx(LAG_LIMIT / 2)
    assert "purge" not in hear(lag, clock, 5 * FLOOD_RATE, 0.5)
    assert counters.inlet_backlog_purged == 0


def test_a_broker_that_never_returns_a_probe_is_never_purged_even_under_a_flood() -> None:
    """An ACL that forbids the probe: it never comes back, not even the first one at idle."""
    lag, clock, counters = watch()
    lag.connected()
    hear(lag, clock, 30 * 5 * FLOOD_RATE, 30.0)
    assert counters.inlet_backlog_purged == 0


def test_purges_are_at_least_the_gap_apart_under_a_long_flood() -> None:
    lag, clock, _ = watch()
    prove(lag)
    purges: list[float] = []
    for _ in range(20 * 5 * FLOOD_RATE):  # 20 s of flood, probes never back
        if hear(lag, clock, 1, 1 / (5 * FLOOD_RATE)) == ["purge"]:
            purges.append(clock.monotonic())
    assert len(purges) >= 5
    assert min(b - a for a, b in itertools.pairwise(purges)) >= PURGE_GAP


def test_one_warning_per_flood_not_per_purge(caplog: pytest.LogCaptureFixture) -> None:
    lag, clock, counters = watch()
    prove(lag)

    def flood(seconds: int) -> None:
        hear(lag, clock, seconds * 5 * FLOOD_RATE, float(seconds))

    with caplog.at_level(logging.WARNING, logger="gateway.mqtt.lag"):
        flood(10)
        clock.advance(60)
        hear(lag, clock, 1, 0.1)  # a quiet message: the flood is over
        flood(10)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert counters.inlet_backlog_purged >= 4
    assert len(warnings) == 2


# -- a real backlog on a real broker --------------------------------------------------------------------------

FLOOD = 100_000
ANSWER_BOUND_S = 3.0
"""A command behind a purged backlog is heard within this; the backlog itself takes several times longer."""


@pytest.fixture
def gw(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path) -> Iterator[Harness]:
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[-40:]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port))
    yield harness
    harness.bridge.stop()


def held_backlog(broker: Broker, gw: Harness, reader: HeldReader) -> None:
    """Hold the inlet's reader on a siren command, then queue a flood of ``FLOOD`` QoS 0 heater commands
    behind it: the broker and both sockets hold seconds of reading for the inlet."""
    bridge = gw.bridge
    with recorder(broker.host, broker.port, f"{gw.base}/result/#") as hub:
        hub.publish(f"{gw.base}/set/siren", "ON")
        assert reader.entered.wait(10), "the inlet's reader held"
    flood(broker, f"{gw.base}/set/heater", FLOOD)
    assert bridge.counters.commands_rate_limited == 0


def test_a_command_sent_behind_a_flood_backlog_is_heard_within_a_bound_far_below_the_backlog(
    broker: Broker, gw: Harness
) -> None:
    bridge = gw.bridge
    reader = HeldReader()
    bridge.register_command("siren", reader)
    bridge.start()
    wait_until(lambda: bridge.connected and bridge.lag.proven, what="both connections up, the probe proven")
    status, marker = f"{gw.base}/status", bridge.topics.marker
    with recorder(broker.host, broker.port, status, marker) as watcher:
        held_backlog(broker, gw, reader)
        reader.release.set()
        # The inlet hears the flood and sends itself a probe: once the broker has passed it on, a command sent
        # now queues behind it (one sent before it would rightly be refused: it waited more than the limit).
        wait_until(lambda: any(m.payload.startswith(b"probe ") for m in watcher.on(marker)), 30, "a probe")
        with recorder(broker.host, broker.port, f"{gw.base}/result/#") as hub:
            sent = time.monotonic()
            hub.publish(f"{gw.base}/set/hall_light", "ON")  # QoS 1, behind the flood (and the probe)
            wait_until(lambda: any(e.entity == "hall_light" for e in gw.posted), 30, "the command heard")
            [heard] = [e for e in gw.posted if e.entity == "hall_light"]
            heard_after = time.monotonic() - sent
        assert heard.kind is Kind.COMMAND, heard.detail  # sent behind the probe: live, not refused
        assert heard_after < ANSWER_BOUND_S, f"heard {heard_after:.1f} s after it was sent"
        assert bridge.counters.inlet_backlog_purged >= 1
        assert bridge.counters.commands_rate_limited < FLOOD / 2, "most of the backlog was dropped, not read"
        # The uplink is another connection: never dropped, never offline, the inlet's purge is no take-over.
        assert bridge.counters.connects == 1 and bridge.counters.disconnects == 0
        assert [m.payload for m in watcher.on(status)] == [b"online"]
        assert bridge.inbound.identity.takeovers == 0
        assert bridge.health()["shed"]["inlet_backlog_purged"] == bridge.counters.inlet_backlog_purged
        # Each purge is one disconnection and one connection of the inlet, whether or not paho reported it.
        purges = bridge.counters.inlet_backlog_purged
        wait_until(lambda: bridge.inbound_counters.connects == purges + 1, 10, "the inlet back after its purges")
        assert bridge.inbound_counters.disconnects == purges


def test_after_a_purge_commands_kept_in_front_of_the_probe_are_refused_and_those_behind_it_applied() -> None:
    """The session delivers its QoS 1 commands again after the purge, in order: those before the probe waited
    longer than the lag limit; those after it were sent once the lag was measured."""
    topics = Topics("gateway/t")
    counters = BridgeCounters()
    backlog = OfflineBacklog(topics, counters, mqtt5=False)
    lag = LagWatch(topics.marker, counters, VirtualClock().monotonic)
    client = mqtt.Client(CallbackAPIVersion.VERSION2)  # never connected: the marker waits in it, unsent
    probe = lag.probe()
    backlog.purged(probe)
    backlog.expect(client, session_present=True)
    command = mqtt.MQTTMessage(topic=b"gateway/t/set/siren")
    assert not backlog.admits("siren", command)
    assert backlog.reason == LAGGED_REASON
    backlog.on_marker(probe)
    assert backlog.admits("siren", command)
    assert counters.commands_stale == 1


def test_gateway_status_says_how_often_the_inlet_dropped_a_floods_backlog_only_once_it_has() -> None:
    mqtt = {"enabled": True, "connection": "connected", "inlet": "connected", "outbox_depth": 0, "events_out": 5}
    assert "backlog" not in format_status({"mqtt": {**mqtt, "inlet_backlog_purged": 0}}, now=0)
    lines = format_status({"mqtt": {**mqtt, "inlet_backlog_purged": 5}}, now=0).splitlines()
    assert [line for line in lines if "backlog" in line] == [
        "inlet backlog dropped 5 time(s): a flood of hub messages arrived faster than the gateway reads them"
    ]


def qos1(mid: int, payload: bytes, *, dup: bool = False, topic: str = "gw/set/light") -> mqtt.MQTTMessage:
    message = mqtt.MQTTMessage(mid=mid, topic=topic.encode())
    message.payload, message.qos, message.dup = payload, 1, dup
    return message


def test_a_command_handled_before_a_purge_is_not_handled_again_when_the_broker_resends_it() -> None:
    # Its PUBACK was still in paho's queue when the socket was closed (a purge, or a lost connection): the broker
    # sends it again (DUP).
    seen = Redeliveries()
    seen.handled(qos1(7, b"ON"))
    seen.connection_ended()
    assert seen.repeat(qos1(7, b"ON", dup=True))


def test_after_a_purge_only_a_resent_copy_of_a_handled_command_is_skipped() -> None:
    seen = Redeliveries()
    seen.handled(qos1(7, b"ON"))
    seen.connection_ended()
    assert not seen.repeat(qos1(8, b"ON", dup=True))  # never handled: its one answer is still to come
    assert not seen.repeat(qos1(7, b"OFF", dup=True))  # the same id for another command
    assert not seen.repeat(qos1(7, b"ON"))  # a first delivery: the id was acknowledged and used again


def test_resent_copies_are_expected_only_until_the_first_new_message_after_the_purge() -> None:
    seen = Redeliveries()
    seen.handled(qos1(7, b"ON"))
    seen.connection_ended()
    assert not seen.repeat(qos1(9, b"ON"))
    assert not seen.repeat(qos1(7, b"ON", dup=True))


def test_while_the_connection_lasts_nothing_is_skipped() -> None:
    seen = Redeliveries()
    seen.handled(qos1(7, b"ON"))
    assert not seen.repeat(qos1(7, b"ON", dup=True))
