"""A deferred hub command whose claim a newer hub command replaces is answered, once: ``failed``, superseded.

docs/mqtt.md promises every accepted command exactly one final answer. A command the safety envelope defers
keeps its claim and is answered ``done`` when it is applied; but the hub holds one claim per output, so a
newer hub command for the same output replaces it, and the deferred one would never be applied nor answered.
Real Mosquitto; the bridge-level tests play the dispatcher, the last one runs a whole gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from core.events import Kind
from gateway.app import Gateway
from gateway.config import load_config
from gateway.mqtt.inlet import SUPERSEDED_REASON
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import write_config
from tests.mqtt_support import Harness, Recorder, make_bridge, make_config, recorder, running, wait_until

FINAL = {"done", "failed"}


def answers_of(hub: Recorder, base: str, entity: str) -> list[dict[str, Any]]:
    return [m.json() for m in hub.on(f"{base}/result/{entity}")]


def finals(hub: Recorder, base: str, entity: str) -> dict[str, list[dict[str, Any]]]:
    by_command: dict[str, list[dict[str, Any]]] = {}
    for answer in answers_of(hub, base, entity):
        if answer["status"] in FINAL:
            by_command.setdefault(answer["command"], []).append(answer)
    return by_command


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


def test_a_deferred_command_replaced_by_a_newer_one_that_applies_is_answered_failed_superseded(
    live: tuple[Harness, Recorder],
) -> None:
    harness, hub = live
    bridge, base = harness.bridge, harness.base
    deferred = bridge.handle_command("hall_light", b"ON")
    assert deferred is not None
    bridge.forward(harness.events.make(Kind.REJECTED, "hall_light", True, cause=deferred.id,
                                       detail="deferred 299 s: min_off_s"))
    newer = bridge.handle_command("hall_light", b"OFF")
    assert newer is not None
    bridge.forward(harness.events.make(Kind.STATE, "hall_light", False, cause=newer.id))
    wait_until(lambda: len(finals(hub, base, "hall_light")) == 2, what="a final answer for both commands")
    answered = finals(hub, base, "hall_light")
    [old] = answered[deferred.id]
    assert old["status"] == "failed"
    assert old["reason"].startswith(SUPERSEDED_REASON)
    assert newer.id in old["reason"]
    assert [a["status"] for a in answered[newer.id]] == ["done"]


def test_a_deferred_command_replaced_by_a_newer_deferred_one_is_answered_and_the_newer_waits(
    live: tuple[Harness, Recorder],
) -> None:
    harness, hub = live
    bridge, base = harness.bridge, harness.base
    first = bridge.handle_command("hall_light", b"ON")
    assert first is not None
    bridge.forward(harness.events.make(Kind.REJECTED, "hall_light", True, cause=first.id, detail="deferred 30 s: x"))
    second = bridge.handle_command("hall_light", b"ON")
    assert second is not None
    bridge.forward(harness.events.make(Kind.REJECTED, "hall_light", True, cause=second.id, detail="deferred 29 s: x"))
    wait_until(lambda: first.id in finals(hub, base, "hall_light"), what="the first command's final answer")
    assert finals(hub, base, "hall_light")[first.id][0]["status"] == "failed"
    bridge.forward(harness.events.make(Kind.STATE, "hall_light", True, cause=second.id))  # applied at last
    wait_until(lambda: second.id in finals(hub, base, "hall_light"), what="the second command's final answer")
    answered = finals(hub, base, "hall_light")
    assert [len(answered[first.id]), len(answered[second.id])] == [1, 1]
    assert answered[second.id][0]["status"] == "done"


def test_a_deferred_command_of_another_entity_is_not_superseded(live: tuple[Harness, Recorder]) -> None:
    harness, hub = live
    bridge, base = harness.bridge, harness.base
    held = bridge.handle_command("hall_light", b"ON")
    assert held is not None
    bridge.forward(harness.events.make(Kind.REJECTED, "hall_light", True, cause=held.id, detail="deferred 30 s: x"))
    other = bridge.handle_command("heater", b"ON")
    assert other is not None
    bridge.forward(harness.events.make(Kind.STATE, "heater", True, cause=other.id))
    wait_until(lambda: other.id in finals(hub, base, "heater"), what="the other entity's answer")
    assert held.id not in finals(hub, base, "hall_light")


RELAY_HOUSE = toml.config(toml.gateway("superseded"), "{mqtt}",
                          toml.relay("hall_light", 22, component="light", envelope={"min_off_s": 300}))


def test_a_gateway_answers_a_deferred_hub_command_the_hub_replaces_before_it_applies(
    broker: Broker, tmp_path: Path,
) -> None:
    base = "gateway/superseded"
    config = RELAY_HOUSE.replace("{mqtt}", toml.mqtt(broker.port, reconnect_max=1))
    gateway = Gateway(load_config(write_config(tmp_path, config)), pin_factory=MockFactory())
    with recorder(broker.host, broker.port, f"{base}/result/#") as hub, running(gateway):
        bridge = gateway.forwarder
        wait_until(lambda: getattr(bridge, "connected", False), what="the gateway connected")
        def answered_besides_accepted() -> list[str]:
            return [a["status"] for a in answers_of(hub, base, "hall_light") if a["status"] != "accepted"]

        for count, payload in enumerate(("ON", "OFF", "ON", "OFF"), 1):  # the second ON is within min_off_s:
            hub.publish(f"{base}/set/hall_light", payload)             # deferred; the OFF after it replaces it
            wait_until(partial(lambda n: len(answered_besides_accepted()) >= n, count), what=f"an answer to {payload}")
        statuses = answered_besides_accepted()
        wait_until(lambda: len(finals(hub, base, "hall_light")) == 4, what="a final answer for each command")
    answered = finals(hub, base, "hall_light")
    assert all(len(a) == 1 for a in answered.values())
    assert "deferred" in statuses
    superseded = [a[0] for a in answered.values() if a[0]["status"] == "failed"]
    assert len(superseded) == 1 and superseded[0]["reason"].startswith(SUPERSEDED_REASON)
