"""Serial sensors that speak ``key=value`` lines, e.g. ``t=21.4 h=48.2``.

One reader thread per port blocks in ``readline`` (no polling). The port is
opened through ``ctx.open_serial`` (``serial.serial_for_url``), so a device
path, a ``/dev/serial/by-id/...`` link, ``loop://`` or ``socket://`` all work.
A malformed line is counted and logged (at most once a minute), never a crash.

Config example::

    [[devices]]
    id = "living_climate"
    driver = "serial.kv"
    port = "/dev/ttyUSB0"
    baudrate = 9600
    [devices.fields.t]
    entity = "living_temperature"
    unit = "°C"
    device_class = "temperature"
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.base import Component, DeviceConfig, Driver, DriverContext, EntitySpec, Simulator, SimWorld

if TYPE_CHECKING:
    from serial import SerialBase

log = logging.getLogger(__name__)


class FieldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    unit: str | None = None
    device_class: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class SerialKvConfig(DeviceConfig):
    driver: Literal["serial.kv"]
    port: str
    baudrate: int = Field(default=9600, gt=0)
    fields: dict[str, FieldConfig] = Field(min_length=1)
    report_interval: float | None = Field(default=None, gt=0)
    """How often the device sends, in seconds, when known (the hub marks it stale after that)."""


def parse_kv_line(line: str) -> dict[str, float]:
    """``"t=21.4 h=48"`` or ``"t=21.4,h=48"`` -> ``{"t": 21.4, "h": 48.0}``; ValueError if malformed."""
    pairs: dict[str, float] = {}
    for token in line.replace(",", " ").replace(";", " ").split():
        key, sep, raw = token.partition("=")
        if not sep or not key:
            raise ValueError(f"not key=value: {token!r}")
        value = float(raw)
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {token!r}")
        pairs[key] = value
    if not pairs:
        raise ValueError("empty line")
    return pairs


class KeyValueSensor(Driver):
    Config = SerialKvConfig
    config: SerialKvConfig

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.malformed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: SerialBase | None = None
        self._last_complaint = -math.inf

    def entities(self) -> Sequence[EntitySpec]:
        return [
            EntitySpec(
                f.entity, Component.SENSOR, unit=f.unit, device_class=f.device_class,
                report_interval=self.config.report_interval,
            )
            for f in self.config.fields.values()
        ]

    def start(self, ctx: DriverContext) -> None:
        if ctx.open_serial is None:
            raise RuntimeError("no serial opener in the driver context")
        self._port = ctx.open_serial(self.config.port, baudrate=self.config.baudrate, timeout=None)
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, args=(ctx,), name=f"serial-{self.id}", daemon=True)
        self._thread.start()

    def _read(self, ctx: DriverContext) -> None:
        port = self._port
        assert port is not None
        while not self._stop.is_set():
            try:
                raw = port.readline()
            except Exception as exc:  # pyserial raises SerialException/OSError/TypeError on close
                if not self._stop.is_set():
                    log.error("%s: serial port %s failed: %s", self.id, self.config.port, exc)
                    for spec in self.entities():
                        ctx.post(ctx.events.availability(spec.id, False, f"serial port failed: {exc}"))
                return
            if raw:
                self.handle_line(raw, ctx)

    def handle_line(self, raw: bytes, ctx: DriverContext) -> None:
        try:
            values = parse_kv_line(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            self._complain(raw, exc)
            return
        for key, value in values.items():
            field = self.config.fields.get(key)
            if field is not None:
                ctx.post(ctx.events.reading(field.entity, value * field.scale + field.offset, field.unit))

    def _complain(self, raw: bytes, exc: Exception) -> None:
        self.malformed += 1
        now = time.monotonic()
        if now - self._last_complaint >= 60:
            self._last_complaint = now
            log.warning("%s: malformed line %r (%s); %d so far", self.id, raw[:80], exc, self.malformed)

    def stop(self) -> None:
        self._stop.set()
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):  # already closed under us: nothing to cancel
                port.cancel_read()
            port.close()
        if self._thread is not None:
            self._thread.join(timeout=1)
            self._thread = None

    def simulator(self) -> Simulator | None:
        return KvLineSimulator(self.config)


class KvLineSimulator(Simulator):
    """A device on a pseudo-terminal that sends ``key=value`` lines, drifting slowly.

    Every field random-walks around 20; a field whose entity looks like a
    temperature warms while a relay named in ``world.state`` ``heater`` is on.
    """

    def __init__(self, config: SerialKvConfig, interval: float = 5.0) -> None:
        self._config = config
        self._interval = config.report_interval or interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fds: tuple[int, int] | None = None

    def start(self, world: SimWorld) -> None:
        master, slave = os.openpty()
        self._fds = (master, slave)
        world.serial_ports[self._config.port] = os.ttyname(slave)
        values = {key: 20.0 for key in self._config.fields}
        rng = world.rng

        def run() -> None:
            while not self._stop.wait(self._interval):
                heating = world.state("heater") is True
                for key in values:
                    values[key] += rng.gauss(0.15 if heating else -0.05, 0.1)
                line = " ".join(f"{k}={v:.2f}" for k, v in values.items()) + "\n"
                try:
                    os.write(master, line.encode())
                except OSError:
                    return

        self._thread = threading.Thread(target=run, name=f"sim-{self._config.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
            self._fds = None
