"""I2C sensors: Bosch BME280/BMP280, Sensirion SHT3x/SHT4x, ROHM BH1750, TI ADS1115.

Every chip is polled on a fixed rate (``poll_s``) with one measurement per poll,
held as one transaction on its bus (:mod:`drivers.i2c`: a chip's trigger, wait
and read never interleave with another chip's on the same SDA/SCL). ``bus`` is
the kernel's bus number (1: the header's GPIO2/GPIO3, ``/dev/i2c-1``);
``address`` is the chip's 7-bit address, by default the one its breakout board
ships with (checked against the addresses the chip can have).

Error paths, the same for every chip:

* **NACK / I/O error** (``OSError``, e.g. ``[Errno 121] Remote I/O error``: a loose wire, no pull-ups, a
  wrong address): the device's entities become unavailable, its health notes say ``degraded``, the
  next poll re-initialises the chip; after :data:`FAILURES_BEFORE_RESTART` in a row the driver asks its
  supervisor for a restart, which retries with the supervisor's backoff (1 s doubling to 5 min).
* **CRC mismatch** (SHT3x/SHT4x check every 16-bit word with Sensirion's CRC-8): the reading is dropped and
  counted (``crc_errors``), logged once per run of errors; the next measurement starts with a soft reset.
* **A chip that reset** (a brown-out, a hot-plugged board): the BME280 driver checks, in every measurement,
  the chip id and the ``config`` register it wrote at start (0x00 after a reset) and re-reads the
  calibration and re-writes its settings when either changed (``resets``).
* **Implausible values** (outside the chip's operating range, or the BME280's "no measurement" raw value
  0x80000): dropped and counted (``implausible``), logged once.

Config examples are in ``docs/drivers.md`` ("I2C sensors").
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.entities import Component, EntitySpec
from core.guard import guarded
from core.logonce import LogOnce
from drivers import bosch
from drivers.base import DeviceConfig, Driver, DriverContext, DriverError, Simulator
from drivers.channel import Channel
from drivers.i2c import BUSES, CrcError, I2cBus, Implausible, SMBusLike, crc8, node
from drivers.timing import Periodic, every

log = logging.getLogger(__name__)

FAILURES_BEFORE_RESTART = 5
"""Consecutive failed measurements after which the driver asks its supervisor for a restart."""

Settle = Callable[[float], None]


class I2cConfig(DeviceConfig):
    """What every I2C sensor has: its bus, its address, its poll rate."""

    bus: int = Field(default=1, ge=0, le=31)
    """The kernel's bus number: 1 is the header's SDA (GPIO2, pin 3) / SCL (GPIO3, pin 5)."""
    address: int = 0
    """The chip's 7-bit address (TOML takes hex: ``address = 0x77``); each chip's model sets its default."""
    poll_s: float = Field(default=10.0, ge=0.5, le=3600)
    stale_after: float | None = Field(default=None, gt=0)

    ADDRESSES: ClassVar[tuple[int, ...]] = ()
    WIRING: ClassVar[str] = ""
    """How the installer picks among :data:`ADDRESSES` (an address pin, a solder jumper)."""

    def i2c_address(self) -> tuple[int, int] | None:
        return (self.bus, self.address)

    @field_validator("address", mode="after")
    @classmethod
    def _an_address_the_chip_has(cls, address: int) -> int:
        if cls.ADDRESSES and address not in cls.ADDRESSES:
            have = " or ".join(f"0x{a:02X}" for a in cls.ADDRESSES)
            raise ValueError(f"0x{address:02X} is not an address this chip answers on: {have} ({cls.WIRING})")
        return address


class ClimateConfig(I2cConfig):
    temperature_offset: float = 0.0
    """Calibration, added to every temperature in °C (a chip next to a warm Pi reads high)."""
    humidity_offset: float = 0.0


@dataclass(frozen=True, slots=True)
class Quantity:
    """One entity of a chip: the suffix of its id and what Home Assistant calls it."""

    suffix: str
    unit: str
    device_class: str | None


TEMPERATURE = Quantity("temperature", "°C", "temperature")
HUMIDITY = Quantity("humidity", "%", "humidity")
PRESSURE = Quantity("pressure", "hPa", "pressure")


class I2cSensor(Driver[I2cConfig]):
    """The poll loop, the bus and the error paths every I2C chip shares; a chip adds :meth:`measure`."""

    Config: ClassVar[type[DeviceConfig]] = I2cConfig

    def __init__(self, config: I2cConfig) -> None:
        super().__init__(config)
        self._bus: I2cBus | None = None
        self._poll: Periodic | None = None
        self._ctx: DriverContext | None = None
        self.channels: dict[str, Channel] = {}
        self.counters = {"read_errors": 0, "crc_errors": 0, "implausible": 0, "resets": 0}
        self._failures_in_a_row = 0
        self._last_error: str | None = None
        self._needs_init = True
        self._nack = LogOnce(log)
        self._crc = LogOnce(log)
        self._odd = LogOnce(log)

    # -- what a chip says ---------------------------------------------------------------------

    @abstractmethod
    def quantities(self) -> Sequence[tuple[str, Quantity]]:
        """(entity id, quantity) of each entity, in a stable order."""

    def init(self, dev: SMBusLike, settle: Settle) -> None:
        """Bring the chip to a known state (after start, after an I/O error): read calibration, soft reset..."""

    @abstractmethod
    def measure(self, dev: SMBusLike, settle: Settle) -> dict[str, float]:
        """One measurement, entity id -> value. Raise ``OSError`` (bus), :class:`CrcError` or :class:`Implausible`."""

    @property
    def address(self) -> int:
        return self.config.address

    # -- the shared part ----------------------------------------------------------------------

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec(entity, Component.SENSOR, unit=q.unit, device_class=q.device_class,
                           report_interval=self.config.poll_s) for entity, q in self.quantities()]

    def start(self, ctx: DriverContext) -> None:
        cfg = self.config
        path = ctx.resolve_path(node(cfg.bus))
        try:
            self._bus = BUSES.acquire(path)
        except OSError as exc:
            raise DriverError(f"{self.id}: cannot open I2C bus {cfg.bus} ({node(cfg.bus)}): {exc}") from exc
        self._ctx = ctx
        self._needs_init = True
        self.channels = {entity: Channel(ctx, entity, unit=q.unit, stale_after=cfg.stale_after)
                         for entity, q in self.quantities()}
        self._poll = every(ctx.timers(), cfg.poll_s, guarded(f"{self.id} read")(self.read))

    def read(self) -> None:
        """One poll: a whole measurement under the bus lock, then the values to their channels."""
        bus = self._bus
        if bus is None:
            return
        try:
            with bus.transaction() as dev:
                if self._needs_init:
                    self.init(dev, bus.settle)
                    self._needs_init = False
                values = self.measure(dev, bus.settle)
        except CrcError as exc:
            self.counters["crc_errors"] += 1
            self._needs_init = True  # Sensirion: a soft reset before the next measurement
            self._crc.holds(logging.WARNING, "%s: CRC mismatch at 0x%02X, reading dropped: %s", self.id,
                            self.address, exc)
            return
        except Implausible as exc:
            self.counters["implausible"] += 1
            self._odd.holds(logging.WARNING, "%s: implausible reading dropped: %s", self.id, exc)
            return
        except OSError as exc:
            self._bus_failed(exc)
            return
        self._recovered()
        for entity, value in values.items():
            self.channels[entity].feed(round(value, 3))

    def _bus_failed(self, exc: OSError) -> None:
        self.counters["read_errors"] += 1
        self._failures_in_a_row += 1
        self._needs_init = True
        self._last_error = str(exc)
        reason = f"no answer from 0x{self.address:02X} on I2C bus {self.config.bus}: {exc}"
        self._nack.holds(logging.WARNING, "%s: %s (check wiring, pull-ups and address)", self.id, reason)
        for channel in self.channels.values():
            channel.set_available(False, reason)
        if self._failures_in_a_row == FAILURES_BEFORE_RESTART and self._ctx is not None:
            self._ctx.fail(f"{FAILURES_BEFORE_RESTART} I2C reads failed in a row: {exc}")

    def _recovered(self) -> None:
        self._failures_in_a_row = 0
        self._last_error = None
        self._nack.ended(logging.INFO, "%s: 0x%02X answers again after %d failed reads", self.id, self.address)
        self._crc.ended(logging.INFO, "%s: CRC good again after %d errors", self.id)
        self._odd.ended(logging.INFO, "%s: plausible again after %d dropped readings", self.id)

    def health_notes(self) -> list[str]:
        if self._failures_in_a_row:
            return [f"degraded: {self._failures_in_a_row} I2C reads failed in a row ({self._last_error})"]
        return []

    def stats(self) -> dict[str, int]:
        return {**self.counters, "skipped_polls": self._poll.skipped if self._poll is not None else 0,
                "dropped": sum(c.pipeline.dropped for c in self.channels.values())}

    def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for channel in self.channels.values():
            channel.close()
        if self._bus is not None:
            BUSES.release(self._bus)
            self._bus = None

    def simulator(self) -> Simulator | None:
        from drivers.sim.i2c import I2cTwin

        return I2cTwin(self.config)


def _check_range(what: str, value: float, low: float, high: float) -> float:
    if not low <= value <= high:
        raise Implausible(f"{what} {value:g} outside {low:g}..{high:g}")
    return value


# -- Bosch BME280 / BMP280 ----------------------------------------------------------------------

BME280_ID = 0x60
BMP280_IDS = frozenset({0x56, 0x57, 0x58})
REG_CALIB_TP, REG_ID, REG_RESET, REG_CALIB_H = 0x88, 0xD0, 0xE0, 0xE1
REG_CTRL_HUM, REG_STATUS, REG_CTRL_MEAS, REG_CONFIG, REG_DATA = 0xF2, 0xF3, 0xF4, 0xF5, 0xF7
CONFIG_SENTINEL = 0b101 << 5
"""Written to ``config`` (t_sb = 1000 ms: ignored in forced mode); it reads 0x00 after a reset."""
FORCED_X1 = (0b001 << 5) | (0b001 << 2) | 0b01
"""ctrl_meas: temperature and pressure oversampling x1, forced mode (the datasheet's "weather monitoring")."""
SKIPPED, SKIPPED_H = 0x80000, 0x8000
"""What the data registers hold when no measurement ran (after a reset)."""
BME_WAIT_S = 0.010
"""Forced mode, x1/x1/x1: 9.3 ms at most (datasheet 9.1)."""


class Bme280Config(ClimateConfig):
    driver: Literal["i2c.bme280"]
    address: int = 0x76
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x76, 0x77)
    WIRING: ClassVar[str] = "SDO to GND: 0x76, SDO to 3.3 V: 0x77; many purple breakouts are 0x76, Adafruit's 0x77"


class Bmp280Config(Bme280Config):
    driver: Literal["i2c.bmp280"]  # type: ignore[assignment]


class Bme280(I2cSensor):
    """Temperature, humidity and pressure (BMP280: no humidity), forced mode, the datasheet's integer maths."""

    Config = Bme280Config
    HUMIDITY: ClassVar[bool] = True

    def __init__(self, config: I2cConfig) -> None:
        super().__init__(config)
        self.calibration: bosch.Calibration | None = None
        self.chip_id: int | None = None

    def quantities(self) -> Sequence[tuple[str, Quantity]]:
        kinds = (TEMPERATURE, HUMIDITY, PRESSURE) if self.HUMIDITY else (TEMPERATURE, PRESSURE)
        return [(f"{self.id}_{q.suffix}", q) for q in kinds]

    def init(self, dev: SMBusLike, settle: Settle) -> None:
        chip_id = dev.read_byte_data(self.address, REG_ID)
        expected = {BME280_ID} if self.HUMIDITY else BMP280_IDS | {BME280_ID}
        if chip_id not in expected:
            raise OSError(f"chip id 0x{chip_id:02X} at 0x{self.address:02X} is not a "
                          f"{'BME280 (0x60)' if self.HUMIDITY else 'BMP280 (0x58)'}")
        tp = dev.read_i2c_block_data(self.address, REG_CALIB_TP, 26)
        h = dev.read_i2c_block_data(self.address, REG_CALIB_H, 7) if self.HUMIDITY else None
        self.calibration = bosch.Calibration.parse(tp, h)
        self.chip_id = chip_id
        dev.write_byte_data(self.address, REG_CONFIG, CONFIG_SENTINEL)

    def measure(self, dev: SMBusLike, settle: Settle) -> dict[str, float]:
        chip_id = dev.read_byte_data(self.address, REG_ID)
        if chip_id != self.chip_id or dev.read_byte_data(self.address, REG_CONFIG) != CONFIG_SENTINEL:
            self.counters["resets"] += 1
            log.info("%s: the chip at 0x%02X was reset or replaced: calibration read again", self.id, self.address)
            self.init(dev, settle)
        if self.HUMIDITY:
            dev.write_byte_data(self.address, REG_CTRL_HUM, 0b001)  # humidity x1; takes effect with ctrl_meas
        dev.write_byte_data(self.address, REG_CTRL_MEAS, FORCED_X1)
        settle(BME_WAIT_S)
        for _ in range(5):
            if not dev.read_byte_data(self.address, REG_STATUS) & 0x08:  # measuring
                break
            settle(0.002)
        data = dev.read_i2c_block_data(self.address, REG_DATA, 8 if self.HUMIDITY else 6)
        adc_p = data[0] << 12 | data[1] << 4 | data[2] >> 4
        adc_t = data[3] << 12 | data[4] << 4 | data[5] >> 4
        adc_h = data[6] << 8 | data[7] if self.HUMIDITY else None
        if SKIPPED in (adc_t, adc_p) or adc_h == SKIPPED_H:
            raise Implausible("no measurement in the data registers (the chip reset during the conversion?)")
        assert self.calibration is not None
        out = bosch.compensate(adc_t, adc_p, adc_h, self.calibration)
        cfg = self.config
        assert isinstance(cfg, ClimateConfig)
        values = {f"{self.id}_temperature": _check_range("temperature", out.temperature, -40, 85)
                  + cfg.temperature_offset}
        if out.humidity is not None:
            values[f"{self.id}_humidity"] = min(100.0, max(0.0, out.humidity + cfg.humidity_offset))
        values[f"{self.id}_pressure"] = _check_range("pressure", out.pressure, 300, 1100)
        return values


class Bmp280(Bme280):
    Config = Bmp280Config
    HUMIDITY = False


# -- Sensirion SHT3x / SHT4x --------------------------------------------------------------------

def sensirion_words(data: Sequence[int], count: int) -> list[int]:
    """``count`` 16-bit words, each followed by its CRC-8; :class:`CrcError` on the first mismatch."""
    words = []
    for i in range(count):
        msb, lsb, crc = data[3 * i: 3 * i + 3]
        if crc8((msb, lsb)) != crc:
            raise CrcError(f"word {i} 0x{msb:02X}{lsb:02X}: CRC 0x{crc:02X}, expected 0x{crc8((msb, lsb)):02X}")
        words.append(msb << 8 | lsb)
    return words


def sht_temperature(raw: int) -> float:
    """SHT3x and SHT4x datasheets: T = -45 + 175 * S_T / (2^16 - 1)."""
    return -45 + 175 * raw / 65535


def sht3x_humidity(raw: int) -> float:
    """SHT3x datasheet: RH = 100 * S_RH / (2^16 - 1)."""
    return 100 * raw / 65535


def sht4x_humidity(raw: int) -> float:
    """SHT4x datasheet: RH = -6 + 125 * S_RH / (2^16 - 1), cropped to 0..100 (it may stray beyond)."""
    return min(100.0, max(0.0, -6 + 125 * raw / 65535))


class Sht3xConfig(ClimateConfig):
    driver: Literal["i2c.sht3x"]
    address: int = 0x44
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45)
    WIRING: ClassVar[str] = "ADDR to GND: 0x44, ADDR to 3.3 V: 0x45"


class Sht4xConfig(ClimateConfig):
    driver: Literal["i2c.sht4x"]
    address: int = 0x44
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x44, 0x45, 0x46)
    WIRING: ClassVar[str] = "fixed by the part number: SHT40-AD1B 0x44, -BD1B 0x45, -CD1B 0x46"


class ShtSensor(I2cSensor):
    """Sensirion humidity sensors: a command, a wait, 6 bytes (T, CRC, RH, CRC)."""

    MEASURE: ClassVar[bytes]
    SOFT_RESET: ClassVar[bytes]
    WAIT_S: ClassVar[float]
    RESET_WAIT_S: ClassVar[float] = 0.002

    def quantities(self) -> Sequence[tuple[str, Quantity]]:
        return [(f"{self.id}_{q.suffix}", q) for q in (TEMPERATURE, HUMIDITY)]

    def init(self, dev: SMBusLike, settle: Settle) -> None:
        from smbus2 import i2c_msg

        dev.i2c_rdwr(i2c_msg.write(self.address, self.SOFT_RESET))
        settle(self.RESET_WAIT_S)

    @staticmethod
    @abstractmethod
    def humidity(raw: int) -> float: ...

    def measure(self, dev: SMBusLike, settle: Settle) -> dict[str, float]:
        from smbus2 import i2c_msg

        dev.i2c_rdwr(i2c_msg.write(self.address, self.MEASURE))
        settle(self.WAIT_S)
        reply = i2c_msg.read(self.address, 6)
        dev.i2c_rdwr(reply)
        raw_t, raw_h = sensirion_words(bytes(reply), 2)
        cfg = self.config
        assert isinstance(cfg, ClimateConfig)
        temperature = _check_range("temperature", sht_temperature(raw_t), -40, 125)
        return {f"{self.id}_temperature": temperature + cfg.temperature_offset,
                f"{self.id}_humidity": min(100.0, max(0.0, self.humidity(raw_h) + cfg.humidity_offset))}


class Sht3x(ShtSensor):
    """SHT30/31/35: single shot, high repeatability, no clock stretching (0x2400, 15.5 ms)."""

    Config = Sht3xConfig
    MEASURE = b"\x24\x00"
    SOFT_RESET = b"\x30\xa2"
    WAIT_S = 0.016

    @staticmethod
    def humidity(raw: int) -> float:
        return sht3x_humidity(raw)


class Sht4x(ShtSensor):
    """SHT40/41/45: high precision (0xFD, 8.3 ms)."""

    Config = Sht4xConfig
    MEASURE = b"\xfd"
    SOFT_RESET = b"\x94"
    WAIT_S = 0.009

    @staticmethod
    def humidity(raw: int) -> float:
        return sht4x_humidity(raw)


# -- ROHM BH1750 --------------------------------------------------------------------------------

BH1750_POWER_ON, BH1750_RESET, BH1750_ONE_TIME_H = 0x01, 0x07, 0x20
BH1750_WAIT_S = 0.180
"""One-time H-resolution mode: 120 ms typical, 180 ms at most (datasheet)."""


def bh1750_lux(raw: int) -> float:
    """Datasheet: lux = count / 1.2 at the default measurement time (its example 0x8390 -> 28067 lx)."""
    return raw / 1.2


class Bh1750Config(I2cConfig):
    driver: Literal["i2c.bh1750"]
    address: int = 0x23
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x23, 0x5C)
    WIRING: ClassVar[str] = "ADDR to GND or open: 0x23, ADDR to 3.3 V: 0x5C"


class Bh1750(I2cSensor):
    """Illuminance in lx: power on, one H-resolution measurement (the chip powers down after it), 2 bytes."""

    Config = Bh1750Config

    def quantities(self) -> Sequence[tuple[str, Quantity]]:
        return [(self.id, Quantity("illuminance", "lx", "illuminance"))]

    def measure(self, dev: SMBusLike, settle: Settle) -> dict[str, float]:
        from smbus2 import i2c_msg

        dev.i2c_rdwr(i2c_msg.write(self.address, [BH1750_POWER_ON]))
        dev.i2c_rdwr(i2c_msg.write(self.address, [BH1750_ONE_TIME_H]))
        settle(BH1750_WAIT_S)
        reply = i2c_msg.read(self.address, 2)
        dev.i2c_rdwr(reply)
        msb, lsb = bytes(reply)
        return {self.id: bh1750_lux(msb << 8 | lsb)}


# -- TI ADS1115 ---------------------------------------------------------------------------------

ADS_MUX = {"A0-A1": 0b000, "A0-A3": 0b001, "A1-A3": 0b010, "A2-A3": 0b011,
           "A0": 0b100, "A1": 0b101, "A2": 0b110, "A3": 0b111}
ADS_PGA = {6.144: 0b000, 4.096: 0b001, 2.048: 0b010, 1.024: 0b011, 0.512: 0b100, 0.256: 0b101}
ADS_RATES = {8: 0b000, 16: 0b001, 32: 0b010, 64: 0b011, 128: 0b100, 250: 0b101, 475: 0b110, 860: 0b111}
ADS_CONVERSION, ADS_CONFIG = 0x00, 0x01

AdsInput = Literal["A0", "A1", "A2", "A3", "A0-A1", "A0-A3", "A1-A3", "A2-A3"]


def ads_config_word(mux: str, full_scale: float, rate: int) -> int:
    """The config register for one single-shot conversion (datasheet table 8): OS=1 (start), MUX, PGA,
    MODE=1 (single-shot), DR, comparator off (COMP_QUE=11). A0, ±4.096 V, 128 SPS -> 0xC383."""
    return 1 << 15 | ADS_MUX[mux] << 12 | ADS_PGA[full_scale] << 9 | 1 << 8 | ADS_RATES[rate] << 5 | 0b11


def ads_volts(code: int, full_scale: float) -> float:
    """A conversion (16-bit two's complement) in volts: 0x7FFF = +FS·(2^15-1)/2^15, 0x8000 = -FS."""
    signed = code - 0x10000 if code & 0x8000 else code
    return signed * full_scale / 32768


class AdsChannel(BaseModel):
    """One input of the ADC, one entity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    name: str | None = None
    input: AdsInput
    """A single-ended input (``A0``..``A3``, against GND) or a differential pair (``A0-A1``...)."""
    full_scale: float = 4.096
    """The PGA's range in volts (±): 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256. Never apply more than
    VDD + 0.3 V to an input, whatever the range."""
    scale: float = 1.0
    """The reading reported = volts * scale + offset (a 0-10 V divider of 1/3: scale = 3)."""
    offset: float = 0.0
    unit: str = "V"
    device_class: str | None = None
    """Home Assistant's device class; default ``voltage`` when ``unit`` is ``V``."""

    @field_validator("full_scale")
    @classmethod
    def _a_pga_range(cls, value: float) -> float:
        if value not in ADS_PGA:
            raise ValueError(f"full_scale {value:g} V is not a range of the ADS1115: "
                             f"{', '.join(f'{v:g}' for v in ADS_PGA)}")
        return value

    @property
    def ha_class(self) -> str | None:
        return self.device_class or ("voltage" if self.unit == "V" else None)


class Ads1115Config(I2cConfig):
    driver: Literal["i2c.ads1115"]
    address: int = 0x48
    ADDRESSES: ClassVar[tuple[int, ...]] = (0x48, 0x49, 0x4A, 0x4B)
    WIRING: ClassVar[str] = "ADDR to GND: 0x48, to VDD: 0x49, to SDA: 0x4A, to SCL: 0x4B"
    poll_s: float = Field(default=2.0, ge=0.5, le=3600)
    data_rate: Literal[8, 16, 32, 64, 128, 250, 475, 860] = 128
    """Samples per second of each single-shot conversion (slower = less noise)."""
    channels: list[AdsChannel] = Field(min_length=1, max_length=8)

    @model_validator(mode="after")
    def _distinct_channel_ids(self) -> Ads1115Config:
        ids = [c.id for c in self.channels]
        if len(set(ids)) != len(ids):
            raise ValueError(f"channel ids must differ: {', '.join(sorted({i for i in ids if ids.count(i) > 1}))}")
        return self


class Ads1115(I2cSensor):
    """Each channel is a single-shot conversion in turn, all in one bus transaction per poll."""

    Config = Ads1115Config

    def _channels(self) -> list[AdsChannel]:
        cfg = self.config
        assert isinstance(cfg, Ads1115Config)
        return cfg.channels

    def quantities(self) -> Sequence[tuple[str, Quantity]]:
        return [(c.id, Quantity(c.input, c.unit, c.ha_class)) for c in self._channels()]

    def measure(self, dev: SMBusLike, settle: Settle) -> dict[str, float]:
        cfg = self.config
        assert isinstance(cfg, Ads1115Config)
        out: dict[str, float] = {}
        for channel in cfg.channels:
            word = ads_config_word(channel.input, channel.full_scale, cfg.data_rate)
            dev.write_i2c_block_data(self.address, ADS_CONFIG, [word >> 8, word & 0xFF])
            settle(1 / cfg.data_rate + 0.001)
            for _ in range(5):
                msb, _lsb = dev.read_i2c_block_data(self.address, ADS_CONFIG, 2)
                if msb & 0x80:  # OS = 1: not converting
                    break
                settle(0.001)
            else:
                raise OSError(f"ADS1115 at 0x{self.address:02X} never finished converting {channel.input}")
            msb, lsb = dev.read_i2c_block_data(self.address, ADS_CONVERSION, 2)
            out[channel.id] = ads_volts(msb << 8 | lsb, channel.full_scale) * channel.scale + channel.offset
        return out
