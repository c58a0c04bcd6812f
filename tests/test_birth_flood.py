"""10,000 births of the hub (``homeassistant/status`` = ``online``) over a real Mosquitto: at most one
re-announcement burst a second, and the gateway's memory stays flat (issue 12: 8,800 births once
became 94,000 retained re-publications and 47 -> 181 MB RSS)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.mqtt.retained import BIRTH_INTERVAL
from tests.conftest import Broker
from tests.mqtt_support import Harness, make_bridge, make_config, wait_until
from tests.test_overload_inbound import rss_mb

BIRTHS = 10_000


def births(port: int, count: int) -> None:
    """``count`` births from another process (``mosquitto_pub -l``: one message per line), so the
    test's RSS is the gateway's alone, not a publisher's queue."""
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-l",
                    "-t", "homeassistant/status"], input=b"online\n" * count, check=True, timeout=60)


@pytest.fixture
def bridge(request: pytest.FixtureRequest, broker: Broker, tmp_path: Path) -> Iterator[Harness]:
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port))
    harness.bridge.start()
    try:
        wait_until(lambda: harness.bridge.connected, what="the bridge connected")
        yield harness
    finally:
        harness.bridge.stop()


def test_ten_thousand_births_cost_one_announcement_a_second_and_no_memory(bridge: Harness, broker: Broker) -> None:
    counters = bridge.bridge.counters
    retained = bridge.bridge.retained
    wait_until(lambda: counters.states_published > 0 and not retained.waiting, what="the first announcement")
    births(broker.port, 1000)  # warm up: paho's and the broker's buffers
    wait_until(lambda: counters.hub_births >= 1000 and not retained.waiting, timeout=30, what="the warm-up births")
    before_rss, before_published = rss_mb(), counters.states_published
    started = time.monotonic()
    births(broker.port, BIRTHS)
    wait_until(lambda: counters.hub_births >= BIRTHS + 1000, timeout=60, what="every birth seen")
    wait_until(lambda: not retained.waiting, timeout=10, what="the last coalesced announcement")
    elapsed = time.monotonic() - started
    growth = rss_mb() - before_rss
    one_burst = len(retained._retained) + len(retained.discovery.configs(retained.entities, {})
                                                if retained.discovery is not None else {})
    bursts = (counters.states_published - before_published) / one_burst
    assert bursts <= elapsed / BIRTH_INTERVAL + 1, f"{bursts:.1f} bursts in {elapsed:.1f} s"
    assert growth < 5, f"RSS grew {growth:.1f} MB over {BIRTHS} births"
    print(f"\n{BIRTHS} births in {elapsed:.1f} s: {bursts:.1f} re-announcements, RSS {growth:+.1f} MB")
