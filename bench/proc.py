"""A gateway in a process of its own, as systemd runs it: real CLI, mock pins, a real pty.

``GPIOZERO_PIN_FACTORY=mock`` gives the whole process gpiozero's ``MockFactory``;
serial devices point at a pseudo-terminal the benchmark holds. Until the MQTT
bridge exists on this tree, ``gateway run`` cannot start, and
``python -m bench.nomqtt`` runs the same ``Gateway`` without it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tty
from collections.abc import Mapping
from pathlib import Path

from bench.house import gateway_has_mqtt

ROOT = Path(__file__).resolve().parent.parent


def gateway_command(config: Path) -> list[str]:
    if gateway_has_mqtt():
        return [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    return [sys.executable, "-m", "bench.nomqtt", str(config)]


def start_gateway(config: Path, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    environment.update(
        {"PYTHONPATH": str(ROOT), "GPIOZERO_PIN_FACTORY": "mock", "GATEWAY_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    )
    environment.pop("JOURNAL_STREAM", None)
    environment.pop("NOTIFY_SOCKET", None)
    environment.update(env or {})
    with open(log, "wb") as out:
        return subprocess.Popen(
            gateway_command(config), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=environment
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


class Pty:
    """A real pseudo-terminal pair: the gateway opens ``path``; the benchmark writes to ``master``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
