"""Driver figures: parser throughput, how late the driver timer thread fires, a pulse meter's cost.

    PYTHONPATH=. python bench/drivers_bench.py
"""

from __future__ import annotations

import statistics
import threading
import time

from core.clock import SystemClock
from drivers.conditioning import Pipeline, Sample, Settle, Throttle, Window
from drivers.protocols import (
    JsonLinesParser,
    KeyValueParser,
    Mhz19Parser,
    NmeaParser,
    Parser,
    Pms5003Parser,
    mhz19_response,
    nmea_sentence,
    pms5003_frame,
)
from drivers.timing import ThreadScheduler, every

SAMPLES: list[tuple[str, type[Parser], bytes]] = [
    ("kv", KeyValueParser, b"t=21.45 h=48.2 p=1013.2\n"),
    ("json", JsonLinesParser, b'{"env": {"t": 21.45, "h": 48.2}, "id": "x"}\n'),
    ("nmea", NmeaParser, nmea_sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")),
    ("pms5003", Pms5003Parser, pms5003_frame(list(range(12)))),
    ("mhz19", Mhz19Parser, mhz19_response(812, 24)),
]


def parsers() -> None:
    for name, cls, frame in SAMPLES:
        parser = cls()
        chunk = frame * 200
        start = time.perf_counter()
        rounds = 0
        while time.perf_counter() - start < 0.5:
            parser.feed(chunk)
            rounds += 1
        elapsed = time.perf_counter() - start
        print(f"{name:8s} {rounds * 200 / elapsed:>10,.0f} records/s  {rounds * len(chunk) / elapsed / 1e6:6.1f} MB/s")


def pipeline() -> None:
    p = Pipeline([Window(5, "median"), Settle(0.0, 0.0), Throttle(0.0, 60.0)])
    n = 200_000
    start = time.perf_counter()
    for i in range(n):
        p.feed(Sample(20.0 + (i % 7) * 0.1, float(i)))
    print(f"pipeline {n / (time.perf_counter() - start):>10,.0f} samples/s (median 5 + settle + throttle)")


def timer_lateness(period: float = 0.01, count: int = 300) -> None:
    clock = SystemClock()
    sched = ThreadScheduler(clock, name="bench")
    late: list[float] = []
    done = threading.Event()
    origin = clock.monotonic() + period

    def tick() -> None:
        k = len(late)
        late.append(clock.monotonic() - (origin + k * period))
        if len(late) >= count:
            periodic.cancel()
            done.set()

    periodic = every(sched, period, tick, first_delay=period)
    done.wait(count * period * 5)
    sched.close()
    ms = sorted(x * 1000 for x in late)
    print(f"timers   {len(ms)} ticks at {period * 1000:.0f} ms: lateness median {statistics.median(ms):.2f} ms, "
          f"p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, max {ms[-1]:.2f} ms; drift after {count} ticks "
          f"{late[-1] * 1000:.2f} ms")


def pulse_meter(count: int = 20_000) -> None:
    """CPU per pulse of ``gpio.pulse_meter``: its own edge handler, and the whole path from a mock pin's
    edge through gpiozero's callbacks; then what 100 pulses/s costs of one core."""
    from gpiozero.pins.mock import MockFactory

    from core.events import EventFactory
    from drivers.base import DriverContext
    from drivers.pulse import PulseMeter, PulseMeterConfig

    config = PulseMeterConfig.model_validate({"id": "bench_meter", "driver": "gpio.pulse_meter", "pin": 19,
                                              "meter": "energy", "pulses_per_unit": 1000, "debounce_ms": 0})
    factory = MockFactory()
    meter = PulseMeter(config)
    ctx = DriverContext(post=lambda event: None, events=EventFactory(SystemClock()), pin_factory=factory)
    meter.start(ctx)
    pin = factory.pin(19)
    pin.drive_high()
    start = time.process_time()
    for _ in range(count):
        meter.pulse()
    handler = (time.process_time() - start) / count
    start = time.process_time()
    for _ in range(count):
        pin.drive_low()
        pin.drive_high()
    path = (time.process_time() - start) / count
    meter.stop()
    ctx.close()
    print(f"pulse    handler {handler * 1e6:.1f} µs/pulse; mock pin edge -> count {path * 1e6:.1f} µs/pulse; "
          f"at 100 pulses/s {path * 100 * 100:.2f} % of one core (+ one report every 10 s)")


if __name__ == "__main__":
    parsers()
    pipeline()
    timer_lateness()
    pulse_meter()
