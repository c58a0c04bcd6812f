"""I2C figures: measurements per second through the fake bus, one chip at a time and three sharing a bus.

    PYTHONPATH=. python bench/i2c_bench.py

Each figure is the real driver's ``read()`` (bus lock, the chip's command/register sequence, CRC checks,
compensation, the channel) against the register-level twins of ``drivers/sim/i2c.py``; conversion waits are
zero on a fake bus, so this is the gateway's own CPU cost per measurement, not the chip's conversion time.
On a Pi the bus itself bounds the rate: at 100 kHz one byte takes ~90 µs, so a BME280 measurement
(~45 bytes on the wire in ~10 transfers) costs ~5 ms of bus time plus ~10 ms of conversion.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from core.clock import VirtualClock
from core.events import EventFactory
from drivers.base import DriverContext
from drivers.i2c import BUSES
from drivers.i2c_sensors import I2cSensor
from drivers.registry import DRIVERS
from drivers.sim.i2c import Ads1115Chip, Bh1750Chip, Bme280Chip, FakeChip, FakeI2cBus, ShtChip
from drivers.timing import VirtualScheduler

CHIPS: list[tuple[str, int, FakeChip, dict[str, Any]]] = [
    ("i2c.bme280", 0x76, Bme280Chip(), {}),
    ("i2c.bmp280", 0x77, Bme280Chip(humidity=None), {}),
    ("i2c.sht3x", 0x44, ShtChip(kind="sht3x"), {}),
    ("i2c.sht4x", 0x45, ShtChip(kind="sht4x"), {}),
    ("i2c.bh1750", 0x23, Bh1750Chip(), {}),
    ("i2c.ads1115", 0x48, Ads1115Chip((1.0, 2.0, 3.0, 0.5)), {"channels": [{"id": f"c{i}", "input": f"A{i}"}
                                                                           for i in range(4)]}),
]


def sensor_on(bus_name: str, driver: str, address: int, extra: dict[str, Any], ident: str) -> I2cSensor:
    cls = DRIVERS[driver]
    sensor = cls(cls.Config.model_validate({"id": ident, "driver": driver, "address": address, **extra}))
    assert isinstance(sensor, I2cSensor)
    scheduler = VirtualScheduler(VirtualClock())
    ctx = DriverContext(post=lambda event: None, events=EventFactory(scheduler.clock, boot="bench"),
                        scheduler=scheduler, resolve_path=lambda path: bus_name)
    sensor.start(ctx)
    return sensor


def rate(sensor: I2cSensor, seconds: float = 0.5) -> tuple[int, float]:
    """(measurements, seconds) of reading as fast as the driver can."""
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            sensor.read()
        n += 20
    return n, time.perf_counter() - start


def one_at_a_time() -> None:
    for driver, address, chip, extra in CHIPS:
        fake = FakeI2cBus()
        fake.chips[address] = chip
        BUSES.attach("bench-i2c", fake)
        sensor = sensor_on("bench-i2c", driver, address, extra, "dev")
        sensor.read()
        before = fake.transfers
        n, elapsed = rate(sensor)
        per_s, per_read = n / elapsed, (fake.transfers - before) / n
        errors = sensor.stats()
        sensor.stop()
        BUSES.detach("bench-i2c")
        if any(errors[k] for k in ("read_errors", "crc_errors", "implausible")):  # kept under -OO
            raise RuntimeError(f"{driver}: {errors}")
        print(f"{driver:12s} {per_s:>9,.0f} measurements/s  ~{per_read:4.1f} transfers each")


def shared_bus(seconds: float = 1.0) -> None:
    """Three chips, three threads, one bus: the lock serialises them; the total is what the bus owner costs."""
    fake = FakeI2cBus()
    chosen = [CHIPS[0], CHIPS[2], CHIPS[4]]
    for _, address, chip, _ in chosen:
        fake.chips[address] = chip
    BUSES.attach("bench-shared", fake)
    sensors = [sensor_on("bench-shared", d, a, e, f"dev{i}") for i, (d, a, _, e) in enumerate(chosen)]
    counts = [0] * len(sensors)
    stop = threading.Event()

    def loop(i: int) -> None:
        while not stop.is_set():
            sensors[i].read()
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(sensors))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for s in sensors:
        s.stop()
    BUSES.detach("bench-shared")
    each = ", ".join(f"{d.removeprefix('i2c.')} {c / elapsed:,.0f}" for (d, *_), c in zip(chosen, counts, strict=True))
    print(f"shared bus   {sum(counts) / elapsed:>9,.0f} measurements/s on 3 threads ({each})")


def main() -> None:
    one_at_a_time()
    shared_bus()


if __name__ == "__main__":
    main()
