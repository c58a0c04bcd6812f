"""A real `gateway run` subprocess with a real sd_notify socket, for the service tests."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests import toml_kit as toml
from tests.helpers import wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
[gateway]
id = "{gateway_id}"
state_dir = "state"

[mqtt]
host = "127.0.0.1"
port = {port}

[[devices]]
id = "hall_motion"
driver = "gpio.motion"
pin = 17

[[devices]]
id = "hall_light"
driver = "gpio.relay"
pin = 22
active_high = false
component = "light"
safe_state = false

[[devices]]
id = "heater"
driver = "gpio.relay"
pin = 23
safe_state = false

[[devices]]
id = "vent_damper"
driver = "gpio.relay"
pin = 24
safe_state = true
"""

RULES = ("version = 1\n"
         + toml.state_rule("light_off_when_still", "hall_motion", False, "turn_off", "hall_light")
         + toml.state_rule("light_on_motion", "hall_motion", True, "turn_on", "hall_light"))

SAFE_LEVELS = {"GPIO22": 1.0, "GPIO23": 0.0, "GPIO24": 1.0}
"""The electrical level each relay pin of CONFIG must be left at (active-low light: off = high)."""


def short_dir() -> Path:
    """A directory with a short path: AF_UNIX socket paths are limited to 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="gw", dir="/tmp"))


def service_config(directory: Path, gateway_id: str, port: int = 1883, rules: str = RULES) -> Path:
    return write_config(directory, CONFIG.format(gateway_id=gateway_id, port=port), rules)


@dataclass
class Datagram:
    at: float
    fields: dict[str, str]


@dataclass
class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd; records every message with its time."""

    address: str
    sock: socket.socket
    received: list[Datagram] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def bind(cls, address: str) -> NotifySocket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        sock.settimeout(0.1)
        notify = cls(address, sock)
        threading.Thread(target=notify._collect, daemon=True).start()
        return notify

    def _collect(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.received.append(Datagram(time.monotonic(), fields))

    def messages(self, key: str | None = None) -> list[Datagram]:
        with self._lock:
            return [d for d in self.received if key is None or key in d.fields]

    def wait_for(self, key: str, count: int = 1, timeout: float = 10.0) -> list[Datagram]:
        wait_until(lambda: len(self.messages(key)) >= count, timeout, f"{count} x {key} on the notify socket")
        return self.messages(key)

    def close(self) -> None:
        self.sock.close()


@dataclass
class GatewayProcess:
    """``python -m gateway run --simulate`` with NOTIFY_SOCKET (and optionally WATCHDOG_USEC) set."""

    directory: Path
    notify: NotifySocket
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def socket_path(self) -> Path:
        return self.directory / "control.sock"

    @property
    def pin_dump(self) -> Path:
        return self.directory / "pins.json"

    @classmethod
    def start(
        cls, directory: Path, config: Path, *, watchdog_usec: int | None = None, mqtt: bool = False,
        notify_address: str | None = None, launcher: list[str] | None = None, env: dict[str, str] | None = None,
    ) -> GatewayProcess:
        notify = NotifySocket.bind(notify_address or str(directory / "notify.sock"))
        hidden = {"WATCHDOG_USEC", "WATCHDOG_PID", "RUNTIME_DIRECTORY", "JOURNAL_STREAM"}
        full_env = {k: v for k, v in os.environ.items() if k not in hidden}
        full_env.update(NOTIFY_SOCKET=notify.address, PYTHONPATH=str(ROOT), **(env or {}))
        if watchdog_usec is not None:
            full_env["WATCHDOG_USEC"] = str(watchdog_usec)
        log_path = directory / "gateway.log"
        args = [
            sys.executable, *(launcher or []), "-m", "gateway", "run", "--simulate", "--config", str(config),
            "--state-dir", str(directory / "state"), "--socket", str(directory / "control.sock"),
            "--pin-dump", str(directory / "pins.json"),
        ]
        if not mqtt:
            args.append("--no-mqtt")
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        return cls(directory, notify, process, log_path)

    def wait_ready(self, timeout: float = 15.0) -> Datagram:
        try:
            return self.notify.wait_for("READY", timeout=timeout)[0]
        except AssertionError:
            raise AssertionError(f"no READY=1; gateway log:\n{self.log()}") from None

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then the exit status (killing it if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"gateway did not exit within {timeout}s of SIGTERM:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=full_env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def between(items: list[Datagram], start: float, end: float, where: Callable[[Datagram], bool]) -> list[Datagram]:
    return [d for d in items if start <= d.at <= end and where(d)]
