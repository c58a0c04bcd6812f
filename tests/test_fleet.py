"""A fleet's connection: several brokers with failover, and a duplicate client id caught.

Real Mosquittos on loopback; the policies (which broker next, when to give up on a contested id)
are also stated on their own, in virtual time."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from core.clock import SystemClock, VirtualClock
from core.events import EventFactory, Kind
from gateway.config import Config, ConfigError, parse_config
from gateway.control import format_status
from gateway.mqtt.failover import Brokers
from gateway.mqtt.identity import SESSION_TAKEN_OVER, TakeoverGuard
from tests.conftest import Broker, free_port
from tests.mqtt_support import Recorder, make_bridge, recorder, wait_until


def fleet_config(gateway_id: str, state_dir: Path, brokers: list[Broker], **mqtt: Any) -> Config:
    return Config.model_validate({
        "gateway": {"id": gateway_id, "state_dir": str(state_dir)},
        "mqtt": {"hosts": [f"127.0.0.1:{b.port}" for b in brokers], "reconnect_min": 1, "reconnect_max": 2,
                 "drain_rate": 100_000, **mqtt},
        "outbox": {"batch_ms": 5, "synchronous": "OFF"},
    })


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    a = Broker(port=free_port(), directory=tmp_path / "broker-a")
    b = Broker(port=free_port(), directory=tmp_path / "broker-b")
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


# -- config ----------------------------------------------------------------------------------------

def test_hosts_list_the_brokers_in_the_order_written() -> None:
    config = parse_config({"gateway": {"id": "g"}, "mqtt": {"hosts": ["a.example:8883", "[fd00::1]:1883"]}},
                          Path("config.toml"))
    assert config.mqtt.brokers() == [("a.example", 8883), ("fd00::1", 1883)]


def test_a_single_host_is_a_list_of_one_broker() -> None:
    config = parse_config({"gateway": {"id": "g"}, "mqtt": {"host": "hub.local", "port": 1884}}, Path("config.toml"))
    assert config.mqtt.brokers() == [("hub.local", 1884)]


def test_hosts_together_with_host_or_port_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {"id": "g"}, "mqtt": {"hosts": ["a:1883"], "port": 8883}}, Path("config.toml"))
    assert caught.value.problems == ["config.toml: mqtt: set hosts, or host and port, not both "
                                     "(each hosts entry carries its port)"]


def test_a_hosts_entry_without_a_port_is_refused_at_its_index() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {"id": "g"}, "mqtt": {"hosts": ["a:1883", "b"]}}, Path("config.toml"))
    assert caught.value.problems[0].startswith("config.toml: mqtt.hosts[1]: 'b' is not host:port")


def test_a_hosts_entry_with_a_port_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {"id": "g"}, "mqtt": {"hosts": ["a:70000"]}}, Path("config.toml"))
    assert caught.value.problems == ["config.toml: mqtt.hosts[0]: 'a:70000': the port must be a number from 1 to 65535"]


# -- which broker next -------------------------------------------------------------------------------

def test_a_failed_attempt_moves_to_the_next_broker_and_wraps_around() -> None:
    brokers = Brokers([("a", 1), ("b", 2), ("c", 3)])
    seen = [brokers.current]
    for _ in range(3):
        brokers.attempt_failed()
        seen.append(brokers.current)
    assert seen == [("a", 1), ("b", 2), ("c", 3), ("a", 1)]
    assert brokers.failovers == 3


def test_a_single_broker_never_counts_a_failover() -> None:
    brokers = Brokers([("a", 1)])
    brokers.attempt_failed()
    assert (brokers.current, brokers.failovers) == (("a", 1), 0)


def test_random_order_spreads_gateways_over_the_brokers() -> None:
    hosts = [("n1", 1), ("n2", 1), ("n3", 1)]
    firsts = {Brokers(hosts, "random", random.Random(seed)).current for seed in range(30)}
    assert firsts == set(hosts)


# -- the take-over guard ---------------------------------------------------------------------------

TAKEN = ReasonCode(PacketTypes.DISCONNECT, identifier=SESSION_TAKEN_OVER)
LOST = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")


def test_three_session_take_overs_within_the_window_stop_the_link() -> None:
    clock = VirtualClock()
    guard = TakeoverGuard(clock.monotonic)
    outcomes = []
    for _ in range(3):
        guard.connected()
        clock.advance(20)
        outcomes.append(guard.lost(TAKEN))
    assert outcomes == [False, False, True]
    assert guard.report() == {"state": "duplicate", "takeovers": 3, "retry_in": 900}


def test_the_link_tries_again_after_the_hold() -> None:
    clock = VirtualClock()
    guard = TakeoverGuard(clock.monotonic, hold=900)
    for _ in range(3):
        guard.connected()
        guard.lost(TAKEN)
    clock.advance(899)
    assert guard.stopped
    clock.advance(1)
    assert not guard.stopped


def test_take_overs_spread_beyond_the_window_do_not_stop_the_link() -> None:
    clock = VirtualClock()
    guard = TakeoverGuard(clock.monotonic)
    for _ in range(5):
        guard.connected()
        clock.advance(200)
        assert guard.lost(TAKEN) is False
    assert guard.report()["state"] == "contested"


def test_a_connection_lost_after_a_long_session_is_an_outage_not_a_take_over() -> None:
    clock = VirtualClock()
    guard = TakeoverGuard(clock.monotonic)
    for _ in range(5):
        guard.connected()
        clock.advance(60)
        guard.lost(LOST)
    assert guard.report() == {"state": "ok", "takeovers": 0}


def test_connections_lost_right_after_connecting_count_as_take_overs() -> None:
    clock = VirtualClock()
    guard = TakeoverGuard(clock.monotonic)
    guard.connected()
    clock.advance(3600)
    assert guard.lost(None) is False  # an hour-long session that dropped: an outage
    for _ in range(3):
        guard.connected()
        clock.advance(2)
        stopped = guard.lost(None)
    assert stopped and guard.report()["takeovers"] == 3


# -- real brokers ----------------------------------------------------------------------------------

def test_the_gateway_fails_over_to_the_next_broker_and_loses_no_event(
    tmp_path: Path, two_brokers: tuple[Broker, Broker]
) -> None:
    a, b = two_brokers
    harness = make_bridge(fleet_config("fo1", tmp_path / "state", [a, b]))
    bridge = harness.bridge
    events = f"{harness.base}/event/#"
    with recorder(a.host, a.port, events) as on_a, recorder(b.host, b.port, events) as on_b:
        bridge.start()
        try:
            wait_until(lambda: bridge.connected, 10, "connected to A")
            assert bridge.health()["broker"] == f"127.0.0.1:{a.port}"
            for i in range(50):
                bridge.forward(harness.events.reading("living_temp", i))
            wait_until(lambda: len(on_a.matching(f"{harness.base}/event/")) >= 50, 10, "50 events on A")
            a.stop(kill=True)
            for i in range(50, 100):
                bridge.forward(harness.events.reading("living_temp", i))
            wait_until(lambda: bridge.connected and bridge.outbox.depth == 0, 20, "failed over to B, outbox drained")
            health = bridge.health()
            assert (health["broker"], health["failovers"]) == (f"127.0.0.1:{b.port}", 1)
            def values(rec: Recorder) -> set[Any]:
                return {m.json()["value"] for m in rec.matching(f"{harness.base}/event/")}

            wait_until(lambda: values(on_b) >= set(range(50, 100)), 10, "every event since the failover on B")
            assert values(on_a) | values(on_b) == set(range(100))
        finally:
            bridge.stop()


def test_a_dropped_link_is_retried_on_the_same_broker_first(
    tmp_path: Path, two_brokers: tuple[Broker, Broker]
) -> None:
    a, b = two_brokers
    harness = make_bridge(fleet_config("fo2", tmp_path / "state", [a, b]))
    bridge = harness.bridge
    bridge.start()
    try:
        wait_until(lambda: bridge.connected, 10, "connected to A")
        a.stop()
        a.start()  # back before the first retry
        wait_until(lambda: bridge.counters.connects >= 2 and bridge.connected, 10, "reconnected")
        assert bridge.health()["broker"] == f"127.0.0.1:{a.port}"
    finally:
        bridge.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_gateways_with_one_client_id_stop_fighting_and_one_stays_connected(
    tmp_path: Path, two_brokers: tuple[Broker, Broker], protocol: str
) -> None:
    a, _ = two_brokers
    first = make_bridge(fleet_config("dup1", tmp_path / "one", [a], client_id="cloned", protocol=protocol)).bridge
    second = make_bridge(fleet_config("dup2", tmp_path / "two", [a], client_id="cloned", protocol=protocol)).bridge
    first.start()
    wait_until(lambda: first.connected, 10, "the first connected")
    second.start()
    try:
        losers = wait_until(lambda: [x for x in (first, second) if x.link.identity.stopped], 40,
                            "one gateway to give up the contested id")
        loser = losers[0]
        winner = second if loser is first else first
        assert loser.health()["connection"] == "duplicate client id"
        assert loser.health()["identity"]["state"] == "duplicate"
        assert winner.health()["identity"]["state"] in ("ok", "contested")
        wait_until(lambda: winner.connected, 10, "the other gateway connected")
        with recorder(a.host, a.port, f"{winner.topics.base}/event/#") as rec:
            winner.forward(EventFactory(SystemClock()).reading("living_temp", 7))
            rec.wait_for(f"{winner.topics.event('living_temp')}")
        assert winner.connected and not loser.connected
    finally:
        first.stop()
        second.stop()


def test_a_command_accepted_before_a_failover_is_answered_done_once_after_it(
    tmp_path: Path, two_brokers: tuple[Broker, Broker]
) -> None:
    a, b = two_brokers
    harness = make_bridge(fleet_config("fo3", tmp_path / "state", [a, b]))
    bridge = harness.bridge
    results = f"{harness.base}/result/#"
    with recorder(a.host, a.port, results) as on_a, recorder(b.host, b.port, results) as on_b:
        bridge.start()
        try:
            wait_until(lambda: bridge.connected, 10, "connected to A")
            command = bridge.handle_command("hall_light", b"ON")
            assert command is not None
            bridge.forward(command)
            on_a.wait_for(f"{harness.base}/result/hall_light")  # accepted, through A
            a.stop(kill=True)
            bridge.forward(harness.events.make(Kind.STATE, "hall_light", True, cause=command.id))
            wait_until(lambda: bridge.health()["failovers"] >= 1 and bridge.connected, 20, "failed over to B")
            assert bridge.handle_command("heater", b"banana") is None  # a later answer, to know B has the earlier
            on_b.wait_for(f"{harness.base}/result/heater")
        finally:
            bridge.stop()
    answers = [*on_a.on(f"{harness.base}/result/hall_light"), *on_b.on(f"{harness.base}/result/hall_light")]
    done = [m.json() for m in answers if m.json()["status"] == "done"]
    assert [(d["command"], d["value"]) for d in done] == [(command.id, True)]


def test_gateway_status_names_the_broker_in_use_and_a_contested_identity() -> None:
    status = {"mqtt": {"enabled": True, "connection": "duplicate client id", "broker": "b.example:8883",
                       "failovers": 2, "identity": "duplicate", "outbox_depth": 0, "events_out": 5}}
    lines = format_status(status, now=0).splitlines()
    assert "broker in use: b.example:8883 (2 failovers since start)" in lines
    assert any(line.startswith("broker: KEEPING OFF: another MQTT client keeps taking") for line in lines)


def test_a_broker_that_refuses_the_login_moves_the_gateway_to_the_next_one_not_beyond(
    tmp_path: Path, two_brokers: tuple[Broker, Broker]
) -> None:
    b, c = two_brokers
    refusing = Broker(port=free_port(), directory=tmp_path / "broker-refusing", extra_config="allow_anonymous false")
    refusing.start()
    try:
        harness = make_bridge(fleet_config("fo4", tmp_path / "state", [refusing, b, c]))
        harness.bridge.start()
        try:
            wait_until(lambda: harness.bridge.connected, 15, "connected after the refusal")
            assert harness.bridge.health()["broker"] == f"127.0.0.1:{b.port}"
        finally:
            harness.bridge.stop()
    finally:
        refusing.stop()


def test_a_gateway_started_while_the_first_broker_is_down_connects_to_the_next(
    tmp_path: Path, two_brokers: tuple[Broker, Broker]
) -> None:
    a, b = two_brokers
    a.stop()
    harness = make_bridge(fleet_config("fo5", tmp_path / "state", [a, b]))
    with recorder(b.host, b.port, f"{harness.base}/event/#") as on_b:
        harness.bridge.start()
        try:
            harness.bridge.forward(harness.events.reading("living_temp", 1))
            on_b.wait_for(f"{harness.base}/event/living_temp", timeout=15)
            assert harness.bridge.health()["broker"] == f"127.0.0.1:{b.port}"
        finally:
            harness.bridge.stop()
