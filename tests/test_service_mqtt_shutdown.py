"""The service with a real broker: status shows the link; SIGTERM leaves safe states, then ``offline``.

Topics and payloads per docs/mqtt.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.helpers import Subscriber, wait_until
from tests.service_support import GatewayProcess, run_cli, service_config, short_dir

SAFE_VALUES = {"hall_light": False, "heater": False, "vent_damper": True}


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_sigterm_publishes_safe_states_then_offline(broker: Broker, workdir: Path) -> None:
    base = "gateway/svc-mqtt"
    subscriber = Subscriber(broker.host, broker.port, f"{base}/#")
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-mqtt", broker.port), mqtt=True)
    try:
        gateway.wait_ready()
        wait_until(lambda: "online" in subscriber.on(f"{base}/status"), what="online")
        assert gateway.stop() == 0, gateway.log()
        wait_until(lambda: subscriber.on(f"{base}/status")[-1:] == ["offline"], what="offline")
        for entity, safe in SAFE_VALUES.items():
            states = subscriber.on(f"{base}/state/{entity}")
            assert states and states[-1] == safe, (entity, states)  # bare JSON value (docs/mqtt.md)
    finally:
        gateway.close()
        subscriber.close()


def test_status_shows_the_broker_connection_and_the_outbox(broker: Broker, workdir: Path) -> None:
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-mqtt-status", broker.port), mqtt=True)
    try:
        gateway.wait_ready()
        socket_path = str(gateway.socket_path)
        wait_until(
            lambda: "broker: connected; outbox: 0 queued" in run_cli("status", "--socket", socket_path).stdout,
            what="status: connected, outbox empty",
        )
        assert gateway.stop() == 0
    finally:
        gateway.close()
