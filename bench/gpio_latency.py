"""Benchmark 2: GPIO edge -> rule -> relay, p50/p99 from the input pin change to the output pin change.

The real ``Gateway`` (drivers, bus, dispatcher thread, rules engine) runs on
gpiozero ``MockFactory`` pins. The bench thread drives pin 17 and waits for
pin 22 to move; a rule switches the light on motion and off when still, so
every edge is a sample. The baseline is the floor of any design with a
dispatcher thread: a bare thread that takes the edge from a queue and sets
the output pin.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.figures import Figure, percentile
from bench.house import TimedMockPin, timed_pins
from gateway.app import Gateway
from gateway.config import load_config
from tests.houses import house_config

BENCH = "2 gpio→relay"
TIMEOUT = 2.0


def edges(drive: Any, output: TimedMockPin, count: int, gap: float) -> list[float]:
    """Latency in seconds of ``count`` input edges, alternating high and low."""
    samples: list[float] = []
    for i in range(count):
        output.changed.clear()
        started = time.perf_counter()
        drive(i % 2 == 0)
        if not output.changed.wait(TIMEOUT):
            raise RuntimeError(f"edge {i}: the output did not change within {TIMEOUT}s")
        samples.append(output.changed_at - started)
        time.sleep(gap)  # an idle machine between edges, as a house is
    return samples


def gateway_latencies(count: int, gap: float) -> list[float]:
    pins = timed_pins()
    with tempfile.TemporaryDirectory() as tmp:
        # The benchmark switches the relay far faster than a house ever would: it lifts the default
        # switch-rate limits of the envelope on purpose (every switch is still recorded to the state dir).
        config = house_config(Path(tmp), light_envelope="{ min_off_s = 0, max_switches_per_hour = 3600 }")
        gateway = Gateway(load_config(config), pin_factory=pins, mqtt=False)
        gateway.start()
        thread = threading.Thread(target=gateway.run, name="dispatcher", daemon=True)
        thread.start()
        try:
            pin_in = pins.pin(17)
            output: TimedMockPin = pins.pin(22)
            return edges(lambda high: pin_in.drive_high() if high else pin_in.drive_low(), output, count, gap)
        finally:
            gateway.request_stop()
            thread.join(5)
            gateway.shutdown()
            pins.reset()


def baseline_latencies(count: int, gap: float) -> list[float]:
    pins = timed_pins()
    pins.pin(17).function = "input"
    output: TimedMockPin = pins.pin(22)
    output.function = "output"
    inbox: queue.SimpleQueue[bool | None] = queue.SimpleQueue()

    def consumer() -> None:
        while (value := inbox.get()) is not None:
            output.state = value

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    try:
        return edges(inbox.put, output, count, gap)
    finally:
        inbox.put(None)
        thread.join(2)
        pins.reset()


def measure(quick: bool) -> list[Figure]:
    count = 400 if quick else 2_000
    gap = 0.002
    samples = gateway_latencies(count, gap)
    base = baseline_latencies(count, gap)
    p50, p99 = percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3
    b50, b99 = percentile(base, 50) * 1e3, percentile(base, 99) * 1e3
    return [
        Figure(BENCH, "latency p50", p50, "ms", note=f"{count} edges through Gateway on MockFactory pins"),
        Figure(BENCH, "latency p99", p99, "ms", "≤ 1 ms", p99 <= 1.0, f"max {max(samples) * 1e3:.2f} ms"),
        Figure(BENCH, "baseline p50 (queue + thread)", b50, "ms"),
        Figure(BENCH, "baseline p99 (queue + thread)", b99, "ms"),
    ]
