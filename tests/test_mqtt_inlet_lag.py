"""The inlet's lag watch (gateway/mqtt/lag.py): a flood's backlog is dropped, never read for seconds.

The first tests drive the watch alone in virtual time; the last ones build a real backlog of several seconds
for the inlet on a real Mosquitto and ask how soon a command sent behind it is heard.
"""

from __future__ import annotations

import itertools
import logging

import pytest

from core.clock import VirtualClock
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.lag import FLOOD_RATE, LAG_LIMIT, PURGE_GAP, LagWatch

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
