"""sd_notify with a real AF_UNIX datagram socket, and the gateway run as a real subprocess.

The socket stands in for systemd: the tests read exactly the datagrams
systemd would (READY=1, WATCHDOG=1, STATUS=, RELOADING=1, STOPPING=1).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway.control import request
from gateway.sdnotify import Notifier, socket_address, watchdog_interval
from tests.service_support import (
    SAFE_LEVELS,
    GatewayProcess,
    NotifySocket,
    between,
    gaps,
    service_config,
    short_dir,
)

WATCHDOG_USEC = 400_000
"""0.4 s: the gateway must ping every 0.2 s; small, so the tests are quick."""


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def stopped() -> Iterator[tuple[GatewayProcess, int, float]]:
    """One gateway run to the end: started, watched for a while, then SIGTERM; (process, exit status, seconds)."""
    directory = short_dir()
    gateway = GatewayProcess.start(
        directory, service_config(directory, "svc-stop"), watchdog_usec=WATCHDOG_USEC,
        env={"JOURNAL_STREAM": "8:12345"},  # as under systemd with StandardOutput=journal
    )
    try:
        gateway.wait_ready()
        gateway.notify.wait_for("WATCHDOG", count=5)
        sent = time.monotonic()
        status = gateway.stop()
        yield gateway, status, time.monotonic() - sent
    finally:
        gateway.close()
        shutil.rmtree(directory, ignore_errors=True)


# -- the protocol itself ---------------------------------------------------------------


def test_a_path_socket_receives_the_message(workdir: Path) -> None:
    listener = NotifySocket.bind(str(workdir / "n.sock"))
    try:
        with closing(Notifier({"NOTIFY_SOCKET": listener.address})) as notifier:
            assert notifier.ready("all good")
        assert listener.wait_for("READY")[0].fields == {"READY": "1", "STATUS": "all good"}
    finally:
        listener.close()


def test_an_abstract_socket_is_written_with_a_leading_at_sign() -> None:
    name = f"@gateway-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifySocket.bind(name)
    try:
        with closing(Notifier({"NOTIFY_SOCKET": name})) as notifier:
            assert notifier.stopping()
        assert listener.wait_for("STOPPING")[0].fields == {"STOPPING": "1"}
    finally:
        listener.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.watchdog()


def test_a_vanished_systemd_socket_does_not_raise(workdir: Path) -> None:
    with closing(Notifier({"NOTIFY_SOCKET": str(workdir / "gone.sock")})) as notifier:
        assert not notifier.watchdog()


def test_reloading_carries_the_monotonic_clock_in_microseconds(workdir: Path) -> None:
    listener = NotifySocket.bind(str(workdir / "n.sock"))
    try:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        with closing(Notifier({"NOTIFY_SOCKET": listener.address})) as notifier:
            notifier.reloading()
        fields = listener.wait_for("RELOADING")[0].fields
        assert fields["RELOADING"] == "1"
        assert before <= int(fields["MONOTONIC_USEC"]) <= before + 5_000_000
    finally:
        listener.close()


def test_status_is_one_line() -> None:
    assert socket_address("@x") == "\0x"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + f"gw-status-{os.getpid()}")
        with closing(Notifier({"NOTIFY_SOCKET": f"@gw-status-{os.getpid()}"})) as notifier:
            notifier.status("two\nlines")
        assert sock.recv(100) == b"STATUS=two lines"
    finally:
        sock.close()


def test_watchdog_interval_comes_from_watchdog_usec() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({}) is None


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0


# -- the gateway under a stand-in systemd ----------------------------------------------


def test_ready_arrives_after_start_with_a_status_line(stopped: tuple[GatewayProcess, int, float]) -> None:
    gateway, _, _ = stopped
    ready = gateway.notify.messages("READY")
    assert len(ready) == 1
    assert ready[0].fields["STATUS"].startswith("4/4 devices running, 2 rules")
    assert "started: 4 of 4 devices running, 2 rules" in gateway.log()


def test_under_journald_every_log_line_carries_its_priority(stopped: tuple[GatewayProcess, int, float]) -> None:
    gateway, _, _ = stopped
    lines = gateway.log().splitlines()
    assert "<6>gateway.app: gateway svc-stop started: 4 of 4 devices running, 2 rules (simulated hardware)" in lines
    assert all(line[:3] in {"<3>", "<4>", "<6>", "<7>"} for line in lines), lines


def test_watchdog_pings_arrive_at_half_the_watchdog_interval(stopped: tuple[GatewayProcess, int, float]) -> None:
    gateway, _, _ = stopped
    stopping = gateway.notify.messages("STOPPING")[0].at
    pings = [d.at for d in gateway.notify.messages("WATCHDOG") if d.at < stopping]
    assert len(pings) >= 5
    interval = WATCHDOG_USEC / 1e6
    for gap in gaps(pings):
        assert interval / 2 - 0.01 <= gap < interval, f"ping gaps {gaps(pings)}"


def test_sigterm_sends_stopping_and_exits_0_within_2_s(stopped: tuple[GatewayProcess, int, float]) -> None:
    gateway, status, seconds = stopped
    assert status == 0, gateway.log()
    assert seconds < 2.0
    assert gateway.notify.messages("STOPPING")
    assert "actuators in their safe state" in gateway.log()


def test_sigterm_leaves_every_actuator_pin_at_its_safe_level(stopped: tuple[GatewayProcess, int, float]) -> None:
    gateway, _, _ = stopped
    pins = json.loads(gateway.pin_dump.read_text())
    for name, level in SAFE_LEVELS.items():
        assert pins[name]["released"] == level, f"{name}: {pins[name]}"
        assert pins[name]["function"] == "input", f"{name} was not released"


def test_watchdog_pings_stop_while_the_dispatcher_is_blocked(workdir: Path) -> None:
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-hang"), watchdog_usec=WATCHDOG_USEC)
    try:
        gateway.wait_ready()
        gateway.notify.wait_for("WATCHDOG", count=3)
        assert request(gateway.socket_path, {"cmd": "hang", "seconds": 1.5})["ok"]
        blocked = time.monotonic()
        resumed = len(gateway.notify.messages("WATCHDOG")) + 3
        gateway.notify.wait_for("WATCHDOG", count=resumed, timeout=10)
        pings = gateway.notify.messages("WATCHDOG")
        assert between(pings, blocked + 0.2, blocked + 1.4, lambda d: True) == []
        assert max(gaps([d.at for d in pings])) >= 1.3
        assert gateway.stop() == 0
    finally:
        gateway.close()


def test_sighup_reloads_rules_between_reloading_and_ready(workdir: Path) -> None:
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-hup"))
    try:
        gateway.wait_ready()
        (workdir / "rules.d" / "more.toml").write_text(
            'version = 1\n[[rules]]\nid = "heat_on_motion"\n'
            '[[rules.triggers]]\ntype = "state"\nentity = "hall_motion"\nto = true\n'
            '[[rules.actions]]\ntype = "turn_on"\nentity = "heater"\n'
        )
        gateway.signal(signal.SIGHUP)
        ready = gateway.notify.wait_for("READY", count=2)
        reloading = gateway.notify.wait_for("RELOADING")[0]
        assert reloading.at <= ready[1].at
        assert "MONOTONIC_USEC" in reloading.fields
        assert ready[1].fields["STATUS"].startswith("4/4 devices running, 3 rules")
        assert gateway.stop() == 0
    finally:
        gateway.close()


def test_a_bad_rule_file_on_sighup_keeps_the_old_rules_and_says_why(workdir: Path) -> None:
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-badhup"))
    try:
        gateway.wait_ready()
        (workdir / "rules.d" / "bad.toml").write_text(
            'version = 1\n[[rules]]\nid = "oops"\n[[rules.triggers]]\ntype = "state"\nentity = "no_such"\n'
            '[[rules.actions]]\ntype = "turn_on"\nentity = "heater"\n'
        )
        gateway.signal(signal.SIGHUP)
        ready = gateway.notify.wait_for("READY", count=2)[1]
        assert "2 rules" in ready.fields["STATUS"]
        assert "reload FAILED" in ready.fields["STATUS"]
        assert gateway.stop() == 0
        assert "unknown entity 'no_such'" in gateway.log()
    finally:
        gateway.close()


def test_a_storm_of_signals_neither_wedges_nor_kills_the_gateway(workdir: Path) -> None:
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-storm"), watchdog_usec=WATCHDOG_USEC)
    try:
        gateway.wait_ready()
        for _ in range(200):
            gateway.signal(signal.SIGHUP)
        gateway.notify.wait_for("READY", count=2)
        reloads = len(gateway.notify.messages("RELOADING"))
        assert 1 <= reloads <= 200  # SIGHUPs that arrive during a reload coalesce into the next one
        assert gateway.stop(timeout=2.0) == 0
        assert "Traceback" not in gateway.log()
    finally:
        gateway.close()
