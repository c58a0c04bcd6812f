"""Benchmark 5: steady RSS and idle CPU of a gateway process with real drivers and no input.

The process is ``gateway run`` as the shipped unit runs it (``-OO``, cached bytecode: see
:mod:`bench.proc`; its RSS as ``python -m gateway`` is given too) with a motion input and a
relay on mock pins and a serial sensor on a real pseudo-terminal that never
speaks, connected to a local Mosquitto when the MQTT bridge exists. After it
settles, CPU is measured over the window (60 s, 10 s with ``--quick``), with the
wake-ups of all its threads (voluntary context switches), which show a polling
loop even when its CPU is small. The baseline is an idle interpreter that has
imported the same libraries: the floor for RSS in Python.
"""

from __future__ import annotations

import glob
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.figures import CpuMeter, Figure, rss_bytes
from bench.house import gateway_has_mqtt
from bench.proc import Pty, start_gateway, stop, unit_environment, warm_unit_bytecode
from tests.conftest import Broker, free_port
from tests.helpers import wait_until
from tests.houses import house_config

BENCH = "5 idle"
SETTLE = 3.0
"""Seconds after the start before anything is measured."""
LIBRARIES = "import paho.mqtt.client, serial, gpiozero, pydantic, sqlite3, tomllib"


def wakeups(pid: int) -> int:
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def threads(pid: int) -> int:
    return len(glob.glob(f"/proc/{pid}/task/*"))


def observe(pid: int, window: float) -> tuple[float, float, float]:
    """(CPU % of one core, wake-ups/s, RSS MB) over ``window`` seconds."""
    meter = CpuMeter(pid, exact=True)
    woke = wakeups(pid)
    meter.start()
    time.sleep(window)
    percent, _ = meter.stop()
    rate = (wakeups(pid) - woke) / window
    return percent, rate, rss_bytes(pid) / 1e6


def measure(quick: bool) -> list[Figure]:
    """The gateway as the unit runs it (the goals apply to it), then as ``python -m gateway`` (RSS only)."""
    window = 10.0 if quick else 60.0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = None
        if gateway_has_mqtt():
            broker = Broker(port=free_port(), directory=directory / "mosquitto")
            broker.start()
        pty = Pty()
        config = house_config(directory, mqtt_port=broker.port if broker else free_port(), serial_port=pty.path)
        how = "gateway run, mock pins, silent pty"
        how += ", local Mosquitto" if broker else ", NO MQTT bridge on this tree"
        try:
            warm_unit_bytecode(config, directory / "warm.log")
            percent, rate, rss, count = observe_gateway(config, directory / "unit.log", unit_environment(), window)
            figures += [
                Figure(BENCH, "RSS steady, as the unit runs it", rss, "MB", "≤ 40 MB", rss <= 40,
                       how + "; -OO, cached bytecode (systemd/gateway.service)"),
                Figure(BENCH, f"idle CPU over {window:.0f} s", percent, "% core", "≤ 0.05 %", percent <= 0.05,
                       f"{count} threads"),
                Figure(BENCH, "idle wake-ups", rate, "/s", note="voluntary context switches, all threads"),
            ]
            _, _, rss, _ = observe_gateway(config, directory / "plain.log", {}, 0.0)
            figures.append(Figure(BENCH, "RSS steady, as python -m gateway", rss, "MB", note="no -OO"))
        finally:
            pty.close()
            if broker is not None:
                broker.stop()
    figures += baseline(window)
    return figures


def observe_gateway(config: Path, log: Path, env: dict[str, str], window: float) -> tuple[float, float, float, int]:
    """(CPU %, wake-ups/s, RSS MB, threads) of one gateway started with ``env``, settled, over ``window``."""
    process = start_gateway(config, log, env)
    try:
        wait_until(lambda: b"started" in log.read_bytes() or process.poll() is not None, 20, "gateway start")
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
        time.sleep(SETTLE)
        percent, rate, rss = observe(process.pid, window) if window else (0.0, 0.0, rss_bytes(process.pid) / 1e6)
        return percent, rate, rss, threads(process.pid)
    finally:
        stop(process)


def baseline(window: float) -> list[Figure]:
    process = subprocess.Popen([sys.executable, "-c", f"{LIBRARIES}; import time; time.sleep(3600)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and rss_bytes(process.pid) < 15e6:
            time.sleep(0.1)
        time.sleep(2.0)
        percent, _, rss = observe(process.pid, min(window, 10.0))
    finally:
        process.kill()
        process.wait()
    return [
        Figure(BENCH, "baseline RSS: python + the same libraries", rss, "MB", note="the floor in this interpreter"),
        Figure(BENCH, "baseline idle CPU", percent, "% core"),
    ]


