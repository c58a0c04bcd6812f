"""Figures for docs/mqtt.md: outbox throughput and bytes written per event, end-to-end rate and latency.

Run from the repository root: ``PYTHONPATH=. python bench/mqtt_bench.py`` (starts its own Mosquitto).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

from core.events import Event
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.topics import event_payload
from tests.conftest import Broker, free_port
from tests.mqtt_support import make_bridge, make_config, recorder, wait_until


def outbox_figures(directory: Path, batch: int, synchronous: str, count: int = 20_000) -> None:
    outbox = Outbox(directory / f"o-{batch}-{synchronous}.db", synchronous=synchronous)  # type: ignore[arg-type]
    event = Event("boot-1", __import__("core.events", fromlist=["Kind"]).Kind.READING, "living_temp", 21.5,
                  1_767_225_600.0, 0.0, unit="°C")
    started = time.perf_counter()
    for i in range(count):
        outbox.add("gateway/house-01/event/living_temp", lambda seq: event_payload(event, seq), droppable=True,
                   ts=event.ts)
        if (i + 1) % batch == 0:
            outbox.commit()
    outbox.commit()
    elapsed = time.perf_counter() - started
    for seq in range(1, count + 1):
        outbox.ack(seq)
        if seq % batch == 0:
            outbox.commit()
    outbox.close()
    print(f"outbox batch={batch:4d} sync={synchronous:6s}: {count / elapsed:9.0f} events/s accepted+committed, "
          f"{outbox.counters.bytes_written / count:7.0f} bytes written per event (insert+delete)")


def end_to_end(directory: Path) -> None:
    broker = Broker(port=free_port(), directory=directory / "mosquitto")
    broker.start()
    try:
        harness = make_bridge(make_config("bench", directory / "state", broker.port,
                                          outbox={"batch_ms": 20, "synchronous": "NORMAL"}, drain_rate=100_000,
                                          max_inflight=100))
        bridge = harness.bridge
        bridge.start()
        wait_until(lambda: bridge.connected)
        count = 20_000
        started = time.perf_counter()
        for i in range(count):
            bridge.forward(harness.events.reading("living_temp", i))
        wait_until(lambda: bridge.counters.events_out >= count, timeout=120)
        elapsed = time.perf_counter() - started
        print(f"end to end, burst of {count}: {count / elapsed:.0f} events/s acknowledged (window 100, QoS 1)")
        payload = len(event_payload(harness.events.reading("living_temp", 21.5, unit="°C"), 123456))
        print(f"typical event payload: {payload} bytes")
        with recorder(broker.host, broker.port, "gateway/bench/event/#") as hub:
            latencies: list[float] = []
            lock = threading.Lock()
            original = hub.client.on_message

            def timed(client, userdata, msg):  # type: ignore[no-untyped-def]
                original(client, userdata, msg)
                with lock:
                    latencies.append(time.time())

            hub.client.on_message = timed
            sent: list[float] = []
            for i in range(500):
                sent.append(time.time())
                bridge.forward(harness.events.reading("living_temp", i))
                time.sleep(0.01)
            wait_until(lambda: len(latencies) >= 500, timeout=30)
            delays = sorted((r - s) * 1000 for r, s in zip(latencies, sent, strict=False))
            print(f"latency at 100 events/s, forward() to subscriber: p50 {statistics.median(delays):.1f} ms, "
                  f"p99 {delays[int(len(delays) * 0.99)]:.1f} ms (batch window 20 ms)")
        bridge.stop()
        health = bridge.health()
        print(f"health after the run: bytes_written {health['outbox']['bytes_written']} for "
              f"{health['events_in']} events = {health['outbox']['bytes_written'] / health['events_in']:.0f} B/event")
    finally:
        broker.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        for batch, sync in ((1, "NORMAL"), (100, "NORMAL"), (100, "FULL")):
            outbox_figures(directory, batch, sync, count=5_000 if batch == 1 else 20_000)
        end_to_end(directory)


if __name__ == "__main__":
    main()
