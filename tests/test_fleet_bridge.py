"""The house-broker topology: the gateway and the hub on the Pi's own Mosquitto, bridged to a central
broker. With the uplink down the house keeps working; when it returns the centre gets what was queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Broker, free_port
from tests.mqtt_support import house_bridge_config, make_bridge, make_config, recorder, wait_until

PERSISTENT = "persistence true\nuser root\n"  # root: pytest's 0700 temp dirs are closed to the mosquitto user


@pytest.fixture
def house_and_centre(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """A central broker (persistent, so a fleet consumer's session survives its restart) and a house
    broker whose bridge configuration is written into its own temp directory."""
    centre = Broker(port=free_port(), directory=tmp_path / "centre", extra_config=PERSISTENT)
    centre.start()
    house = Broker(port=free_port(), directory=tmp_path / "house",
                   extra_config=PERSISTENT + house_bridge_config(centre.port, name="house-01"))
    house.start()
    yield house, centre
    house.stop()
    centre.stop()


def values(messages: list[Any]) -> set[Any]:
    return {m.json()["value"] for m in messages}


def test_with_the_uplink_down_the_house_works_and_the_centre_catches_up_after(
    tmp_path: Path, house_and_centre: tuple[Broker, Broker]
) -> None:
    house, centre = house_and_centre
    assert "connection house-01" in house.config_path.read_text()
    harness = make_bridge(make_config("house-01", tmp_path / "state", house.port, drain_rate=100_000))
    bridge, base = harness.bridge, harness.base
    with recorder(centre.host, centre.port, f"{base}/event/#", client_id="fleet-consumer", session=True) as central, \
            recorder(house.host, house.port, f"{base}/event/#") as hub:
        bridge.start()
        try:
            wait_until(lambda: bridge.connected, 10, "the gateway on the house broker")
            for i in range(20):
                bridge.forward(harness.events.reading("living_temp", i))
            wait_until(lambda: values(central.matching(f"{base}/event/")) >= set(range(20)), 10, "the bridge up")

            centre.stop()  # the uplink is down
            for i in range(20, 40):
                bridge.forward(harness.events.reading("living_temp", i))
            wait_until(lambda: values(hub.matching(f"{base}/event/")) >= set(range(40)), 10, "the hub, locally")
            wait_until(lambda: bridge.outbox.depth == 0, 10, "every event acknowledged by the house broker")
            assert bridge.connected  # the gateway never noticed
            hub.publish(f"{base}/set/hall_light", "ON")  # the hub still commands the house
            wait_until(lambda: bridge.counters.commands_accepted >= 1, 10, "a local command")

            centre.start()  # the uplink returns: the house broker sends what it queued for it
            wait_until(lambda: values(central.matching(f"{base}/event/")) >= set(range(40)), 30,
                       "the queued events at the centre")
        finally:
            bridge.stop()
