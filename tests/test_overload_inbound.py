"""The inbound side under a flood (issue 17): hub commands and the hub's births, bounded and answered.

Real Mosquitto, real gateway; short floods (a few thousand messages), assertions on bounds and counts,
never on timings. See docs/mqtt.md, *Floods*.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from core.clock import VirtualClock
from core.events import Kind
from gateway.app import Gateway
from gateway.config import MqttSection, load_config
from gateway.mqtt.inlet import MAX_TRACKED_COMMANDS, TOTAL_FACTOR, CommandInlet, CommandLimiter
from gateway.mqtt.retained import BIRTH_INTERVAL
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import write_config
from tests.mqtt_support import Harness, Recorder, bridge_of, make_bridge, make_config, recorder, running, wait_until

FINAL = {"done", "failed"}


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def flood(port: int, messages: list[tuple[str, str]]) -> None:
    """Publish ``messages`` (QoS 1) as fast as the broker takes them, from a client of its own."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def results(hub: Recorder, base: str, entity: str) -> list[dict[str, Any]]:
    return [m.json() for m in hub.on(f"{base}/result/{entity}")]


def finals_by_command(answers: list[dict[str, Any]]) -> Counter[str]:
    return Counter(a["command"] for a in answers if a["status"] in FINAL)


def deferred_commands(answers: list[dict[str, Any]]) -> set[str]:
    return {str(a["command"]) for a in answers if a["status"] == "deferred"}


# -- the limiter ------------------------------------------------------------------------------------


def test_the_limiter_answers_the_first_refusal_of_a_burst_and_only_counts_the_rest() -> None:
    clock = VirtualClock()
    limiter = CommandLimiter(2.0, 3, clock.monotonic, known=lambda entity: entity == "light")
    assert [limiter.admit("light") for _ in range(6)] == ["ok", "ok", "ok", "refuse", "silent", "silent"]
    clock.advance(0.5)  # one token back, the flood goes on: the same burst
    assert [limiter.admit("light") for _ in range(2)] == ["ok", "silent"]
    clock.advance(1.5)  # the bucket filled up again: the burst is over
    assert [limiter.admit("light") for _ in range(4)] == ["ok", "ok", "ok", "refuse"]  # a new burst, a new answer


def test_the_total_rate_limits_a_flood_spread_over_many_names() -> None:
    clock = VirtualClock()
    limiter = CommandLimiter(1.0, 2, clock.monotonic, known=lambda entity: True)
    verdicts = [limiter.admit(f"entity_{n}") for n in range(4 * TOTAL_FACTOR)]
    assert verdicts.count("ok") == 2 * TOTAL_FACTOR
    assert verdicts.count("refuse") == 1


def test_made_up_entity_names_share_one_bucket() -> None:
    clock = VirtualClock()
    limiter = CommandLimiter(1.0, 2, clock.monotonic, known=lambda entity: False)
    verdicts = [limiter.admit(f"nonsense_{n}") for n in range(5)]
    assert verdicts == ["ok", "ok", "refuse", "silent", "silent"]


def test_the_inlets_default_rate_is_the_configs() -> None:
    assert MqttSection.model_fields["command_rate"].default == 10.0
    assert MqttSection.model_fields["command_burst"].default == 20
    defaults = CommandInlet.__init__.__kwdefaults__
    assert defaults is not None
    assert (defaults["rate"], defaults["burst"]) == (10.0, 20)


# -- tracked commands -------------------------------------------------------------------------------


@pytest.fixture
def live(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path) -> Iterator[tuple[Harness, Recorder]]:
    """A started bridge (no dispatcher: the test plays it) and a hub listening to its results."""
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port))
    with recorder(broker.host, broker.port, f"gateway/{gateway_id}/result/#") as hub:
        harness.bridge.start()
        try:
            wait_until(lambda: harness.bridge.connected, what="the bridge connected")
            yield harness, hub
        finally:
            harness.bridge.stop()


def test_a_full_table_of_tracked_commands_refuses_a_new_command_rather_than_forget_an_accepted_one(
    live: tuple[Harness, Recorder],
) -> None:
    harness, hub = live
    bridge = harness.bridge
    accepted = [bridge.handle_command("hall_light", b"ON") for _ in range(MAX_TRACKED_COMMANDS)]
    assert bridge.handle_command("hall_light", b"ON") is None
    assert bridge.inlet.tracked == MAX_TRACKED_COMMANDS
    first = accepted[0]
    assert first is not None
    bridge.forward(harness.events.make(Kind.STATE, "hall_light", True, cause=first.id))
    answers = wait_until(
        lambda: [a for a in results(hub, harness.base, "hall_light") if a["status"] in FINAL | {"rejected"}]
        if len(hub.on(f"{harness.base}/result/hall_light")) >= MAX_TRACKED_COMMANDS + 2 else [],
        what="every result")
    assert [a["status"] for a in answers] == ["rejected", "done"]
    assert answers[0]["reason"].startswith("busy")
    assert answers[1]["command"] == first.id
    assert bridge.health()["shed"]["commands_busy"] == 1


def test_an_outcome_closes_the_earlier_commands_the_dispatcher_passed_without_one(
    live: tuple[Harness, Recorder],
) -> None:
    harness, hub = live
    bridge = harness.bridge
    unchanged = bridge.handle_command("hall_light", b"ON")
    changed = bridge.handle_command("hall_light", b"OFF")
    assert unchanged is not None and changed is not None
    bridge.forward(harness.events.make(Kind.STATE, "hall_light", False, cause=changed.id))
    wait_until(lambda: len(finals_by_command(results(hub, harness.base, "hall_light"))) == 2, what="two answers")
    finals = {a["command"]: a for a in results(hub, harness.base, "hall_light") if a["status"] in FINAL}
    assert finals[unchanged.id]["status"] == "done"
    assert finals[unchanged.id]["value"] is True
    assert finals[changed.id]["status"] == "done"
    assert bridge.inlet.tracked == 0


# -- floods over a real broker, through a real gateway --------------------------------------------


RELAY_HOUSE = toml.config(toml.gateway("flooded"), "{mqtt}", toml.relay("hall_light", 22, component="light"))


def test_a_flood_of_hub_commands_is_rate_limited_answered_once_per_burst_and_bounded(
    broker: Broker, tmp_path: Path,
) -> None:
    base = "gateway/flooded"
    config = RELAY_HOUSE.replace("{mqtt}", toml.mqtt(broker.port, reconnect_max=1))
    gateway = Gateway(load_config(write_config(tmp_path, config)), pin_factory=MockFactory())
    count = 3000
    with recorder(broker.host, broker.port, f"{base}/result/#") as hub, running(gateway):
        bridge = bridge_of(gateway)
        wait_until(lambda: bridge.connected, what="the gateway connected")
        before = rss_mb()
        started = time.monotonic()
        flood(broker.port, [(f"{base}/set/hall_light", "ON" if n % 2 else "OFF") for n in range(count)])
        wait_until(lambda: bridge.counters.commands_accepted + bridge.counters.commands_rate_limited >= count,
                   timeout=30, what="every command seen")
        elapsed = time.monotonic() - started
        accepted = bridge.counters.commands_accepted

        def all_answered() -> bool:
            answers = results(hub, base, "hall_light")
            return len(set(finals_by_command(answers)) | deferred_commands(answers)) >= accepted

        wait_until(all_answered, timeout=30, what="a final answer for every accepted command")
        peak_tracked = bridge.inlet.tracked
        growth = rss_mb() - before
        shed = bridge.health()["shed"]
    answers = results(hub, base, "hall_light")
    accepted_ids = [a["command"] for a in answers if a["status"] == "accepted"]
    finals = finals_by_command(answers)
    assert len(accepted_ids) == accepted
    # exactly one final answer each, or "deferred" (the envelope holds the switch; the final one follows)
    assert set(finals) | deferred_commands(answers) == set(accepted_ids)
    assert set(finals.values()) <= {1}
    section = MqttSection.model_validate({})
    assert accepted <= section.command_burst + section.command_rate * (elapsed + 1)
    limited = [a for a in answers if a["status"] == "rejected"]
    assert all(a["reason"].startswith("rate limit") for a in limited)
    assert 1 <= len(limited) <= 3  # one answer per burst (a short pause may end one), never one per message
    assert shed["commands_rate_limited"] == count - accepted
    assert peak_tracked <= MAX_TRACKED_COMMANDS
    assert growth < 30, f"RSS grew {growth:.1f} MB"


THERMOSTAT_HOUSE = """
version = 1
[[thermostats]]
id = "living"
sensor = "temperature"
heater = "heater"
setpoint = 20
"""


def test_a_thermostat_told_heat_while_heating_answers_done(broker: Broker, tmp_path: Path) -> None:
    base = "gateway/unchanged"
    config = toml.config(toml.gateway("unchanged"), toml.mqtt(broker.port, reconnect_max=1), toml.relay("heater", 23),
                         toml.serial_kv("climate", "temperature", unit="°C"))
    gateway = Gateway(load_config(write_config(tmp_path, config, rules=THERMOSTAT_HOUSE)), pin_factory=MockFactory())
    with recorder(broker.host, broker.port, f"{base}/result/#") as hub, running(gateway):
        bridge = bridge_of(gateway)
        wait_until(lambda: bridge.connected, what="the gateway connected")
        flood(broker.port, [(f"{base}/set/living", mode) for mode in ("heat", "heat", "off")])
        wait_until(lambda: len(finals_by_command(results(hub, base, "living"))) == 3, what="three answers")
    answers = results(hub, base, "living")
    assert [a["status"] for a in answers if a["status"] in FINAL] == ["done", "done", "done"]
    assert [a["value"] for a in answers if a["status"] in FINAL] == ["heat", "heat", "off"]


def test_a_burst_of_hub_births_is_coalesced_to_one_announcement_a_second(live: tuple[Harness, Recorder],
                                                                         broker: Broker) -> None:
    harness, _ = live
    bridge = harness.bridge
    counters = bridge.counters
    wait_until(lambda: counters.states_published > 0 and not bridge.retained.waiting, what="the first announcement")
    one = counters.states_published
    births = 2000
    before = rss_mb()
    started = time.monotonic()
    flood(broker.port, [("homeassistant/status", "online")] * births)
    wait_until(lambda: counters.hub_births >= births, timeout=30, what="every birth seen")
    wait_until(lambda: not bridge.retained.waiting, timeout=10, what="the last coalesced announcement")
    elapsed = time.monotonic() - started
    republished = counters.states_published - one
    per_announcement = len(bridge.retained._retained) + len(bridge.entities)  # states, availability, discovery
    assert republished <= per_announcement * (elapsed / BIRTH_INTERVAL + 2)
    assert bridge.health()["shed"]["births_coalesced"] >= births - (elapsed / BIRTH_INTERVAL + 2)
    assert rss_mb() - before < 30
