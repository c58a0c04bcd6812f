"""The bridge inside the real application: a hub command drives a relay and the hub sees the outcome."""

from __future__ import annotations

import threading
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from core.entities import Component, EntitySpec
from gateway.app import Gateway
from gateway.config import load_config
from gateway.mqtt.discovery import Discovery
from gateway.mqtt.topics import Topics
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import write_config
from tests.mqtt_support import recorder, wait_until


def chain_config(port: int) -> str:
    return toml.config(toml.gateway("cmd-chain"), toml.mqtt(port, reconnect_max=1),
                       toml.relay("porch_light", 22, component="light"))


def test_a_hub_command_switches_the_relay_and_is_answered_and_echoed(broker: Broker, tmp_path: Path) -> None:
    pins = MockFactory()
    gateway = Gateway(load_config(write_config(tmp_path, chain_config(broker.port))), pin_factory=pins)
    base = "gateway/cmd-chain"
    with recorder(broker.host, broker.port, f"{base}/result/#", f"{base}/state/#") as hub:
        gateway.start()
        runner = threading.Thread(target=gateway.run, daemon=True)
        runner.start()
        try:
            def commanded() -> bool:
                hub.publish(f"{base}/set/porch_light", "ON")  # repeated until the bridge has subscribed
                return bool(hub.on(f"{base}/result/porch_light"))

            wait_until(commanded, what="an answer to the command")
            wait_until(lambda: [m for m in hub.on(f"{base}/result/porch_light") if m.json()["status"] == "done"],
                       what="the command done")
            results = [m.json() for m in hub.on(f"{base}/result/porch_light")]
            assert pins.pin(22).state is True
            states = hub.wait_for(f"{base}/state/porch_light")
        finally:
            gateway.request_stop()
            runner.join(timeout=5)
            gateway.shutdown()
            pins.reset()
    done = next(r for r in results if r["status"] == "done")
    assert {"status": "accepted", "command": done["command"]}.items() <= results[0].items()
    assert done["value"] is True
    assert states[-1].json() is True


def test_a_dimmable_light_is_announced_with_its_brightness_scale() -> None:
    discovery = Discovery(Topics("gateway/x"), "x", None, "1", Path("/nonexistent/discovery.json"))
    config = discovery.entity_config(EntitySpec("strip", Component.LIGHT, unit="%", minimum=0, maximum=100))
    assert config["brightness_command_topic"] == config["command_topic"] == "gateway/x/set/strip"
    assert config["brightness_scale"] == 100
