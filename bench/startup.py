"""Benchmark 6: start to ready.

The gateway is started as systemd would start a ``Type=notify`` service: with
``NOTIFY_SOCKET`` pointing at a datagram socket the benchmark holds. Ready is
the ``READY=1`` datagram; a tree without sd_notify support falls back to the
``gateway ... started`` log line (printed at the same point of the start).
Where the MQTT bridge exists, the time to the retained ``online`` status at a
subscriber is measured too, and the CPU the process has used when ``READY=1``
arrives (user + system, the interpreter's own start included): on a shared
machine the wall time moves with the load, the CPU much less. The baseline is
the time to start the interpreter and import the same libraries: the floor of
any Python gateway. The starts are then repeated as the shipped unit runs the gateway (``-OO`` with its
own bytecode cache, warmed by one start first: :func:`bench.proc.unit_environment`).

Whether the gateway's own modules have cached bytecode moves the start by about 0.1 s here (84 modules
compiled at every start): a device installed as docs/service.md says (``pip install``) has it, a
development tree under ``PYTHONDONTWRITEBYTECODE=1`` never does. The READY figure's note says which
case was measured (``python -m compileall -q gateway drivers rules core`` gives the installed one).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.figures import Figure, cpu_seconds, percentile
from bench.house import gateway_has_mqtt
from bench.idle import LIBRARIES
from bench.proc import ROOT, Pty, start_gateway, stop, unit_environment, warm_unit_bytecode
from tests.conftest import Broker, free_port
from tests.helpers import Subscriber
from tests.houses import house_config

BENCH = "6 start"
TIMEOUT = 20.0


Start = tuple[float | None, float | None, float | None, float | None]


def one_start(directory: Path, config: Path, broker: Broker | None, env: dict[str, str] | None = None) -> Start:
    """Seconds from spawn to (READY=1, the 'started' log line, 'online' at a subscriber), and the process's
    CPU seconds at READY=1."""
    notify_path = directory / "notify.sock"
    notify_path.unlink(missing_ok=True)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.setblocking(False)
    hub = Subscriber(broker.host, broker.port, "gateway/bench/status") if broker else None
    log = directory / "gateway.log"
    log.unlink(missing_ok=True)  # one log per start: the line from the previous start must not count
    ready = logged = online = cpu = None
    started = time.monotonic()
    process = start_gateway(config, log, {"NOTIFY_SOCKET": str(notify_path), **(env or {})})
    try:
        deadline = started + TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            now = time.monotonic() - started
            try:
                while True:
                    if b"READY=1" in notify.recv(4096).split(b"\n") and ready is None:
                        ready = now
                        cpu = cpu_seconds(process.pid)
            except BlockingIOError:
                pass
            if logged is None and b" started: " in log.read_bytes():
                logged = now
            if hub is not None and online is None and hub.on("gateway/bench/status")[-1:] == ["online"]:
                online = now
            if logged is not None and (ready is not None or now > logged + 2.0) and (hub is None or online):
                break
            time.sleep(0.001)
    finally:
        stop(process)
        notify.close()
        if hub is not None:
            hub.close()
    return ready, logged, online, cpu


def cached_bytecode(root: Path = ROOT) -> tuple[int, int]:
    """How many of the gateway's own modules have an up-to-date cached bytecode file, of how many."""
    sources = [path for package in ("core", "drivers", "gateway", "rules") for path in (root / package).rglob("*.py")]
    return sum(_bytecode_is_fresh(source) for source in sources), len(sources)


def _bytecode_is_fresh(source: Path) -> bool:
    """The cached file is the one the interpreter will use: its header names the source's mtime and size
    (PEP 552's timestamp form, which is what imports and compileall write by default)."""
    try:
        with open(importlib.util.cache_from_source(str(source)), "rb") as cached:
            header = cached.read(16)
        stat = source.stat()
    except OSError:
        return False
    return (len(header) == 16 and header[:4] == importlib.util.MAGIC_NUMBER and header[4:8] == bytes(4)
            and int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF)


def baseline_start() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", LIBRARIES], check=True)
    return time.monotonic() - started


def measure(quick: bool) -> list[Figure]:
    runs = 3 if quick else 7
    fresh, modules = cached_bytecode()
    bytecode = f"; cached bytecode for {fresh} of {modules} of the gateway's modules"
    readies: list[float] = []
    logs: list[float] = []
    onlines: list[float] = []
    cpus: list[float] = []
    unit: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = None
        if gateway_has_mqtt():
            broker = Broker(port=free_port(), directory=directory / "mosquitto")
            broker.start()
        pty = Pty()
        try:
            config = house_config(directory, mqtt_port=broker.port if broker else free_port(), serial_port=pty.path)
            for _ in range(runs):
                ready, logged, online, cpu = one_start(directory, config, broker)
                cpus += [cpu] if cpu is not None else []
                readies += [ready] if ready is not None else []
                logs += [logged] if logged is not None else []
                onlines += [online] if online is not None else []
            warm_unit_bytecode(config, directory / "warm.log")
            for _ in range(runs):
                ready = one_start(directory, config, broker, unit_environment())[0]
                unit += [ready] if ready is not None else []
        finally:
            pty.close()
            if broker is not None:
                broker.stop()
    base = [baseline_start() for _ in range(runs)]
    figures = []
    if readies:
        value = percentile(readies, 50)
        figures.append(Figure(BENCH, "start to READY=1 (median)", value, "s", "≤ 0.3 s", value <= 0.3,
                              f"{len(readies)} of {runs} starts, max {max(readies):.3f} s{bytecode}"))
    else:
        figures.append(Figure(BENCH, "start to READY=1", None, "", "≤ 0.3 s",
                              note="not yet measurable: no READY=1 on NOTIFY_SOCKET (service branch not on this tree)"))
    if unit:
        value = percentile(unit, 50)
        figures.append(Figure(BENCH, "start to READY=1 as the unit runs it (median)", value, "s", "≤ 0.3 s",
                              value <= 0.3, f"-OO, cached bytecode (systemd/gateway.service); max {max(unit):.3f} s"))
    if cpus:
        figures.append(Figure(BENCH, "start-up CPU at READY=1 (median)", percentile(cpus, 50), "s",
                              note=f"user + system of the process, spawn included; max {max(cpus):.2f} s"))
    if logs:
        value = percentile(logs, 50)
        figures.append(Figure(BENCH, "start to 'started' log line (median)", value, "s", "≤ 1 s", value <= 1.0,
                              f"max {max(logs):.3f} s" + ("" if broker else "; without the MQTT bridge")))
    if onlines:
        figures.append(Figure(BENCH, "start to 'online' at the hub (median)", percentile(onlines, 50), "s"))
    elif broker is None:
        figures.append(Figure(BENCH, "start to 'online' at the hub", None, "",
                              note="not yet measurable: no MQTT bridge on this tree"))
    figures.append(Figure(BENCH, "baseline: python + the same imports", percentile(base, 50), "s"))
    return figures
