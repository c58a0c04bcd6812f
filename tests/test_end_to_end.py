"""The whole path on real parts: mock GPIO pins and a real pty -> rules -> relay -> a real Mosquitto."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.conftest import Broker, free_port
from tests.helpers import Subscriber, wait_until, write_config
from tests.houses import house_config

ROOT = Path(__file__).resolve().parent.parent

RULES = "version = 1\n" + toml.state_rule("light_on_motion", "motion", True, "turn_on", "light")


def house(directory: Path, port: int, serial_port: str = "loop://", gateway_id: str = "e2e") -> Path:
    return house_config(directory, mqtt_port=port, serial_port=serial_port, gateway_id=gateway_id, rules=RULES,
                        light_active_low=True)


class Running:
    """A Gateway started in-process with its dispatcher on a thread of its own."""

    def __init__(self, config_path: Path, pins: MockFactory) -> None:
        self.gateway = Gateway(load_config(config_path), pin_factory=pins)
        self.gateway.start()
        self.thread = threading.Thread(target=self.gateway.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.gateway.request_stop()
        self.thread.join(timeout=5)
        self.gateway.shutdown()


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_a_motion_edge_reaches_the_broker_and_switches_the_relay_through_a_rule(
    tmp_path: Path, broker: Broker, pins: MockFactory
) -> None:
    hub = Subscriber(broker.host, broker.port, "gateway/e2e/#")
    running = Running(house(tmp_path, broker.port), pins)
    try:
        relay_pin = pins.pin(22)
        assert relay_pin.state is True  # active-low relay idles high: off, its safe state
        pins.pin(17).drive_high()
        wait_until(lambda: any(p["value"] is True for p in hub.on("gateway/e2e/event/motion")), what="motion event")
        wait_until(lambda: hub.on("gateway/e2e/state/light")[-1:] == [True] or False, what="light state")
        assert relay_pin.state is False  # driven low: the light is on
        motion = next(p for p in hub.on("gateway/e2e/event/motion") if p["value"] is True)
        light_events = hub.on("gateway/e2e/event/light")
        command = next(p for p in light_events if p["kind"] == "command")
        assert command["rule"] == "light_on_motion" and command["cause"] == motion["id"]
        assert {"id", "seq", "entity", "kind", "value", "ts"} <= set(motion)
    finally:
        running.stop()
        hub.close()
    assert pins.pin(22).state is True  # back to its safe state after stop


def test_a_line_written_into_a_real_pty_becomes_a_temperature_event_on_mqtt(
    tmp_path: Path, broker: Broker, pins: MockFactory, pty: tuple[int, str]
) -> None:
    master, path = pty
    hub = Subscriber(broker.host, broker.port, "gateway/e2e-pty/event/temperature")
    running = Running(house(tmp_path, broker.port, serial_port=path, gateway_id="e2e-pty"), pins)
    try:
        os.write(master, b"t=21.5\n")
        wait_until(lambda: bool(hub.on("gateway/e2e-pty/event/temperature")), what="temperature event")
        event = hub.on("gateway/e2e-pty/event/temperature")[0]
        assert (event["value"], event["unit"]) == (21.5, "°C")
    finally:
        running.stop()
        hub.close()


def test_with_no_broker_the_rules_still_drive_the_actuators(tmp_path: Path, pins: MockFactory) -> None:
    running = Running(house(tmp_path, free_port(), gateway_id="e2e-offline"), pins)
    try:
        pins.pin(17).drive_high()
        wait_until(lambda: pins.pin(22).state is False, what="light switched on by the rule")
    finally:
        running.stop()


def gateway_process(config: Path, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--simulate", "--config", str(config),
             "--state-dir", str(state_dir)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )


def test_the_simulated_house_publishes_events_and_stops_cleanly_on_sigterm(tmp_path: Path, broker: Broker) -> None:
    config = write_config(
        tmp_path,
        (ROOT / "config.toml").read_text().replace('port = 1883', f'port = {broker.port}')
        .replace('host = "localhost"', 'host = "127.0.0.1"').replace('id = "house-01"', 'id = "sim-test"'),
    )
    (tmp_path / "rules.d" / "house.toml").write_text((ROOT / "rules.d" / "house.toml").read_text())
    hub = Subscriber(broker.host, broker.port, "gateway/sim-test/#")
    log = tmp_path / "gateway.log"
    process = gateway_process(config, tmp_path / "state", log)
    try:
        wait_until(lambda: hub.on("gateway/sim-test/status")[-1:] == ["online"], what="online status")
        wait_until(lambda: bool(hub.on("gateway/sim-test/event/hall_light")), what="relay state event")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 2.0
        wait_until(lambda: hub.on("gateway/sim-test/status")[-1:] == ["offline"], what="offline status")
    finally:
        if process.poll() is None:
            process.kill()
        hub.close()
    assert "Traceback" not in log.read_text()
