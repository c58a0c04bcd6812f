"""DS18B20 temperature sensors on the kernel's 1-wire bus (``w1-gpio`` overlay, ``w1_therm``).

The kernel exposes each sensor as ``<base_path>/28-xxxxxxxxxxxx/w1_slave``::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

The driver reads it on a fixed rate (``poll_s``; a read takes ~750 ms on the
bus, spent on a timer thread of this driver's own, so no other driver waits). A reading whose CRC line does
not end in ``YES`` is discarded and counted (``crc_errors``); so is 85.0 °C,
the value a DS18B20 reports after a power-on reset before its first
conversion (``power_on_values``). A sensor that disappears (bad wiring) makes
the entity unavailable until it reads again. ``base_path`` is configurable so
tests use a fake tree.

Config example::

    [[devices]]
    id = "boiler_flow"
    driver = "onewire.ds18b20"
    sensor = "28-0316a2795aff"     # omit when exactly one sensor is on the bus
    poll_s = 30
    conditioning = [{ step = "range", min = -10, max = 110 }, { step = "deadband", delta = 0.2 }]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from core.entities import Component, EntitySpec
from core.fields import empty_list
from core.guard import guarded
from drivers.base import DeviceConfig, Driver, DriverContext, Simulator
from drivers.channel import Channel
from drivers.conditioning import NumericStep
from drivers.timing import Periodic, ThreadScheduler, every

POWER_ON_MILLIDEGREES = 85_000


class Ds18b20Config(DeviceConfig):
    driver: Literal["onewire.ds18b20"]
    sensor: str | None = Field(default=None, pattern=r"^28-[0-9a-f]{12}$")
    """The sensor's directory name; None: the only ``28-*`` sensor on the bus."""
    base_path: str = "/sys/bus/w1/devices"
    poll_s: float = Field(default=30.0, ge=1, le=3600)
    offset: float = 0.0
    """Calibration: added to every reading, in °C."""
    conditioning: list[NumericStep] = Field(default_factory=empty_list)
    stale_after: float | None = Field(default=None, gt=0)
    sim_heater: str | None = "heater"
    """``--simulate`` only: the entity whose on-state warms this sensor."""

    def onewire_base(self) -> str | None:
        return self.base_path


class ReadError(Exception):
    """This read produced no valid temperature; ``counter`` names what to count."""

    def __init__(self, message: str, counter: str | None = None) -> None:
        super().__init__(message)
        self.counter = counter


def parse_w1_slave(text: str) -> float:
    """The two ``w1_slave`` lines -> °C, or :class:`ReadError` (CRC not YES, power-on 85 °C, garbled)."""
    lines = text.strip().splitlines()
    if len(lines) != 2 or "crc=" not in lines[0]:
        raise ReadError("garbled w1_slave file", "garbled")
    if not lines[0].rstrip().endswith("YES"):
        raise ReadError("CRC check failed", "crc_errors")
    _, sep, raw = lines[1].rpartition("t=")
    try:
        millidegrees = int(raw)
    except ValueError:
        raise ReadError("garbled w1_slave file", "garbled") from None
    if not sep:
        raise ReadError("garbled w1_slave file", "garbled")
    if millidegrees == POWER_ON_MILLIDEGREES:
        raise ReadError("85.0 °C power-on value", "power_on_values")
    return millidegrees / 1000


class Ds18b20(Driver[Ds18b20Config]):
    Config: ClassVar[type[DeviceConfig]] = Ds18b20Config

    def __init__(self, config: Ds18b20Config) -> None:
        super().__init__(config)
        self.channel: Channel | None = None
        self._poll: Periodic | None = None
        self._base: Path = Path(self.config.base_path)
        self._own_timers: ThreadScheduler | None = None
        self.counters = {"crc_errors": 0, "power_on_values": 0, "garbled": 0, "missing": 0}

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec(self.id, Component.SENSOR, unit="°C", device_class="temperature",
                           report_interval=self.config.poll_s)]

    def start(self, ctx: DriverContext) -> None:
        cfg = self.config
        self._base = Path(ctx.resolve_path(cfg.base_path))
        self.channel = Channel(ctx, self.id, unit="°C", steps=cfg.conditioning, stale_after=cfg.stale_after)
        scheduler = ctx.timers()
        if isinstance(scheduler, ThreadScheduler):
            # a bus read blocks ~750 ms: never on a timer thread other drivers share
            scheduler = self._own_timers = ThreadScheduler(ctx.clock, name=f"w1-{self.id}")
        self._poll = every(scheduler, cfg.poll_s, guarded(f"{self.id} read")(self.read))

    def sensor_file(self) -> Path:
        if self.config.sensor is not None:
            return self._base / self.config.sensor / "w1_slave"
        found = sorted(self._base.glob("28-*"))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise ReadError(f"set sensor = one of the DS18B20s on the bus (found: {names})", "missing")
        return found[0] / "w1_slave"

    def read(self) -> None:
        channel = self.channel
        if channel is None:
            return
        try:
            path = self.sensor_file()
            try:
                text = path.read_text(encoding="ascii", errors="replace")
            except OSError as exc:
                raise ReadError(f"cannot read {path}: {exc.strerror}", "missing") from None
            value = parse_w1_slave(text)
        except ReadError as exc:
            if exc.counter is not None:
                self.counters[exc.counter] += 1
            if exc.counter == "missing":
                channel.set_available(False, str(exc))
            return
        channel.feed(round(value + self.config.offset, 3))

    def stats(self) -> dict[str, int]:
        return {**self.counters, "dropped": self.channel.pipeline.dropped if self.channel is not None else 0}

    def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self._own_timers is not None:
            self._own_timers.close()
            self._own_timers = None
        if self.channel is not None:
            self.channel.close()

    def simulator(self) -> Simulator | None:
        from drivers.sim.onewire import Ds18b20Twin

        return Ds18b20Twin(self.config)
