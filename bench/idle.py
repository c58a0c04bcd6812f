"""Benchmark 5: steady RSS and idle CPU of a gateway process with real drivers and no input.

The process is ``gateway run`` (see :mod:`bench.proc`) with a motion input and a
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
from bench.proc import Pty, start_gateway, stop
from tests.conftest import Broker, free_port
from tests.helpers import wait_until
from tests.houses import house_config

BENCH = "5 idle"
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
    meter = CpuMeter(pid)
    woke = wakeups(pid)
    meter.start()
    time.sleep(window)
    percent, _ = meter.stop()
    rate = (wakeups(pid) - woke) / window
    return percent, rate, rss_bytes(pid) / 1e6


def measure(quick: bool) -> list[Figure]:
    window = 10.0 if quick else 60.0
    settle = 3.0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = None
        if gateway_has_mqtt():
            broker = Broker(port=free_port(), directory=directory / "mosquitto")
            broker.start()
        pty = Pty()
        config = house_config(directory, mqtt_port=broker.port if broker else free_port(), serial_port=pty.path)
        log = directory / "gateway.log"
        process = start_gateway(config, log)
        try:
            wait_until(lambda: b"started" in log.read_bytes() or process.poll() is not None, 20, "gateway start")
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
            time.sleep(settle)
            percent, rate, rss = observe(process.pid, window)
            count = threads(process.pid)
        finally:
            stop(process)
            pty.close()
            if broker is not None:
                broker.stop()
        how = "gateway run, mock pins, silent pty"
        how += ", local Mosquitto" if broker else ", NO MQTT bridge on this tree"
        figures += [
            Figure(BENCH, "RSS steady", rss, "MB", "≤ 40 MB", rss <= 40, how),
            Figure(BENCH, f"idle CPU over {window:.0f} s", percent, "% core", "≤ 0.05 %", percent <= 0.05,
                   f"{count} threads"),
            Figure(BENCH, "idle wake-ups", rate, "/s", note="voluntary context switches, all threads"),
        ]
    figures += baseline(window)
    return figures


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


