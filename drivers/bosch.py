"""The Bosch BME280/BMP280 compensation formulas, exactly as the datasheets give them.

Pure functions, no I/O: the driver (``drivers/i2c_sensors.py``) feeds them the
calibration words it read from the chip's NVM and the raw ADC values of one
measurement; the simulated chip (``drivers/sim/i2c.py``) inverts them to
produce raw values for a chosen temperature, pressure and humidity.

Two families, both from the datasheet (BME280 DS002 §4.2.3 and §8.1, BMP280
DS001 §3.11.3 and §8.1):

* integer: ``t_fine`` and temperature in 0.01 °C (32-bit), pressure in Pa as
  Q24.8 (64-bit), humidity in %RH as Q22.10 (32-bit). Bosch recommends these;
  the driver uses them, so its readings match Bosch's reference driver to the bit.
* float (double): the same quantities in °C, Pa and %RH; kept for comparison
  and for the datasheet's worked example, which gives both.

The calibration layout (datasheet table 16/18): ``dig_T1..T3`` and ``dig_P1..P9`` are 16-bit
little-endian at 0x88-0x9F (T1 and P1 unsigned); ``dig_H1`` at 0xA1; ``dig_H2..H6`` at 0xE1-0xE7,
with H4 and H5 packed as 12-bit values sharing 0xE5.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Calibration:
    T1: int
    T2: int
    T3: int
    P1: int
    P2: int
    P3: int
    P4: int
    P5: int
    P6: int
    P7: int
    P8: int
    P9: int
    H1: int = 0
    H2: int = 0
    H3: int = 0
    H4: int = 0
    H5: int = 0
    H6: int = 0

    @classmethod
    def parse(cls, tp: bytes | list[int], h: bytes | list[int] | None = None) -> Calibration:
        """From the 26 bytes at 0x88 (0x88-0xA1) and, for a BME280, the 7 bytes at 0xE1 (0xE1-0xE7)."""
        b = bytes(tp)
        if len(b) < 24:
            raise ValueError(f"calibration block is {len(b)} bytes, not 26")

        def u16(i: int) -> int:
            return b[i] | b[i + 1] << 8

        def s16(i: int) -> int:
            v = u16(i)
            return v - 0x10000 if v & 0x8000 else v

        words = dict(T1=u16(0), T2=s16(2), T3=s16(4), P1=u16(6), P2=s16(8), P3=s16(10), P4=s16(12),
                     P5=s16(14), P6=s16(16), P7=s16(18), P8=s16(20), P9=s16(22))
        if h is None:
            return cls(**words)
        e = bytes(h)
        h2 = e[0] | e[1] << 8
        h4 = _s8(e[3]) * 16 | (e[4] & 0x0F)
        h5 = _s8(e[5]) * 16 | (e[4] >> 4)
        return cls(**words, H1=b[25] if len(b) > 25 else 0, H2=h2 - 0x10000 if h2 & 0x8000 else h2,
                   H3=e[2], H4=h4, H5=h5, H6=_s8(e[6]))

    def pack(self) -> tuple[bytes, bytes]:
        """The NVM bytes at 0x88 (26) and 0xE1 (7) that :meth:`parse` reads back (for the simulated chip)."""
        def le(v: int) -> bytes:
            return (v & 0xFFFF).to_bytes(2, "little")

        tp = b"".join(le(v) for v in (self.T1, self.T2, self.T3, self.P1, self.P2, self.P3, self.P4, self.P5,
                                      self.P6, self.P7, self.P8, self.P9)) + bytes([0, self.H1 & 0xFF])
        h = le(self.H2) + bytes([self.H3 & 0xFF, (self.H4 >> 4) & 0xFF,
                                 ((self.H5 & 0x0F) << 4) | (self.H4 & 0x0F), (self.H5 >> 4) & 0xFF, self.H6 & 0xFF])
        return tp, h


def _s8(v: int) -> int:
    return v - 0x100 if v & 0x80 else v


# -- integer (the datasheet's recommended code) ---------------------------------------------------

def t_fine_int(adc_t: int, c: Calibration) -> int:
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    var2 = (((((adc_t >> 4) - c.T1) * ((adc_t >> 4) - c.T1)) >> 12) * c.T3) >> 14
    return var1 + var2


def temperature_int(t_fine: int) -> int:
    """Temperature in 0.01 °C (``5123`` = 51.23 °C)."""
    return (t_fine * 5 + 128) >> 8


def _cdiv(a: int, b: int) -> int:
    """C's integer division (truncates towards zero; Python's ``//`` floors)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def pressure_int64(adc_p: int, t_fine: int, c: Calibration) -> int:
    """Pressure in Pa as Q24.8 (``24674867`` = 24674867/256 = 96386.2 Pa); 0 if the calibration is unusable."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * c.P6
    var2 = var2 + ((var1 * c.P5) << 17)
    var2 = var2 + (c.P4 << 35)
    var1 = ((var1 * var1 * c.P3) >> 8) + ((var1 * c.P2) << 12)
    var1 = (((1 << 47) + var1) * c.P1) >> 33
    if var1 == 0:
        return 0  # avoid a division by zero
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.P7 << 4)


def humidity_int(adc_h: int, t_fine: int, c: Calibration) -> int:
    """Relative humidity in %RH as Q22.10 (``47445`` = 47445/1024 = 46.333 %RH)."""
    v = t_fine - 76800
    v = (((((adc_h << 14) - (c.H4 << 20) - (c.H5 * v)) + 16384) >> 15)
         * (((((((v * c.H6) >> 10) * (((v * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192) >> 14))
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    v = max(0, min(v, 419430400))
    return v >> 12


# -- floating point -------------------------------------------------------------------------------

def t_fine_float(adc_t: int, c: Calibration) -> float:
    var1 = (adc_t / 16384.0 - c.T1 / 1024.0) * c.T2
    var2 = (adc_t / 131072.0 - c.T1 / 8192.0) * (adc_t / 131072.0 - c.T1 / 8192.0) * c.T3
    return var1 + var2


def pressure_float(adc_p: int, t_fine: float, c: Calibration) -> float:
    """Pressure in Pa; 0.0 if the calibration is unusable."""
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * c.P6 / 32768.0
    var2 = var2 + var1 * c.P5 * 2.0
    var2 = var2 / 4.0 + c.P4 * 65536.0
    var1 = (c.P3 * var1 * var1 / 524288.0 + c.P2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * c.P1
    if var1 == 0.0:
        return 0.0
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = c.P9 * p * p / 2147483648.0
    var2 = p * c.P8 / 32768.0
    return p + (var1 + var2 + c.P7) / 16.0


def humidity_float(adc_h: int, t_fine: float, c: Calibration) -> float:
    h = t_fine - 76800.0
    h = (adc_h - (c.H4 * 64.0 + c.H5 / 16384.0 * h)) * (
        c.H2 / 65536.0 * (1.0 + c.H6 / 67108864.0 * h * (1.0 + c.H3 / 67108864.0 * h)))
    h = h * (1.0 - c.H1 * h / 524288.0)
    return max(0.0, min(h, 100.0))


@dataclass(frozen=True, slots=True)
class Compensated:
    temperature: float
    """°C"""
    pressure: float
    """hPa"""
    humidity: float | None
    """%RH; None for a BMP280."""


def compensate(adc_t: int, adc_p: int, adc_h: int | None, c: Calibration) -> Compensated:
    """One measurement through the integer formulas, in the units the gateway reports (°C, hPa, %RH)."""
    t_fine = t_fine_int(adc_t, c)
    humidity = None if adc_h is None else humidity_int(adc_h, t_fine, c) / 1024
    return Compensated(temperature_int(t_fine) / 100, pressure_int64(adc_p, t_fine, c) / 25600, humidity)
