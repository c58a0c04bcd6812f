"""A gateway in a process of its own, as systemd runs it: real CLI, mock pins, a real pty.

``GPIOZERO_PIN_FACTORY=mock`` gives the whole process gpiozero's ``MockFactory``;
serial devices point at a pseudo-terminal the benchmark holds. The pieces are
shared with the fault-injection tests (``tests/faults_support.py``).

:func:`unit_environment` gives the interpreter settings of ``systemd/gateway.service`` (``-OO`` with the
bytecode cached in a directory of its own): how a device runs the gateway. The first start in that
environment compiles the cache (a second of CPU and several MB more): :func:`warm_unit_bytecode` does it
before anything is measured.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.figures import status_kb
from tests.faults_support import ROOT, Pty, start_gateway, unit_assignments
from tests.faults_support import stop_gateway as stop
from tests.helpers import wait_until

__all__ = ["ROOT", "Pty", "peak_rss_mb", "start_gateway", "stop", "unit_environment", "warm_unit_bytecode"]

BENCH_PYCACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gateway-bench" / "pycache"
"""Where the benchmarks keep the unit's optimised bytecode (the unit's own directory is the device's)."""


def unit_environment() -> dict[str, str]:
    """The ``Environment=`` of the shipped unit, its bytecode cache moved to :data:`BENCH_PYCACHE`."""
    environment = {"PYTHONDONTWRITEBYTECODE": ""}  # this machine sets it; the unit's cache needs writing
    environment.update(unit_assignments())
    if "PYTHONPYCACHEPREFIX" in environment:
        environment["PYTHONPYCACHEPREFIX"] = str(BENCH_PYCACHE)
    return environment


def warm_unit_bytecode(config: Path, log: Path) -> None:
    """Start and stop the gateway once in :func:`unit_environment`, which writes the bytecode it reads."""
    process = start_gateway(config, log, unit_environment())
    try:
        wait_until(lambda: b" started" in log.read_bytes() or process.poll() is not None, 60, "gateway start")
    finally:
        stop(process)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (``VmHWM``), in MB (10^6 bytes); NaN once it is gone."""
    kb = status_kb(pid, "VmHWM")
    return kb * 1024 / 1e6 if kb else float("nan")
