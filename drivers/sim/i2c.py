"""A fake I2C bus whose chips answer like the real ones, register by register.

:class:`FakeI2cBus` implements the part of ``smbus2.SMBus`` the drivers use
(``read_byte_data``, ``write_byte_data``, ``read_i2c_block_data``,
``write_i2c_block_data``, ``i2c_rdwr`` with ``i2c_msg``). Each chip holds a
physical value (°C, %RH, hPa, lx, V) that tests or the twin set, and produces
the raw registers the real chip would: the BME280 holds the calibration NVM and
finds the ADC values that the datasheet's compensation maps to the physical
value (by bisection over the datasheet's own integer formulas: they are monotonic in each ADC
value); the Sensirion chips send each word with its CRC-8.

Faults to inject: :meth:`FakeI2cBus.nack` (the next N transfers to an address
fail with ``[Errno 121] Remote I/O error``, as the Pi's controller reports a
NACK), a chip's ``corrupt_crc`` (the next reading's CRC is wrong) and
``reset()`` (a power-on reset: registers back to their defaults).

:class:`I2cTwin` puts a chip on a fake bus per bus number for ``--simulate``
(registered in :data:`drivers.i2c.BUSES` and ``world.files``, so the real
driver opens it) and moves its values slowly.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from drivers import bosch
from drivers.base import SimWorld
from drivers.i2c import BUSES, crc8, node
from drivers.sim.base import ThermalModel, ThreadTwin, twin_rng

if TYPE_CHECKING:
    from smbus2 import i2c_msg

    from drivers.i2c_sensors import I2cConfig

I2C_M_RD = 0x0001

DATASHEET_CALIBRATION = bosch.Calibration(
    T1=27504, T2=26435, T3=-1000, P1=36477, P2=-10685, P3=3024, P4=2855, P5=140, P6=-7, P7=15500, P8=-14600,
    P9=6000, H1=75, H2=362, H3=0, H4=313, H5=50, H6=30,
)
"""T and P: the BMP280 datasheet's worked example (§3.12); H: typical values of a BME280's NVM
(Bosch publishes no humidity example)."""


def nack() -> OSError:
    return OSError(errno.EREMOTEIO, os.strerror(errno.EREMOTEIO))


class FakeChip:
    """A chip on the fake bus. Register chips override :meth:`read`/:meth:`write`; command chips
    :meth:`command`/:meth:`reply`."""

    def read(self, register: int, length: int) -> list[int]:
        raise nack()

    def write(self, register: int, data: Sequence[int]) -> None:
        raise nack()

    def command(self, data: bytes) -> None:
        """A plain write (no register): ``i2c_rdwr(i2c_msg.write(...))``."""
        if data:
            self.write(data[0], list(data[1:]))

    def reply(self, length: int) -> bytes:
        """A plain read: ``i2c_rdwr(i2c_msg.read(...))``."""
        raise nack()

    def reset(self) -> None:
        """A power-on reset."""


class FakeI2cBus:
    """The bus: chips by address, NACK faults, and a count of transfers (the bench's figure)."""

    def __init__(self) -> None:
        self.chips: dict[int, FakeChip] = {}
        self.transfers = 0
        self.closed = False
        self._nacks: dict[int, int] = {}
        self._lock = threading.Lock()
        self.log: list[tuple[int, str]] | None = None
        """When a list: every transfer as (address, "r"/"w") in order (for the interleaving test)."""

    def nack(self, address: int, times: int = 1) -> None:
        """The next ``times`` transfers to ``address`` are not acknowledged."""
        self._nacks[address] = self._nacks.get(address, 0) + times

    def _chip(self, address: int, what: str) -> FakeChip:
        with self._lock:
            self.transfers += 1
            if self.log is not None:
                self.log.append((address, what))
            if self._nacks.get(address):
                self._nacks[address] -= 1
                raise nack()
        chip = self.chips.get(address)
        if chip is None or self.closed:
            raise nack()
        return chip

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._chip(i2c_addr, "r").read(register, 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None:
        self._chip(i2c_addr, "w").write(register, [value])

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int, force: bool | None = None) -> list[int]:
        return self._chip(i2c_addr, "r").read(register, length)

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None:
        self._chip(i2c_addr, "w").write(register, list(data))

    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        """The address alone, no data (``i2cdetect``'s probe): acknowledged by any chip there."""
        self._chip(i2c_addr, "w")

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        for msg in i2c_msgs:
            if msg.flags & I2C_M_RD:
                data = self._chip(msg.addr, "r").reply(msg.len)
                ctypes.memmove(msg.buf, data, min(len(data), msg.len))
            else:
                self._chip(msg.addr, "w").command(bytes(msg))

    def close(self) -> None:
        self.closed = True


def _bisect(lo: int, hi: int, value: Callable[[int], float], target: float, rising: bool = True) -> int:
    """The integer in [lo, hi] whose ``value`` is nearest ``target`` (``value`` monotonic)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (value(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda x: abs(value(x) - target))


class Bme280Chip(FakeChip):
    """Registers of a BME280 (``humidity=None``: a BMP280, chip id 0x58) in forced mode."""

    def __init__(self, temperature: float = 21.0, pressure: float = 1013.25, humidity: float | None = 45.0,
                 calibration: bosch.Calibration = DATASHEET_CALIBRATION, chip_id: int | None = None) -> None:
        self.temperature = temperature
        self.pressure = pressure
        self.humidity = humidity
        self.calibration = calibration
        self.chip_id = chip_id if chip_id is not None else (0x60 if humidity is not None else 0x58)
        self.regs = bytearray(256)
        self.conversions = 0
        self._raw: tuple[tuple[float, float, float | None], tuple[int, int, int | None]] | None = None
        self.reset()

    def reset(self) -> None:
        tp, h = self.calibration.pack()
        self.regs[:] = bytes(256)
        self.regs[0x88:0x88 + 26] = tp
        self.regs[0xE1:0xE1 + 7] = h
        self.regs[0xD0] = self.chip_id
        self.regs[0xF7:0xFF] = bytes([0x80, 0, 0, 0x80, 0, 0, 0x80, 0])  # "skipped"

    def raw(self) -> tuple[int, int, int | None]:
        """The ADC values that the datasheet's integer compensation turns into the chip's physical values."""
        wanted = (self.temperature, self.pressure, self.humidity)
        if self._raw is not None and self._raw[0] == wanted:
            return self._raw[1]
        c = self.calibration
        adc_t = _bisect(0, 0xFFFFF, lambda a: bosch.temperature_int(bosch.t_fine_int(a, c)) / 100, self.temperature)
        t_fine = bosch.t_fine_int(adc_t, c)
        adc_p = _bisect(0, 0xFFFFF, lambda a: bosch.pressure_int64(a, t_fine, c) / 25600, self.pressure,
                        rising=False)
        adc_h = None
        if self.humidity is not None:
            humidity = self.humidity
            adc_h = _bisect(0, 0xFFFF, lambda a: bosch.humidity_int(a, t_fine, c) / 1024, humidity)
        self._raw = (wanted, (adc_t, adc_p, adc_h))
        return adc_t, adc_p, adc_h

    def read(self, register: int, length: int) -> list[int]:
        return list(self.regs[register:register + length])

    def write(self, register: int, data: Sequence[int]) -> None:
        for offset, value in enumerate(data):
            reg = register + offset
            if reg == 0xE0:
                if value == 0xB6:
                    self.reset()
                continue
            if reg in (0xF2, 0xF4, 0xF5):
                self.regs[reg] = value
            if reg == 0xF4 and value & 0b11 in (0b01, 0b10):
                self._convert()
                self.regs[0xF4] &= ~0b11 & 0xFF  # forced mode ends in sleep

    def _convert(self) -> None:
        self.conversions += 1
        adc_t, adc_p, adc_h = self.raw()
        self.regs[0xF7:0xFA] = bytes([adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0xF) << 4])
        self.regs[0xFA:0xFD] = bytes([adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0xF) << 4])
        if adc_h is not None and self.regs[0xF2] & 0b111:
            self.regs[0xFD:0xFF] = bytes([adc_h >> 8, adc_h & 0xFF])


class ShtChip(FakeChip):
    """A Sensirion SHT3x (``kind="sht3x"``) or SHT4x: commands in, 6 bytes with CRCs out."""

    def __init__(self, temperature: float = 21.0, humidity: float = 45.0, kind: str = "sht3x") -> None:
        self.temperature = temperature
        self.humidity = humidity
        self.kind = kind
        self.corrupt_crc = 0
        """The next N readings carry a wrong CRC on their humidity word."""
        self.soft_resets = 0
        self._pending: bytes | None = None

    def command(self, data: bytes) -> None:
        if data in (b"\x30\xa2", b"\x94"):
            self.soft_resets += 1
            self._pending = None
        elif data in (b"\x24\x00", b"\xfd"):
            self._pending = self._sample()
        else:
            raise nack()

    def _sample(self) -> bytes:
        raw_t = round((self.temperature + 45) * 65535 / 175)
        sht3x = self.kind == "sht3x"
        raw_h = round(self.humidity * 65535 / 100 if sht3x else (self.humidity + 6) * 65535 / 125)
        out = b""
        for i, word in enumerate((max(0, min(raw_t, 0xFFFF)), max(0, min(raw_h, 0xFFFF)))):
            pair = bytes([word >> 8, word & 0xFF])
            crc = crc8(pair)
            if i == 1 and self.corrupt_crc:
                self.corrupt_crc -= 1
                crc ^= 0x01
            out += pair + bytes([crc])
        return out

    def reply(self, length: int) -> bytes:
        if self._pending is None:
            raise nack()  # no measurement ready: the chip does not acknowledge its read header
        data, self._pending = self._pending, None
        return data[:length]

    def reset(self) -> None:
        self._pending = None


class Bh1750Chip(FakeChip):
    def __init__(self, lux: float = 300.0) -> None:
        self.lux = lux
        self.powered = False
        self._result: int | None = None

    def command(self, data: bytes) -> None:
        for op in data:
            if op == 0x01:
                self.powered = True
            elif op == 0x00:
                self.powered = False
            elif op in (0x20, 0x23) and self.powered:
                self._result = max(0, min(round(self.lux * 1.2), 0xFFFF))
                self.powered = False  # one-time modes power down after the measurement

    def reply(self, length: int) -> bytes:
        if self._result is None:
            raise nack()
        return self._result.to_bytes(2, "big")[:length]

    def reset(self) -> None:
        self.powered, self._result = False, None


class Ads1115Chip(FakeChip):
    """The ADC: voltages on A0..A3 (volts), a config register, a conversion register."""

    FULL_SCALES = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
    PAIRS = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))

    def __init__(self, volts: Sequence[float] = (0.0, 0.0, 0.0, 0.0)) -> None:
        self.volts = list(volts)
        self.config = 0x8583  # the datasheet's reset value
        self.conversion = 0

    def write(self, register: int, data: Sequence[int]) -> None:
        if register != 0x01 or len(data) != 2:
            return
        self.config = (data[0] << 8 | data[1]) & 0x7FFF | 0x8000  # converted at once: OS reads 1
        if data[0] & 0x80:
            positive, negative = self.PAIRS[(self.config >> 12) & 0b111]
            volts = self.volts[positive] - (self.volts[negative] if negative is not None else 0.0)
            full_scale = self.FULL_SCALES[(self.config >> 9) & 0b111]
            code = max(-32768, min(math.floor(volts / full_scale * 32768), 32767))
            self.conversion = code & 0xFFFF

    def read(self, register: int, length: int) -> list[int]:
        word = self.conversion if register == 0x00 else self.config
        return list(word.to_bytes(2, "big"))[:length]

    def reset(self) -> None:
        self.config, self.conversion = 0x8583, 0


def chip_for(config: I2cConfig) -> FakeChip:
    """The simulated chip a configured device talks to."""
    driver = config.driver
    if driver == "i2c.bme280":
        return Bme280Chip()
    if driver == "i2c.bmp280":
        return Bme280Chip(humidity=None)
    if driver in ("i2c.sht3x", "i2c.sht4x"):
        return ShtChip(kind=driver.removeprefix("i2c."))
    if driver == "i2c.bh1750":
        return Bh1750Chip()
    if driver == "i2c.ads1115":
        return Ads1115Chip((1.2, 2.5, 0.8, 3.0))
    raise ValueError(f"no simulated chip for {driver!r}")


_names = itertools.count(1)


class I2cTwin(ThreadTwin):
    """A device's chip on the fake bus of its bus number; its values drift like a room's, or a day's light."""

    def __init__(self, config: I2cConfig, interval: float = 5.0) -> None:
        super().__init__(config.id)
        self._config = config
        self._interval = interval
        self._bus: FakeI2cBus | None = None
        self._own_name: str | None = None
        self.chip = chip_for(config)

    def start(self, world: SimWorld) -> None:
        path = node(self._config.bus)
        name = world.files.get(path)
        attached = BUSES.attached(name) if name is not None else None
        if attached is None or not isinstance(attached.handle, FakeI2cBus):
            fake = FakeI2cBus()
            name = self._own_name = f"sim-i2c-{self._config.bus}-{next(_names)}"
            BUSES.attach(name, fake)
            world.files[path] = name
        else:
            fake = attached.handle
        self._bus = fake
        fake.chips[self._config.address] = self.chip
        rng = twin_rng(world)
        room = ThermalModel(temperature=20.0)
        chip = self.chip
        ticks = itertools.count()

        def tick() -> None:
            t = room.step(self._interval, False, rng.gauss)
            if isinstance(chip, Bme280Chip):
                chip.temperature, chip.pressure = t, 1013.0 + rng.gauss(0.0, 0.3)
                if chip.humidity is not None:
                    chip.humidity = max(0.0, min(100.0, 45.0 + rng.gauss(0.0, 0.5)))
            elif isinstance(chip, ShtChip):
                chip.temperature, chip.humidity = t, max(0.0, min(100.0, 50.0 + rng.gauss(0.0, 0.5)))
                if rng.random() < 0.02:
                    chip.corrupt_crc += 1
            elif isinstance(chip, Bh1750Chip):
                chip.lux = 300.0 + 250.0 * math.sin(next(ticks) / 60)
            elif isinstance(chip, Ads1115Chip):
                chip.volts = [max(0.0, v + rng.gauss(0.0, 0.01)) for v in chip.volts]

        def run() -> None:
            while not self._stop.wait(self._interval):
                tick()

        tick()
        self._spawn(run)

    def release(self) -> None:
        if self._bus is not None:
            self._bus.chips.pop(self._config.address, None)
            self._bus = None
        if self._own_name is not None:
            BUSES.detach(self._own_name)
            self._own_name = None
