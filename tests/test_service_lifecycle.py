"""Start and reload safety of the wired gateway, in process on mock pins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.config import load_config
from gateway.service import Service
from tests.service_support import service_config


@pytest.fixture
def pins() -> MockFactory:
    return MockFactory()


@pytest.fixture
def gateway(tmp_path: Path, pins: MockFactory) -> Iterator[Gateway]:
    gateway = Gateway(load_config(service_config(tmp_path, "svc-life")), pin_factory=pins, mqtt=False)
    yield gateway
    gateway.shutdown()


def test_actuators_start_in_their_safe_state_and_rules_act_on_fresh_readings(
    gateway: Gateway, pins: MockFactory
) -> None:
    gateway.start()
    light = pins.pin("GPIO22")  # active-low: high = off (safe)
    assert [s.state for s in light.states] == [False, True]
    pins.pin("GPIO17").drive_high()  # motion, read after the start
    gateway.dispatcher.drain()
    assert [s.state for s in light.states] == [False, True, False]


def test_a_reload_replaces_the_rules(gateway: Gateway, tmp_path: Path) -> None:
    (tmp_path / "rules.d" / "more.toml").write_text(
        'version = 1\n[[rules]]\nid = "heat_on_motion"\n'
        '[[rules.triggers]]\ntype = "state"\nentity = "hall_motion"\nto = true\n'
        '[[rules.actions]]\ntype = "turn_on"\nentity = "heater"\n'
    )
    assert gateway.reload()
    assert gateway.dispatcher.reactor is gateway.engine
    assert "heat_on_motion" in [rule.id for rule in gateway.engine.rules]


def test_a_failed_reload_keeps_the_running_rules(gateway: Gateway, tmp_path: Path) -> None:
    running = gateway.dispatcher.reactor
    (tmp_path / "rules.d" / "bad.toml").write_text("version = 1\n[[rules]]\n")
    assert not gateway.reload()
    assert gateway.dispatcher.reactor is running


def test_blocking_the_dispatcher_is_refused_on_real_hardware(gateway: Gateway) -> None:
    reply = Service(gateway).answer({"cmd": "hang", "seconds": 1})
    assert reply == {"ok": False, "error": "unknown request 'hang'"}
