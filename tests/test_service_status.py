"""`gateway status`: a real status socket, the gateway as a real subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.control import ControlError, ControlServer, request
from tests.service_support import GatewayProcess, run_cli, service_config, short_dir


@pytest.fixture(scope="module")
def running() -> Iterator[GatewayProcess]:
    directory = short_dir()
    gateway = GatewayProcess.start(directory, service_config(directory, "svc-status"))
    try:
        gateway.wait_ready()
        yield gateway
        assert gateway.stop() == 0
    finally:
        gateway.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_status_lists_every_device_with_its_health(running: GatewayProcess) -> None:
    result = run_cli("status", "--socket", str(running.socket_path))
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:3]) for line in result.stdout.splitlines()}
    assert ("hall_motion", "gpio.motion", "running") in rows, result.stdout
    for relay in ("hall_light", "heater", "vent_damper"):
        assert (relay, "gpio.relay", "running") in rows, result.stdout


def test_status_shows_the_last_value_of_every_entity(running: GatewayProcess) -> None:
    status = request(running.socket_path, {"cmd": "status"})["status"]
    values = {entity["id"]: entity["value"] for entity in status["entities"]}
    assert values == {"hall_motion": False, "hall_light": False, "heater": False, "vent_damper": True}


def test_status_says_which_claim_drives_each_output(running: GatewayProcess) -> None:
    result = run_cli("status", "--socket", str(running.socket_path))
    rows = {line.split()[0]: line for line in result.stdout.split("outputs (")[1].splitlines()[1:5]}
    assert "light_off_when_still (rules) False" in rows["hall_light"], result.stdout
    assert "no claim: default False" in rows["heater"], result.stdout


def test_status_shows_recent_rule_firings(running: GatewayProcess) -> None:
    result = run_cli("status", "--socket", str(running.socket_path))
    assert "light_off_when_still: hall_light -> False" in result.stdout


def test_status_says_whether_the_clock_is_trusted_and_how_many_timers_wait(running: GatewayProcess) -> None:
    result = run_cli("status", "--socket", str(running.socket_path))
    assert re.search(r"rules: \d+ loaded, \d+ timers pending; (clock synchronised|CLOCK NOT SYNCHRONISED)",
                     result.stdout), result.stdout


def test_status_says_when_mqtt_is_off_and_how_deep_the_bus_is(running: GatewayProcess) -> None:
    result = run_cli("status", "--socket", str(running.socket_path))
    assert "broker: MQTT disabled" in result.stdout
    assert "bus: 0 queued" in result.stdout


def test_status_json_is_the_raw_snapshot(running: GatewayProcess) -> None:
    result = run_cli("status", "--socket", str(running.socket_path), "--json")
    snapshot = json.loads(result.stdout)
    assert snapshot["gateway"] == "svc-status"
    assert snapshot["rules"] == 2
    assert snapshot["mqtt"] == {"enabled": False}


def test_the_status_socket_is_for_owner_and_group_only(running: GatewayProcess) -> None:
    assert stat.S_IMODE(running.socket_path.stat().st_mode) == 0o660


def test_status_exits_3_with_a_clear_message_when_the_service_is_not_running(workdir: Path) -> None:
    result = run_cli("status", "--socket", str(workdir / "control.sock"))
    assert result.returncode == 3
    assert "the gateway is not running" in result.stderr


def test_status_looks_in_the_runtime_directory_without_needing_a_config(running: GatewayProcess) -> None:
    result = run_cli("status", "--config", "/nonexistent.toml", env={"RUNTIME_DIRECTORY": str(running.directory)})
    assert result.returncode == 0, result.stderr


def test_status_of_a_simulated_run_looks_in_its_own_state_directory(running: GatewayProcess) -> None:
    config = running.directory / "config.toml"
    result = run_cli("status", "--config", str(config), "--simulate", env={"RUNTIME_DIRECTORY": ""})
    assert result.returncode == 3
    assert "simulate/control.sock" in result.stderr


@pytest.mark.slow
def test_a_hung_dispatcher_is_reported_as_such(workdir: Path) -> None:
    gateway = GatewayProcess.start(workdir, service_config(workdir, "svc-hung"))
    try:
        gateway.wait_ready()
        assert request(gateway.socket_path, {"cmd": "hang", "seconds": 5})["ok"]
        reply = request(gateway.socket_path, {"cmd": "status"})
        assert not reply["ok"]
        assert "dispatcher did not answer within 3 s" in reply["error"]
        assert gateway.stop(timeout=10) == 0
    finally:
        gateway.close()


def test_status_exits_1_and_says_why_when_the_service_does_not_answer(workdir: Path) -> None:
    path = workdir / "control.sock"
    server = ControlServer(path, lambda: None, answer_timeout=0.1)  # no dispatcher ever answers
    server.start()
    try:
        result = run_cli("status", "--socket", str(path))
    finally:
        server.stop()
    assert result.returncode == 1
    assert "its dispatcher did not answer" in result.stderr


def test_a_second_server_refuses_a_socket_a_live_gateway_answers_on(workdir: Path) -> None:
    path = workdir / "control.sock"
    first = ControlServer(path, lambda: None)
    first.start()
    try:
        with pytest.raises(OSError, match="another gateway is already running"):
            ControlServer(path, lambda: None).start()
    finally:
        first.stop()
    assert not path.exists()


def test_a_stale_socket_left_by_a_killed_gateway_is_replaced(workdir: Path) -> None:
    path = workdir / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what SIGKILL leaves behind
    server = ControlServer(path, lambda: None)
    server.start()
    try:
        assert path.exists()
    finally:
        server.stop()


def test_status_explains_a_permission_problem(workdir: Path) -> None:
    """Run as an unprivileged user (root bypasses file permissions: as root, a forked child drops to nobody)."""
    path = workdir / "control.sock"
    server = ControlServer(path, lambda: None)
    server.start()
    try:
        path.chmod(0)
        if os.geteuid() != 0:
            result = run_cli("status", "--socket", str(path))
            assert result.returncode == 1
            assert "permission denied" in result.stderr
            return
        assert "permission denied" in _as_nobody(lambda: _request_error(path))
    finally:
        server.stop()


def _request_error(path: Path) -> str:
    try:
        request(path, {"cmd": "status"})
    except ControlError as exc:
        return str(exc)
    return "no error"


def _as_nobody(call: Callable[[], str]) -> str:
    """``call()`` in a forked child running as ``nobody``; what it returned."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, call().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(pid, 0)
    return answer
