"""Benchmark 7: a 100,000-event outbox backlog survives a restart and drains; the drain rate.

With no broker listening, a real ``MqttBridge`` accepts the events into its
SQLite outbox (production settings) and is stopped: the backlog is on disk.
A Mosquitto is started, ``mosquitto_sub -C N`` waits for every event, and a
*new* bridge over the same state directory drains the backlog. The figures:
rows on disk after the first stop, the accept rate while the broker was away,
and the drain rate from the new bridge's start to the last arrival. The drain
is paced by ``mqtt.drain_rate`` (default 1,000/s, i.e. 100 s for this
backlog); it is raised here to measure what the outbox itself can do.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.figures import Figure
from bench.outbox import PRODUCTION_OUTBOX, WINDOW, Counter
from tests.conftest import Broker, free_port
from tests.mqtt_support import make_bridge, make_config

BENCH = "7 backlog"
DRAIN = 100_000.0


def measure(quick: bool) -> list[Figure]:
    return backlog(20_000 if quick else 100_000)


def backlog(count: int, wait_s: float = 600.0) -> list[Figure]:
    """``count`` events accepted with the broker away, then drained by a new bridge; ``wait_s``: how long the drain
    may take before the run fails."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        port = free_port()
        config = make_config("backlog", directory / "state", port, max_inflight=WINDOW, discovery=False,
                             outbox=PRODUCTION_OUTBOX, drain_rate=DRAIN)
        first = make_bridge(config)
        first.bridge.start()
        reading = first.events.reading
        started = time.perf_counter()
        for i in range(count):
            first.bridge.forward(reading("living_temp", i))
        first.bridge.stop()
        accept_rate = count / (time.perf_counter() - started)
        # Closed, not only committed (``with sqlite3.connect`` leaves it open): the outbox opens its file in exclusive
        # locking mode, and the second bridge found it locked and ran degraded, in memory, with nothing to drain.
        with contextlib.closing(sqlite3.connect(directory / "state" / "outbox.sqlite3")) as db:
            on_disk = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        broker = Broker(port=port, directory=directory / "mosquitto")
        broker.start()
        try:
            counter = Counter(broker, "gateway/backlog/event/living_temp", on_disk, directory / "backlog.sub")
            second = make_bridge(config)
            restarted = time.perf_counter()
            second.bridge.start()
            try:
                drained = counter.wait(wait_s)
            finally:
                second.bridge.stop()
                counter.close()
        finally:
            broker.stop()
    drain_rate = on_disk / (drained - restarted)
    return [
        Figure(BENCH, "backlog on disk after stop", on_disk, "events", f"= {count:,}", on_disk == count,
               "broker away, then the bridge stopped"),
        Figure(BENCH, "accept rate, broker away", accept_rate, "ev/s", note="forward() into the outbox, with stop"),
        Figure(BENCH, "drain after restart", drain_rate, "ev/s",
               note=f"all {on_disk:,} arrived; drain_rate={DRAIN:,.0f} (shipped default 1,000/s: "
               f"{on_disk / 1000:.0f} s)"),
    ]
