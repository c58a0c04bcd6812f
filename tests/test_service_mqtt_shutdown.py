"""SIGTERM with a broker: the hub sees every actuator back at its safe state, then ``offline``.

Runs once the MQTT bridge (gateway/mqtt/bridge.py) is in the tree; topics per docs/mqtt.md.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.helpers import Subscriber, wait_until
from tests.service_support import GatewayProcess, service_config, short_dir

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gateway.mqtt") is None or importlib.util.find_spec("gateway.mqtt.bridge") is None,
    reason="the MQTT bridge is not merged yet",
)

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
