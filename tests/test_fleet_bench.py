"""The reconnect-storm bench's harness (bench/fleet.py) works, on a fleet small enough for CI.

The bench itself (200 gateways, four scenarios) is run by hand: ``python -m bench.fleet``."""

from __future__ import annotations

import pytest

from bench.fleet import LIMITED, run

pytestmark = pytest.mark.slow


def test_a_small_fleet_reconnects_after_a_broker_restart_and_drains_every_queued_event() -> None:
    result = run(10, jitter=True, drain_rate=LIMITED, backlog=30, outage=2.0, timeout=60)
    assert result.acked >= 10 * 30
    assert 0 < result.reconnect_all_s < result.drain_all_s
    assert result.peak_connects_per_s >= 10  # at least one connection in some 100 ms bin
    assert result.peak_messages_per_s > 0
