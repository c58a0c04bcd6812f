"""A rule reload that adds or removes a thermostat tells the hub at once, without a restart."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import Subscriber, wait_until, write_config
from tests.mqtt_support import bridge_of


def hub_config(port: int, **mqtt: toml.Setting) -> str:
    """A heater and the sensor a thermostat would read, on the tests' broker."""
    return toml.config(toml.gateway("reload-hub"), toml.mqtt(port, **mqtt), toml.relay("heater", 23),
                       toml.serial_kv("climate", "temperature", unit="°C"))


THERMOSTAT = """
version = 1
[[thermostats]]
id = "living"
sensor = "temperature"
heater = "heater"
setpoint = 20
"""

DISCOVERY = "homeassistant/climate/reload-hub/living/config"


@pytest.fixture
def gateway(tmp_path: Path, broker: Broker) -> Iterator[Gateway]:
    config = load_config(write_config(tmp_path, hub_config(broker.port), rules="version = 1\n"))
    gateway = Gateway(config, pin_factory=MockFactory())
    gateway.start()
    yield gateway
    gateway.shutdown()


def test_a_thermostat_added_by_a_reload_is_discovered_and_commandable(
    gateway: Gateway, broker: Broker, tmp_path: Path
) -> None:
    hub = Subscriber(broker.host, broker.port, "homeassistant/#")
    try:
        (tmp_path / "rules.d" / "test.toml").write_text(THERMOSTAT)
        assert gateway.reload()
        wait_until(lambda: any(p for p in hub.on(DISCOVERY)), what="climate discovery")
        assert bridge_of(gateway).handle_command("living", b"21.5") is not None
    finally:
        hub.close()


def test_a_thermostat_removed_by_a_reload_is_removed_from_the_hub(
    gateway: Gateway, broker: Broker, tmp_path: Path
) -> None:
    (tmp_path / "rules.d" / "test.toml").write_text(THERMOSTAT)
    assert gateway.reload()
    hub = Subscriber(broker.host, broker.port, "homeassistant/#")
    try:
        wait_until(lambda: any(p for p in hub.on(DISCOVERY)), what="climate discovery (retained)")
        (tmp_path / "rules.d" / "test.toml").write_text("version = 1\n")
        assert gateway.reload()
        wait_until(lambda: hub.on(DISCOVERY)[-1:] == [""], what="empty retained config")
        assert bridge_of(gateway).handle_command("living", b"21.5") is None
    finally:
        hub.close()


def test_a_removal_made_while_the_broker_is_away_reaches_the_hub_when_it_returns(
    tmp_path: Path, private_broker: Broker
) -> None:
    body = hub_config(private_broker.port, reconnect_max=1)
    path = write_config(tmp_path, body, rules=THERMOSTAT)
    gateway = Gateway(load_config(path), pin_factory=MockFactory())
    gateway.start()
    try:
        hub = Subscriber(private_broker.host, private_broker.port, "homeassistant/#")
        wait_until(lambda: any(p for p in hub.on(DISCOVERY)), what="climate discovery")
        hub.close()
        private_broker.stop()
        (tmp_path / "rules.d" / "test.toml").write_text("version = 1\n")
        assert gateway.reload()
        private_broker.start()
        hub = Subscriber(private_broker.host, private_broker.port, "homeassistant/#")
        wait_until(lambda: "" in hub.on(DISCOVERY), what="the removal, once the broker is back")
        hub.close()
    finally:
        gateway.shutdown()


def test_a_reload_whose_thermostat_controller_cannot_be_imported_is_refused_whole(
    gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The controller is imported only once a rule set declares a thermostat (a lean start). An install
    # upgraded in place under a running gateway can make that import fail: the reload must be refused
    # before anything is swapped, and the rules in force must stay whole.
    rules = tmp_path / "rules.d" / "test.toml"
    rules.write_text(RULE.format(topic="notify/cold"))
    assert gateway.reload()
    rules.write_text(RULE.format(topic="notify/chilly") + THERMOSTAT.replace("version = 1", ""))
    monkeypatch.setitem(sys.modules, "rules.thermostat", None)  # what a broken install looks like to import
    assert not gateway.reload()
    assert [getattr(action, "topic", None) for rule in gateway.engine.rules for action in rule.actions] == [
        "notify/cold"]
    assert "living" not in gateway.engine.controllers.by_id


RULE = """
version = 1

[[rules]]
id = "cold"
[[rules.triggers]]
type = "numeric"
entity = "temperature"
below = 15
[[rules.actions]]
type = "publish"
topic = "{topic}"
payload = "cold"
"""
