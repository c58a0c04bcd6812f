"""What every fault-injection test reports: sent, received, lost, duplicated (and its own extras).

Each test builds a :class:`Tally`, asserts on it, and calls :meth:`Tally.report`,
which prints one ``FAULT name: sent=... received=... lost=... duplicated=...``
line (shown with ``pytest -s`` or ``-rA``) and, when ``FAULT_REPORT`` names a
file, appends the same figures to it as one JSON line; docs/reliability.md is
written from that file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tty
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "gateway.service"


def unit_assignments() -> dict[str, str]:
    """The variables the shipped unit's ``Environment=`` lines set, as systemd reads them (quoted words)."""
    assignments: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for word in shlex.split(line.removeprefix("Environment=")):
                name, _, value = word.partition("=")
                assignments[name] = value
    return assignments

Key = int | str
"""What a fault test counts: a sequence number, an event id or a name."""


@dataclass
class Tally:
    name: str
    sent: set[Key] = field(default_factory=set)
    received: list[Key] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def send(self, key: Key) -> None:
        self.sent.add(key)

    def receive(self, keys: Iterable[Key]) -> None:
        self.received.extend(keys)

    @property
    def lost(self) -> set[Key]:
        return self.sent - set(self.received)

    @property
    def duplicated(self) -> int:
        return len(self.received) - len(set(self.received))

    def figures(self) -> dict[str, Any]:
        return {
            "fault": self.name,
            "sent": len(self.sent),
            "received": len(set(self.received) & self.sent),
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            **self.extra,
        }

    def report(self) -> dict[str, Any]:
        figures = self.figures()
        print("FAULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
        path = os.environ.get("FAULT_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(figures) + "\n")
        return figures

    def assert_nothing_lost(self) -> None:
        lost = sorted(self.lost, key=str)
        assert not lost, f"{self.name}: {len(lost)} lost, first {lost[:10]}"


class Pty:
    """A real pseudo-terminal pair: the gateway opens ``path``; the test writes to ``master``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def start_gateway(config: Path, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``gateway run --config CONFIG`` in a process of its own, on gpiozero mock pins, logging to ``log``."""
    environment = dict(os.environ)
    environment.update(
        {"PYTHONPATH": str(ROOT), "GPIOZERO_PIN_FACTORY": "mock", "GATEWAY_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
    )
    for inherited in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        environment.pop(inherited, None)
    runtime = config.parent / "run"  # the status socket, where systemd's RuntimeDirectory would be
    runtime.mkdir(exist_ok=True)
    environment["RUNTIME_DIRECTORY"] = str(runtime)
    environment.update(env or {})
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=environment,
        )


def stop_gateway(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
