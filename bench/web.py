"""Benchmark 9: what the web page and the event history cost (issue 18).

* Idle CPU and RSS of ``gateway run`` (the bench house on mock pins, a local Mosquitto) three times:
  the page off; the page on with no client; the page on with one client watching the live stream.
  Goal: the page adds ≤ 0.02 % of a core and ≤ 8 MB.
* The history's bytes written per hour for the shipped house (config.toml, rules.d): the event rate of
  ``gateway run --simulate`` of it, then an hour of that rate written through :class:`gateway.history.History`
  at its default ``flush_s``, counting the bytes SQLite hands to the kernel (``wchar`` of /proc/self/io).
"""

from __future__ import annotations

import http.client
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.figures import Figure
from bench.house import gateway_has_mqtt
from bench.idle import observe
from bench.proc import ROOT, start_gateway, stop
from core.clock import VirtualClock
from core.events import EventFactory, Kind
from gateway.history import HISTORY_FILE, History
from tests.conftest import Broker, free_port
from tests.helpers import wait_until
from tests.houses import house_config

BENCH = "9 web"
PASSWORD = "bench-password"


def measure(quick: bool) -> list[Figure]:
    window = 10.0 if quick else 60.0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = None
        if gateway_has_mqtt():
            broker = Broker(port=free_port(), directory=directory / "mosquitto")
            broker.start()
        try:
            off = _idle(directory / "off", broker, window, web=False, client=False)
            on = _idle(directory / "on", broker, window, web=True, client=False)
            watched = _idle(directory / "watched", broker, window, web=True, client=True)
        finally:
            if broker is not None:
                broker.stop()
    how = f"gateway run, bench house, mock pins, {window:.0f} s windows"
    figures += [
        Figure(BENCH, "idle CPU, page off", off[0], "% core", note=how),
        Figure(BENCH, "idle CPU added, page on, no client", on[0] - off[0], "% core", "≤ 0.02 %",
               on[0] - off[0] <= 0.02),
        Figure(BENCH, "idle CPU added, one client live", watched[0] - off[0], "% core", "≤ 0.02 %",
               watched[0] - off[0] <= 0.02, "SSE open, keep-alive every 15 s"),
        Figure(BENCH, "RSS, page off", off[1], "MB"),
        Figure(BENCH, "RSS added, page on, no client", on[1] - off[1], "MB", "≤ 8 MB", on[1] - off[1] <= 8),
        Figure(BENCH, "RSS added, one client live", watched[1] - off[1], "MB", "≤ 8 MB", watched[1] - off[1] <= 8),
    ]
    figures += history_bytes(20.0 if quick else 60.0)
    return figures


def _idle(directory: Path, broker: Broker | None, window: float, *, web: bool, client: bool) -> tuple[float, float]:
    """(CPU % of a core, RSS MB) of an idle gateway after it settled."""
    directory.mkdir()
    port = free_port()
    (directory / "pw").write_text(PASSWORD)
    extra = f'[web]\nenabled = {"true" if web else "false"}\nlisten = "127.0.0.1:{port}"\npassword_file = "pw"\n'
    config = house_config(directory, mqtt_port=broker.port if broker else free_port(), extra=extra)
    log = directory / "gateway.log"
    process = start_gateway(config, log)
    stream: http.client.HTTPConnection | None = None
    try:
        wait_until(lambda: b"started" in log.read_bytes() or process.poll() is not None, 20, "gateway start")
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
        if client:
            stream = _watch(port)
        time.sleep(3.0)
        percent, _, rss = observe(process.pid, window)
    finally:
        if stream is not None:
            stream.close()
        stop(process)
    return percent, rss


def _watch(port: int) -> http.client.HTTPConnection:
    """One client as a phone is one: the page once, then the live stream held open (read on a thread)."""
    import base64

    auth = {"Authorization": "Basic " + base64.b64encode(f"x:{PASSWORD}".encode()).decode()}
    page = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    page.request("GET", "/", headers=auth)
    page.getresponse().read()
    page.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
    conn.request("GET", "/live", headers=auth)
    response = conn.getresponse()

    def drain() -> None:
        try:
            while response.fp is not None and response.fp.readline():
                pass
        except (OSError, ValueError, AttributeError):
            return

    threading.Thread(target=drain, daemon=True).start()
    return conn


def history_bytes(seconds: float) -> list[Figure]:
    """Bytes per hour the history writes for the shipped house (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--simulate", "--no-mqtt", "--config", str(ROOT / "config.toml"),
             "--state-dir", str(state), "--socket", str(Path(tmp) / "control.sock")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        time.sleep(seconds)
        process.terminate()
        process.wait(20)
        elapsed = time.monotonic() - started
        db = sqlite3.connect(state / HISTORY_FILE)
        samples = db.execute("SELECT kind, entity, value, unit, rule, detail FROM events").fetchall()
        db.close()
        rate = len(samples) / elapsed * 3600  # events per hour, start-up included (an over-estimate)
        clock = VirtualClock()
        events = EventFactory(clock, boot="bench")
        history = History(Path(tmp) / "replay" / HISTORY_FILE)
        history.open()
        flushes = int(3600 / history.flush_s)
        per_flush = max(1, round(rate / flushes))
        before = _wchar()
        for n in range(flushes):
            for i in range(per_flush):
                kind, entity, value, unit, rule, detail = samples[(n * per_flush + i) % len(samples)]
                history.record(events.make(Kind(kind), entity, value, unit=unit, rule=rule, detail=detail))
            history.flush()
        written = _wchar() - before
        size = history.size_bytes()
        history.stop()
    return [
        Figure(BENCH, "history: shipped house events/h", rate, "/h", note=f"gateway run --simulate, {seconds:.0f} s"),
        Figure(BENCH, "history: bytes written per hour", written / 1e6, "MB/h",
               note=f"flush every {history.flush_s:g} s; {written / max(rate, 1):.0f} B/event"),
        Figure(BENCH, "history: file growth per hour", size / 1e6, "MB/h"),
    ]


def _wchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar"):
                return int(line.split()[1])
    return 0
