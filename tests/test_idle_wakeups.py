"""An idle gateway sleeps: every periodic wake-up has a reason, and none polls (docs/performance.md, Idle)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.control import ControlServer
from gateway.service import Service


def service(watchdog: float) -> Service:
    gateway: Any = SimpleNamespace(bus=SimpleNamespace(wake=lambda: None))
    return Service(gateway, watchdog=watchdog)


def test_without_a_watchdog_the_dispatcher_wakes_only_every_five_seconds() -> None:
    """Signals, the status socket and the web page wake the dispatcher themselves; timers bound its wait."""
    assert service(watchdog=0).tick == 5.0


@pytest.mark.parametrize(("watchdog", "tick"), [(30.0, 5.0), (8.0, 2.0), (2.0, 0.5)])
def test_with_a_watchdog_the_dispatcher_wakes_at_least_four_times_per_watchdog_interval(
    watchdog: float, tick: float,
) -> None:
    assert service(watchdog=watchdog).tick == tick


def test_the_status_socket_thread_sleeps_until_a_client_connects_and_stop_still_ends_it(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "control.sock", lambda: None)
    server.start()
    thread = server._thread
    try:
        assert server._sock is not None and server._sock.gettimeout() is None  # a blocking accept(): no 1 s poll
    finally:
        server.stop()
    assert thread is not None and not thread.is_alive()
