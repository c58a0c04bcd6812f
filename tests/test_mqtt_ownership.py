"""Outputs a controller owns, as the hub sees them over a real Mosquitto: read-only, and commands refused
at the edge with the owner's name (gateway/authority.py, rules/ownership.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import Subscriber, wait_until, write_config


def owned_config(port: int) -> str:
    """Outputs a thermostat and an alarm will own, and the thermostat's sensor."""
    return toml.config(toml.gateway("owned"), toml.mqtt(port), toml.relay("heater", 23),
                       toml.relay("siren", 24, component="siren"), toml.serial_kv("climate", "temperature", unit="°C"))


RULES = """
version = 1
[[thermostats]]
id = "living"
sensor = "temperature"
heater = "heater"
setpoint = 20

[[alarms]]
id = "house_alarm"
siren = "siren"
"""


@pytest.fixture
def house(tmp_path: Path, broker: Broker) -> Iterator[tuple[Gateway, MockFactory]]:
    pins = MockFactory()
    config = load_config(write_config(tmp_path, owned_config(broker.port), rules=RULES))
    gateway = Gateway(config, pin_factory=pins)
    gateway.start()
    yield gateway, pins
    gateway.shutdown()


def publish(broker: Broker, topic: str, payload: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def test_a_hub_command_to_the_thermostats_heater_is_refused_at_the_edge_naming_the_owner(
    house: tuple[Gateway, MockFactory], broker: Broker
) -> None:
    _, pins = house
    results = Subscriber(broker.host, broker.port, "gateway/owned/result/#")

    def answered() -> list[Any]:  # JSON results
        publish(broker, "gateway/owned/set/heater", "ON")  # repeated until the bridge has subscribed
        return results.on("gateway/owned/result/heater")

    try:
        answer = wait_until(answered, what="a result")[0]
        assert answer["status"] == "rejected"
        assert "owned by thermostat living" in answer["reason"]
        assert pins.pin(23).state is False
    finally:
        results.close()


def test_owned_outputs_are_announced_read_only(house: tuple[Gateway, MockFactory], broker: Broker) -> None:
    hub = Subscriber(broker.host, broker.port, "homeassistant/#")
    try:
        heater = wait_until(lambda: hub.on("homeassistant/binary_sensor/owned/heater/config"), what="heater")
        siren = wait_until(lambda: hub.on("homeassistant/binary_sensor/owned/siren/config"), what="siren")
        assert "command_topic" not in heater[-1] and "command_topic" not in siren[-1]
        assert siren[-1]["device_class"] == "sound"
        assert not hub.on("homeassistant/switch/owned/heater/config")
    finally:
        hub.close()
