"""A hub siren with Home Assistant's ``duration``, over a real Mosquitto: it sounds that long, then lets go
(a claim with an end: gateway/authority.py); volume and tones are declared unsupported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from core.clock import VirtualClock
from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import Subscriber, wait_until, write_config

SIREN_PIN = 24


@pytest.fixture
def house(tmp_path: Path, broker: Broker) -> Iterator[tuple[Gateway, MockFactory]]:
    """A free siren (no alarm owns it) with a 60 s envelope, on virtual time; the test drives the dispatcher."""
    pins = MockFactory()
    text = toml.config(toml.gateway("sirens"), toml.mqtt(broker.port),
                       toml.relay("siren", SIREN_PIN, component="siren", name="Alarm siren",
                                  envelope={"max_on_s": 60}))
    gateway = Gateway(load_config(write_config(tmp_path, text, rules="version = 1\n")), pin_factory=pins,
                      clock=VirtualClock())
    gateway.start()
    yield gateway, pins
    gateway.shutdown()
    pins.reset()


def publish(broker: Broker, topic: str, payload: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def sound_for_5_seconds(gateway: Gateway, pins: MockFactory, broker: Broker) -> None:
    """What Home Assistant sends for ``siren.turn_on`` with ``duration: 5`` (no command_template)."""
    def sounding() -> bool:
        gateway.dispatcher.drain()
        if pins.pin(SIREN_PIN).state:
            return True
        publish(broker, "gateway/sirens/set/siren", json.dumps({"state": "ON", "duration": 5}))
        return False
    wait_until(sounding, what="the siren sounding")


def test_a_siren_turned_on_for_5_seconds_sounds_5_seconds_and_then_lets_go(
    house: tuple[Gateway, MockFactory], broker: Broker
) -> None:
    gateway, pins = house
    states = Subscriber(broker.host, broker.port, "gateway/sirens/state/siren")
    try:
        sound_for_5_seconds(gateway, pins, broker)
        gateway.dispatcher.advance(4.9)
        assert pins.pin(SIREN_PIN).state is True
        gateway.dispatcher.advance(0.2)
        assert pins.pin(SIREN_PIN).state is False
        assert gateway.dispatcher.outputs.status()["siren"]["claims"] == []
        wait_until(lambda: states.on("gateway/sirens/state/siren")[-1:] == [False], what="the hub told it is off")
    finally:
        states.close()


def test_a_siren_command_with_a_volume_is_refused_with_a_reason(
    house: tuple[Gateway, MockFactory], broker: Broker
) -> None:
    gateway, pins = house
    results = Subscriber(broker.host, broker.port, "gateway/sirens/result/siren")

    def answered() -> list[Any]:
        publish(broker, "gateway/sirens/set/siren", json.dumps({"state": "ON", "volume_level": 0.5}))
        # A command published before the gateway's command session is back is kept by the broker and refused as
        # stale when it arrives (gateway/mqtt/backlog.py): not the refusal this test is about.
        return [answer for answer in results.on("gateway/sirens/result/siren")
                if not str(answer.get("reason", "")).startswith("sent while the gateway was offline")]

    try:
        answer = wait_until(answered, what="a result")[0]
        assert answer["status"] == "rejected"
        assert "volume_level" in answer["reason"]
        gateway.dispatcher.drain()
        assert pins.pin(SIREN_PIN).state is False
    finally:
        results.close()


def test_the_siren_is_announced_with_duration_and_without_volume_or_tones(
    house: tuple[Gateway, MockFactory], broker: Broker
) -> None:
    hub = Subscriber(broker.host, broker.port, "homeassistant/#")
    try:
        config = wait_until(lambda: hub.on("homeassistant/siren/sirens/siren/config"), what="siren config")[-1]
        assert config["support_duration"] is True
        assert config["support_volume_set"] is False
        assert "available_tones" not in config
    finally:
        hub.close()
