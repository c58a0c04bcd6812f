"""Serial sensors: ``key=value`` and JSON lines, NMEA 0183 GPS, PMS5003 dust, MH-Z19 CO2.

Each driver is a :class:`~drivers.protocols.Parser` (pure, tested alone) behind
one :class:`~drivers.serial_link.SerialLink` (the reader thread, reconnect with
backoff). ``fields`` maps what the parser reports to entities, each with its
unit, linear scaling and its own conditioning steps. A malformed line or a
frame with a bad checksum is counted (``driver.counters``), never a reading,
never a crash. A port that vanishes makes every entity unavailable until
readings flow again; so does a sensor silent for longer than ``stale_after``.

Config examples::

    [[devices]]
    id = "living_climate"
    driver = "serial.kv"
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
    baudrate = 9600
    stale_after = 120
    [devices.fields.t]
    entity = "living_temperature"
    unit = "°C"
    device_class = "temperature"
    conditioning = [{ step = "range", min = -20, max = 60 }, { step = "deadband", delta = 0.1 }]

    [[devices]]
    id = "air"
    driver = "serial.pms5003"
    port = "/dev/ttyAMA0"
    fields.pm2_5 = { entity = "air_pm2_5" }

    [[devices]]
    id = "co2"
    driver = "serial.mhz19"
    port = "/dev/ttyS0"
    poll_s = 10
    fields.co2 = { entity = "office_co2", conditioning = [{ step = "range", min = 300, max = 5000 }] }
"""

from __future__ import annotations

import difflib
import json
import random
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypeVar

from core.entities import Component, EntitySpec
from drivers.base import DeviceConfig, Driver, DriverContext, Simulator, SimWorld
from drivers.channel import Channel
from drivers.conditioning import NumericStep
from drivers.protocols import (
    MHZ19_READ,
    FieldInfo,
    JsonLinesParser,
    KeyValueParser,
    Mhz19Parser,
    NmeaParser,
    ParseError,
    Parser,
    ParserCounters,
    Pms5003Parser,
    Record,
    mhz19_response,
    nmea_sentence,
    pms5003_frame,
)
from drivers.serial_link import SerialLink
from drivers.simulation import PtyTwin, ThermalModel, corrupt, heater_on
from drivers.timing import Periodic, every


class FieldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    unit: str | None = None
    """Defaults to the protocol's unit for known fields (e.g. ppm for MH-Z19 ``co2``)."""
    device_class: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    """Reported value = raw * scale + offset."""
    conditioning: list[NumericStep] = Field(default_factory=list)


class SerialConfig(DeviceConfig):
    port: str = Field(min_length=1)
    """A device path (prefer ``/dev/serial/by-id/...``) or a pyserial URL (``socket://host:port``)."""
    baudrate: int = Field(default=9600, gt=0)
    fields: dict[str, FieldConfig] = Field(min_length=1)
    report_interval: float | None = Field(default=None, gt=0)
    """How often the device sends, in seconds, when known (the hub marks it stale after that)."""
    stale_after: float | None = Field(default=None, gt=0)
    """Entities become unavailable when nothing was received for this many seconds."""
    retry_min_s: float = Field(default=1.0, gt=0, le=60)
    retry_max_s: float = Field(default=60.0, gt=0, le=3600)
    sim_heater: str | None = "heater"
    """``--simulate`` only: the entity whose on-state warms this device's temperature fields."""

    parser_class: ClassVar[type[Parser]]

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, FieldConfig]) -> dict[str, FieldConfig]:
        known = cls.parser_class.known_fields
        if known is None:
            return fields
        for name in fields:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown field {name!r}{hint} (this sensor reports: {', '.join(known)})")
        return fields


class SerialKvConfig(SerialConfig):
    driver: Literal["serial.kv"]
    parser_class: ClassVar[type[Parser]] = KeyValueParser


class SerialJsonConfig(SerialConfig):
    driver: Literal["serial.json"]
    parser_class: ClassVar[type[Parser]] = JsonLinesParser


class SerialNmeaConfig(SerialConfig):
    driver: Literal["serial.nmea"]
    baudrate: int = Field(default=4800, gt=0)
    parser_class: ClassVar[type[Parser]] = NmeaParser


class SerialPms5003Config(SerialConfig):
    driver: Literal["serial.pms5003"]
    parser_class: ClassVar[type[Parser]] = Pms5003Parser


class SerialMhz19Config(SerialConfig):
    driver: Literal["serial.mhz19"]
    poll_s: float = Field(default=10.0, ge=1, le=3600)
    """Seconds between read commands, on a fixed rate."""
    parser_class: ClassVar[type[Parser]] = Mhz19Parser


def parse_kv_line(line: str) -> dict[str, float]:
    """``"t=21.4 h=48"`` -> ``{"t": 21.4, "h": 48.0}``; ValueError if malformed."""
    return KeyValueParser().parse_line(line.strip().encode("utf-8", "replace"))


SerialC_co = TypeVar("SerialC_co", bound=SerialConfig, default=SerialConfig, covariant=True)


class SerialSensor(Driver[SerialC_co]):
    """The shared body of every serial sensor; subclasses pick the config (and so the parser)."""

    Config: ClassVar[type[DeviceConfig]] = SerialKvConfig

    def __init__(self, config: SerialC_co) -> None:
        super().__init__(config)
        self.parser: Parser = self.config.parser_class()
        self.channels: dict[str, Channel] = {}
        self.link: SerialLink | None = None
        self._poll: Periodic | None = None

    @property
    def counters(self) -> ParserCounters:
        return self.parser.counters

    @property
    def malformed(self) -> int:
        return self.parser.counters.malformed + self.parser.counters.bad_checksum

    def entities(self) -> Sequence[EntitySpec]:
        return [self._spec(name, f) for name, f in self.config.fields.items()]

    def stats(self) -> dict[str, int]:
        c = self.parser.counters
        link = self.link
        return {
            "records": c.records, "malformed": c.malformed, "bad_checksum": c.bad_checksum,
            "discarded_bytes": c.discarded_bytes,
            "port_opens": link.opens if link is not None else 0,
            "port_failures": link.failures if link is not None else 0,
            "dropped": sum(ch.pipeline.dropped for ch in self.channels.values()),
        }

    def _spec(self, name: str, f: FieldConfig) -> EntitySpec:
        info = (self.config.parser_class.known_fields or {}).get(name, FieldInfo())
        return EntitySpec(
            f.entity, Component.SENSOR, unit=f.unit or info.unit, device_class=f.device_class or info.device_class,
            report_interval=self.config.report_interval,
        )

    def start(self, ctx: DriverContext) -> None:
        if ctx.open_serial is None:
            raise RuntimeError("no serial opener in the driver context")
        cfg = self.config
        self.parser = cfg.parser_class()
        self.channels = {
            name: Channel(ctx, f.entity, unit=self._spec(name, f).unit, steps=f.conditioning,
                          stale_after=cfg.stale_after)
            for name, f in cfg.fields.items()
        }
        self.link = SerialLink(
            self.id, cfg.port, baudrate=cfg.baudrate, open_serial=ctx.open_serial, parser=self.parser,
            on_records=self._records, on_lost=self._lost, on_fatal=ctx.fail,
            retry_min_s=cfg.retry_min_s, retry_max_s=cfg.retry_max_s,
        )
        self.link.start()
        self._start_polling(ctx)

    def _start_polling(self, ctx: DriverContext) -> None:
        """Polled sensors send a request on a fixed rate here."""

    def _records(self, records: list[Record]) -> None:
        fields = self.config.fields
        for record in records:
            for name, raw in record.items():
                f = fields.get(name)
                if f is not None:
                    self.channels[name].feed(raw * f.scale + f.offset)

    def _lost(self, reason: str) -> None:
        for channel in self.channels.values():
            channel.set_available(False, reason)

    def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self.link is not None:
            self.link.stop()
            self.link = None
        for channel in self.channels.values():
            channel.close()


class KeyValueSensor(SerialSensor[SerialKvConfig]):
    """``t=21.4 h=48.2`` lines."""

    Config = SerialKvConfig

    def simulator(self) -> Simulator | None:
        return LineTwin(self.config, lambda values: " ".join(f"{k}={v:.2f}" for k, v in values.items()))


class JsonLinesSensor(SerialSensor[SerialJsonConfig]):
    """One JSON object per line; ``fields`` keys are dotted paths (``"env.temp"``)."""

    Config = SerialJsonConfig

    def simulator(self) -> Simulator | None:
        return LineTwin(self.config, _json_line)


class NmeaSensor(SerialSensor[SerialNmeaConfig]):
    """A GPS receiver speaking NMEA 0183 (GGA and RMC read, checksums verified)."""

    Config = SerialNmeaConfig

    def simulator(self) -> Simulator | None:
        return NmeaTwin(self.config)


class Pms5003Sensor(SerialSensor[SerialPms5003Config]):
    """Plantower PMS5003 particulate sensor in its default active mode (a frame every second or so)."""

    Config = SerialPms5003Config

    def simulator(self) -> Simulator | None:
        return Pms5003Twin(self.config)


class Mhz19Sensor(SerialSensor[SerialMhz19Config]):
    """Winsen MH-Z19 CO2 sensor, polled with the read command every ``poll_s`` seconds."""

    Config = SerialMhz19Config

    def _start_polling(self, ctx: DriverContext) -> None:
        link = self.link
        assert link is not None
        self._poll = every(ctx.timers(), self.config.poll_s, lambda: self._request(link), first_delay=0.5)

    @staticmethod
    def _request(link: SerialLink) -> None:
        link.write(MHZ19_READ)

    def simulator(self) -> Simulator | None:
        return Mhz19Twin(self.config)


# -- simulated twins ----------------------------------------------------------------------------


def _json_line(values: dict[str, float]) -> str:
    nested: dict[str, Any] = {}
    for path, value in values.items():
        node = nested
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = round(value, 2)
    return json.dumps(nested)


class _FieldWalk:
    """Every configured field random-walks; temperature-like fields follow a thermal model."""

    def __init__(self, config: SerialConfig, start: float = 20.0) -> None:
        self.config = config
        self.values = {name: start for name in config.fields}
        self.thermal = ThermalModel(temperature=start)
        self._lock = threading.Lock()

    def step(self, world: SimWorld, rng: random.Random, dt: float) -> dict[str, float]:
        with self._lock:
            heating = heater_on(world, self.config.sim_heater)
            temperature = self.thermal.step(dt, heating, rng.gauss)
            for name, field in self.config.fields.items():
                if "temp" in name or "temp" in field.entity:
                    self.values[name] = temperature
                else:
                    self.values[name] += rng.gauss(0.0, 0.1)
            return {name: (v - f.offset) / (f.scale or 1.0) for (name, v), f in
                    zip(self.values.items(), self.config.fields.values(), strict=True)}


class LineTwin(PtyTwin):
    def __init__(self, config: SerialConfig, render: Any, interval: float | None = None) -> None:
        super().__init__(config.port, config.id, interval or min(config.report_interval or 5.0, 5.0))
        self._walk = _FieldWalk(config)
        self._render = render

    def produce(self, world: SimWorld, dt: float) -> bytes:
        line = (self._render(self._walk.step(world, self.rng, dt)) + "\n").encode()
        return corrupt(line, self.rng.random, self.rng.randrange, 0.02)


class NmeaTwin(PtyTwin):
    """A GPS that stays near one spot, sending GGA and RMC once a second."""

    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config.port, config.id, 1.0)
        self._lat, self._lon = 51.4779, -0.0015

    def produce(self, world: SimWorld, dt: float) -> bytes:
        rng = self.rng
        self._lat += rng.gauss(0, 0.00001)
        self._lon += rng.gauss(0, 0.00001)
        lat = f"{int(self._lat):02d}{(self._lat % 1) * 60:07.4f}"
        lon_abs = abs(self._lon)
        lon = f"{int(lon_abs):03d}{(lon_abs % 1) * 60:07.4f}"
        ew = "W" if self._lon < 0 else "E"
        gga = nmea_sentence(f"GPGGA,120000.00,{lat},N,{lon},{ew},1,08,0.9,{45 + rng.gauss(0, 0.5):.1f},M,46.9,M,,")
        rmc = nmea_sentence(f"GPRMC,120000.00,A,{lat},N,{lon},{ew},{abs(rng.gauss(0, 0.2)):.2f},0.0,010126,,,A")
        return corrupt(gga, rng.random, rng.randrange, 0.02) + rmc


class Pms5003Twin(PtyTwin):
    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config.port, config.id, 1.0)
        self._pm25 = 8.0

    def produce(self, world: SimWorld, dt: float) -> bytes:
        rng = self.rng
        self._pm25 = max(0.0, self._pm25 + rng.gauss(0, 0.5))
        pm = round(self._pm25)
        frame = pms5003_frame([pm // 2, pm, pm + 3, pm // 2, pm, pm + 3, pm * 90, pm * 30, pm * 5, pm, 1, 0])
        return corrupt(frame, rng.random, rng.randrange, 0.02)


class Mhz19Twin(PtyTwin):
    """Answers each read command with a response; CO2 rises and falls slowly."""

    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config.port, config.id, 3600.0)
        self._co2 = 600.0
        self._buffer = b""

    def respond(self, world: SimWorld, request: bytes) -> bytes:
        self._buffer = (self._buffer + request)[-64:]
        if MHZ19_READ not in self._buffer:
            return b""
        self._buffer = b""
        rng = self.rng
        self._co2 = min(4000.0, max(400.0, self._co2 + rng.gauss(0, 15)))
        return corrupt(mhz19_response(round(self._co2), 23), rng.random, rng.randrange, 0.02)


__all__ = [
    "FieldConfig",
    "JsonLinesSensor",
    "KeyValueSensor",
    "Mhz19Sensor",
    "NmeaSensor",
    "ParseError",
    "Pms5003Sensor",
    "SerialSensor",
    "parse_kv_line",
]
