"""Shared fixtures: a real Mosquitto on a loopback port, one per session (``broker``) or one of the
test's own to stop, kill or reconfigure (``private_broker``).

Mock pins and virtual time are not fixtures: tests build them where they need them
(``drivers.mockpins.sim_pin_factory()``, ``core.clock.VirtualClock``; see tests/drivers_kit.py
and tests/rules_kit.py)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Broker:
    """A real Mosquitto on a loopback port; ``stop()``/``start()`` simulate an outage."""

    port: int
    directory: Path
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def config_path(self) -> Path:
        return self.directory / "mosquitto.conf"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.directory, "mosquitto") if _has_user("mosquitto") else None
        self.config_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"persistence_location {self.directory}/\n"
            "max_queued_messages 100000\n"
            f"{self.extra_config}\n"
        )
        with open(self.directory / "mosquitto.log", "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config_path)], stdout=subprocess.DEVNULL, stderr=log
            )
        wait_for_port(self.port)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return os.geteuid() == 0


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.fail("mosquitto is not installed: run .ci/run (it installs it) or apt-get install mosquitto")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session; tests use distinct gateway ids so topics never collide."""
    broker = Broker(port=free_port(), directory=tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that stop, kill or reconfigure it."""
    broker = Broker(port=free_port(), directory=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()
