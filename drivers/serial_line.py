"""Serial sensors: ``key=value`` and JSON lines, NMEA 0183 GPS, PMS5003 dust, MH-Z19 CO2.

Each driver is a :class:`~drivers.protocols.Parser` (pure, tested alone) behind
one :class:`~drivers.serial_link.SerialLink` (the reader thread, reconnect with
backoff). ``fields`` maps what the parser reports to entities, each with its
unit, linear scaling and its own conditioning steps. A malformed line or a
frame with a bad checksum is counted (``driver.counters``), never a reading,
never a crash. A port that vanishes makes every entity unavailable until
readings flow again; so does a sensor silent for longer than ``stale_after``.
Lines may end with CR, LF or CRLF. While its port is away the device shows
``waiting for port`` in ``gateway status`` and in the health report.

A device sending far beyond its declared rate (more than ``max_lines_per_s``;
by default :data:`FLOOD_FACTOR` lines per ``report_interval``, at least
:data:`FLOOD_FACTOR` a second, or :data:`DEFAULT_MAX_LINES_PER_S` when no
interval is declared) is read at the port's pace, its readings coalesced to
the newest per read, and flagged in health: ``flooding: N lines/s, expected ≤ M``.

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

import math
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from typing_extensions import TypeVar

from core.entities import Component, EntitySpec
from core.errors import did_you_mean
from core.fields import empty_list
from drivers.base import DeviceConfig, Driver, DriverContext, Simulator
from drivers.channel import Channel, feed_read
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
)
from drivers.serial_link import SerialLink
from drivers.timing import Periodic, every

FLOOD_FACTOR = 20
"""How far beyond its declared rate a device may send before it counts as flooding."""

DEFAULT_MAX_LINES_PER_S = 2_000
"""Without a ``report_interval``: more short lines a second than a 115200-baud line carries is a flood
(a stream of 1,000 readings a second is a legitimate, delivered-whole use)."""


class FieldConfig(BaseModel):
    # defer_build: validated inside the house's config, whose validator holds this schema (no second build)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    entity: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    unit: str | None = None
    """Defaults to the protocol's unit for known fields (e.g. ppm for MH-Z19 ``co2``)."""
    device_class: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    """Reported value = raw * scale + offset."""
    conditioning: list[NumericStep] = Field(default_factory=empty_list)


class SerialConfig(DeviceConfig):
    port: str = Field(min_length=1)
    """A device path (prefer ``/dev/serial/by-id/...``) or a pyserial URL (``socket://host:port``)."""
    baudrate: int = Field(default=9600, gt=0)
    fields: dict[str, FieldConfig] = Field(min_length=1)
    report_interval: float | None = Field(default=None, gt=0)
    """How often the device sends, in seconds, when known (the hub marks it stale after that)."""
    stale_after: float | None = Field(default=None, gt=0)
    """Entities become unavailable when nothing was received for this many seconds."""
    max_lines_per_s: float | None = Field(default=None, gt=0)
    """Lines (or frames) a second beyond which the device is flagged as flooding; default from
    ``report_interval`` (see the module docstring)."""
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
                raise ValueError(f"unknown field {name!r}{did_you_mean(name, known)} "
                                 f"(this sensor reports: {', '.join(known)})")
        return fields

    def serial_port(self) -> str | None:
        return self.port


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
        self._ctx: DriverContext | None = None
        self._mapped: dict[str, tuple[Channel, float, float]] = {}
        """A field the device reports -> its channel, scale and offset (built at start)."""

    @property
    def counters(self) -> ParserCounters:
        return self.parser.counters

    @property
    def malformed(self) -> int:
        return self.parser.counters.malformed + self.parser.counters.bad_checksum

    def entities(self) -> Sequence[EntitySpec]:
        return [self._spec(name, f) for name, f in self.config.fields.items()]

    @property
    def waiting_for_port(self) -> bool:
        """Started, but its port is not open now (not plugged in, or failed and being retried):
        ``gateway status`` says ``waiting for port`` rather than ``running``
        (:class:`drivers.supervision.WaitsForPort`)."""
        link = self.link
        return link is not None and not link.connected

    @property
    def expected_rate(self) -> float:
        """Lines (or frames) a second beyond which this device floods."""
        cfg = self.config
        if cfg.max_lines_per_s is not None:
            return cfg.max_lines_per_s
        if cfg.report_interval is None:
            return DEFAULT_MAX_LINES_PER_S
        return math.ceil(FLOOD_FACTOR * max(1.0, 1.0 / cfg.report_interval))

    def health_notes(self) -> list[str]:
        """What health shows besides the status (:class:`drivers.supervision.HasHealthNotes`)."""
        link = self.link
        if link is None or not link.flooding:
            return []
        return [f"flooding: {link.rate} lines/s, expected ≤ {self.expected_rate:g}"]

    def stats(self) -> dict[str, int]:
        """The parser's and the port's counters; once the device has flooded, the flood's figures too
        (``lines_per_s``, ``expected_lines_per_s``, ``flooding`` 0/1, ``coalesced_lines``, and ``unparsed_lines``:
        those of them only counted, not parsed)."""
        c = self.parser.counters
        link = self.link
        stats = {
            "records": c.records, "malformed": c.malformed, "bad_checksum": c.bad_checksum,
            "discarded_bytes": c.discarded_bytes,
            "port_opens": link.opens if link is not None else 0,
            "port_failures": link.failures if link is not None else 0,
            "dropped": sum(ch.pipeline.dropped for ch in self.channels.values()),
        }
        if link is not None and (link.flooding or link.coalesced):
            stats |= {"lines_per_s": link.rate, "expected_lines_per_s": math.ceil(self.expected_rate),
                      "flooding": int(link.flooding), "coalesced_lines": link.coalesced, "unparsed_lines": c.unparsed}
        return stats

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
        self._ctx = ctx
        self.channels = {
            name: Channel(ctx, f.entity, unit=self._spec(name, f).unit, steps=f.conditioning,
                          stale_after=cfg.stale_after)
            for name, f in cfg.fields.items()
        }
        self._mapped = {name: (self.channels[name], f.scale, f.offset) for name, f in cfg.fields.items()}
        self.link = SerialLink(
            self.id, cfg.port, baudrate=cfg.baudrate, open_serial=ctx.open_serial, parser=self.parser,
            on_records=self._records, on_lost=self._lost, on_fatal=ctx.fail,
            retry_min_s=cfg.retry_min_s, retry_max_s=cfg.retry_max_s, max_rate=self.expected_rate,
        )
        self.link.start()
        self._start_polling(ctx)

    def _start_polling(self, ctx: DriverContext) -> None:
        """Polled sensors send a request on a fixed rate here."""

    def _records(self, records: list[Record]) -> None:
        """One read's records: their fields' values, scaled, fed to the channels as one batch (:func:`feed_read`)."""
        if self._ctx is not None:
            feed_read(self._ctx, self.channels.values(), self._values(records))

    def _values(self, records: list[Record]) -> Iterator[tuple[Channel, float]]:
        mapped = self._mapped
        for record in records:
            for name, raw in record.items():
                field = mapped.get(name)
                if field is not None:
                    channel, scale, offset = field
                    yield channel, raw * scale + offset

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
        from drivers.sim.serial_line import LineTwin, kv_line

        return LineTwin(self.config, kv_line)


class JsonLinesSensor(SerialSensor[SerialJsonConfig]):
    """One JSON object per line; ``fields`` keys are dotted paths (``"env.temp"``)."""

    Config = SerialJsonConfig

    def simulator(self) -> Simulator | None:
        from drivers.sim.serial_line import LineTwin, json_line

        return LineTwin(self.config, json_line)


class NmeaSensor(SerialSensor[SerialNmeaConfig]):
    """A GPS receiver speaking NMEA 0183 (GGA and RMC read, checksums verified)."""

    Config = SerialNmeaConfig

    def simulator(self) -> Simulator | None:
        from drivers.sim.serial_line import NmeaTwin

        return NmeaTwin(self.config)


class Pms5003Sensor(SerialSensor[SerialPms5003Config]):
    """Plantower PMS5003 particulate sensor in its default active mode (a frame every second or so)."""

    Config = SerialPms5003Config

    def simulator(self) -> Simulator | None:
        from drivers.sim.serial_line import Pms5003Twin

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
        from drivers.sim.serial_line import Mhz19Twin

        return Mhz19Twin(self.config)


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
