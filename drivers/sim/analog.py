"""The analog inputs' world: an MCP3008/MCP3208 on gpiozero mock pins, and a voltage that wanders.

:class:`McpEmulator` plays the chip's side of the SPI conversation on the same
mock pins the driver (:mod:`drivers.analog`) opens, so gpiozero's real
``MCP3008``/``MCP3208`` code runs in tests and ``--simulate``.
"""

from __future__ import annotations

import threading
from typing import Any

from drivers.analog import SPI_PINS, AnalogConfig
from drivers.base import SimWorld
from drivers.sim.base import ThreadTwin, twin_rng


class _Bit:
    """A mock pin that reads as a bit (``False``/``True``), whatever level a PWM pin holds."""

    def _get_state(self) -> bool:
        return bool(super()._get_state())  # type: ignore[misc]


class McpEmulator:
    """The MCP3xxx end of a software SPI conversation on gpiozero mock pins.

    ``voltages[channel]`` is what the chip sees (0 to ``vref``). Create it before the
    driver starts: it must own the clock and select pins' mock classes.
    """

    def __init__(self, factory: Any, spi_device: int = 0, bits: int = 10, vref: float = 3.3) -> None:
        from gpiozero.pins.mock import (
            MockPWMPin,
            MockSPIClockPin,
            MockSPIDevice,
            MockSPISelectPin,
        )

        clock, mosi, miso, select = SPI_PINS[spi_device]
        pwm = issubclass(factory.pin_class, MockPWMPin)
        # On PWM-capable mock pins (the simulator's) a level is a float; the lines the chip reads
        # carry bits, so gpiozero's own MockSPIDevice.on_clock can read them.
        clock_class = type("ClockPin", (_Bit, MockSPIClockPin, MockPWMPin), {}) if pwm else MockSPIClockPin
        select_class = type("SelectPin", (_Bit, MockSPISelectPin, MockPWMPin), {}) if pwm else MockSPISelectPin
        mosi_class = type("MosiPin", (_Bit, factory.pin_class), {}) if pwm else None
        factory.pin(clock, pin_class=clock_class)
        factory.pin(select, pin_class=select_class)
        factory.pin(mosi, pin_class=mosi_class)
        emulator = self

        class Chip(MockSPIDevice):  # type: ignore[misc]
            def __init__(self) -> None:
                self.clock_pin = factory.pin(clock, pin_class=clock_class)
                self.mosi_pin = factory.pin(mosi)
                self.miso_pin = factory.pin(miso)
                self.select_pin = factory.pin(select, pin_class=select_class)
                self.clock_polarity = self.clock_phase = self.lsb_first = self.select_high = False
                self.bits_per_word = 8
                self.rx_bit = 0
                self.rx_buf: list[int] = []
                self.tx_buf: list[int] = []
                self.state = "idle"
                self.clock_pin.spi_devices.append(self)
                self.select_pin.spi_device = self

            def on_start(self) -> None:
                super().on_start()
                self.state = "idle"

            def on_bit(self) -> None:
                if self.state == "idle" and self.rx_buf[-1]:
                    self.state, self.rx_buf = "mode", []
                elif self.state == "mode":
                    self.state, self.rx_buf = ("single" if self.rx_buf[-1] else "diff"), []
                elif self.state in ("single", "diff") and len(self.rx_buf) == 3:
                    self.tx_word(emulator.code(self.rx_word(), self.state == "diff"), bits + 2)
                    self.state = "result"

        self.vref = vref
        self.bits = bits
        self.voltages = [0.0] * 8
        self._lock = threading.Lock()
        self._chip = Chip()

    def code(self, channel: int, differential: bool) -> int:
        with self._lock:
            volts = self.voltages[channel] - (self.voltages[channel ^ 1] if differential else 0.0)
        volts = min(max(volts, 0.0), self.vref)
        full_scale: int = 2**self.bits - 1
        return round(volts / self.vref * full_scale)

    def set(self, channel: int, volts: float) -> None:
        with self._lock:
            self.voltages[channel] = volts

    def close(self) -> None:
        self._chip.close()


class AnalogTwin(ThreadTwin):
    """A slowly wandering voltage on the configured channel (a level, a light sensor)."""

    def __init__(self, config: AnalogConfig, interval: float = 2.0) -> None:
        super().__init__(config.id)
        self._config = config
        self._interval = interval
        self.emulator: McpEmulator | None = None

    def start(self, world: SimWorld) -> None:
        cfg = self._config
        emulator = self.emulator = McpEmulator(world.pin_factory, cfg.spi_device, cfg.bits)
        rng = twin_rng(world)
        level = 0.5

        def run() -> None:
            nonlocal level
            while not self._stop.wait(self._interval):
                level = min(1.0, max(0.0, level + rng.gauss(0, 0.02)))
                emulator.set(cfg.channel, level * emulator.vref)

        emulator.set(cfg.channel, level * emulator.vref)
        self._spawn(run)

    def release(self) -> None:
        if self.emulator is not None:
            self.emulator.close()
            self.emulator = None
