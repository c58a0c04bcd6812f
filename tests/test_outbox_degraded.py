"""Local control never depends on telemetry storage.

A corrupt outbox file, a read-only state directory or a full disk used to make the gateway exit 1 at
start, taking the rules, the heating and the alarm down with it. Now a corrupt outbox is moved aside
and replaced; an outbox that cannot be written at all leaves forwarding *degraded* (live publishing,
kept in memory only), said loudly in the log, in ``gateway status`` and in the MQTT health, while
the rules run on. A real Mosquitto, the real application and gpiozero's mock pins; pytest-mock only
for the full disk, which no test machine can be made to have.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pytest_mock import MockerFixture

from gateway.app import Gateway
from gateway.config import Config, load_config
from gateway.control import format_status
from gateway.service import Service
from tests.conftest import Broker
from tests.mqtt_support import bridge_of, recorder, running, wait_until
from tests.service_support import service_config, short_dir

MOTION_PIN = 17
LIGHT_PIN = 22
"""The hall light's relay, active low: the pin is low while the light is on."""
GARBAGE = b"this was an outbox until the SD card lost a sector\n" * 200


@pytest.fixture
def house() -> Iterator[Path]:
    """A directory any user can enter (the read-only test runs the gateway as ``nobody``)."""
    directory = short_dir()
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _config(directory: Path, gateway_id: str, port: int) -> Config:
    return load_config(service_config(directory, gateway_id, port))


def _light_follows_motion(gateway: Gateway, pins: MockFactory) -> bool:
    """Motion → the rule ``light_on_motion`` switches the hall light on (its pin goes low)."""
    pins.pin(MOTION_PIN).drive_high()
    wait_until(lambda: not pins.pin(LIGHT_PIN).state, what="the hall light on")
    return True


def _status_text(gateway: Gateway) -> str:
    return format_status(Service(gateway, socket_path=None).snapshot())


def test_a_corrupt_outbox_is_moved_aside_and_events_still_reach_the_broker(broker: Broker, house: Path) -> None:
    config = _config(house, "outbox-corrupt", broker.port)
    state = config.gateway.state_dir
    state.mkdir(parents=True)
    (state / "outbox.sqlite3").write_bytes(GARBAGE)
    pins = MockFactory()
    with recorder(broker.host, broker.port, "gateway/outbox-corrupt/event/#") as hub:
        with running(Gateway(config, pin_factory=pins)) as gateway:
            followed = _light_follows_motion(gateway, pins)
            events = hub.wait_for("gateway/outbox-corrupt/event/hall_light")
            health = bridge_of(gateway).health()
        pins.reset()
    moved = list(state.glob("outbox.sqlite3.corrupt-*"))
    assert followed and events
    assert [p.read_bytes() for p in moved if not p.name.endswith(("-wal", "-shm"))] == [GARBAGE]
    assert health["forwarding"] == "ok"
    with sqlite3.connect(state / "outbox.sqlite3") as db:  # the new outbox is a real one
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize("error", [sqlite3.OperationalError("database or disk is full"),
                                   OSError(28, "No space left on device: the disk is full")])
def test_a_full_disk_at_start_leaves_forwarding_degraded_and_the_rules_running(
    broker: Broker, house: Path, mocker: MockerFixture, error: Exception
) -> None:
    real_connect = sqlite3.connect

    def full_disk(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        if str(database) != ":memory:":
            raise error
        connection: sqlite3.Connection = real_connect(database, *args, **kwargs)
        return connection

    mocker.patch("gateway.mqtt.outbox.sqlite3.connect", side_effect=full_disk)
    config = _config(house, "outbox-full", broker.port)
    pins = MockFactory()
    with recorder(broker.host, broker.port, "gateway/outbox-full/event/#") as hub:
        with running(Gateway(config, pin_factory=pins)) as gateway:
            followed = _light_follows_motion(gateway, pins)
            events = hub.wait_for("gateway/outbox-full/event/hall_light")
            health = bridge_of(gateway).health()
            status = _status_text(gateway)
        pins.reset()
    assert followed and events
    assert health["forwarding"] == "degraded"
    assert "disk is full" in health["forwarding_reason"]
    assert "forwarding: DEGRADED" in status and "disk is full" in status
    assert not list(config.gateway.state_dir.glob("*.corrupt-*"))  # a full disk is not a corrupt file


@pytest.mark.parametrize("where", ["state_dir", "its parent"])
def test_a_read_only_state_directory_leaves_forwarding_degraded_and_the_rules_running(
    broker: Broker, house: Path, where: str
) -> None:
    """Owned by root, mode 0555, the gateway running as nobody: the state directory exists and is read-only,
    or it does not exist and cannot be created (its parent is read-only)."""
    config = _config(house, "outbox-readonly", broker.port)
    read_only = config.gateway.state_dir if where == "state_dir" else config.gateway.state_dir.parent
    read_only.mkdir(exist_ok=True)
    read_only.chmod(0o555)

    def run_as_nobody() -> dict[str, Any]:
        pins = MockFactory()
        with running(Gateway(config, pin_factory=pins)) as gateway:
            followed = _light_follows_motion(gateway, pins)
            health = bridge_of(gateway).health()
            status = _status_text(gateway)
        return {"followed": followed, "health": health, "status": status}

    with recorder(broker.host, broker.port, "gateway/outbox-readonly/event/#") as hub:
        result = _in_child_as_nobody(run_as_nobody)
        events = hub.wait_for("gateway/outbox-readonly/event/hall_light")
    assert "error" not in result, result.get("error")
    assert result["followed"] and events
    assert result["health"]["forwarding"] == "degraded"
    reason = result["health"]["forwarding_reason"]
    assert str(config.gateway.state_dir) in reason and "Permission denied" in reason
    assert "forwarding: DEGRADED" in result["status"]
    assert sorted(os.listdir(read_only)) == ([] if where == "state_dir" else ["config.toml", "rules.d"])


def _in_child_as_nobody(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``call()`` in a forked child running as ``nobody`` (root bypasses file permissions); its JSON result,
    or ``{"error": ...}`` with what it raised."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            logging.getLogger().handlers.clear()  # pytest's capture streams are not the child's to write
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                answer = call()
            except BaseException as exc:  # reported to the parent, which fails the test
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(answer, default=str).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data or b'{"error": "the child said nothing"}'))
