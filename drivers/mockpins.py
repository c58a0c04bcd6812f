"""A gpiozero mock pin factory for ``--simulate`` and tests that also does PWM and SPI.

Use :func:`sim_pin_factory` wherever a ``MockFactory`` is wanted:

* its default pin class is ``MockPWMPin``, so PWM-dimmed lights and buzzers run;
* its software SPI honours the injected factory. gpiozero 2.0.1's
  ``SPISoftwareBus.__init__`` calls ``Device.__init__()`` without the factory and
  so reaches for gpiozero's *global* default factory (on a laptop: fallback
  warnings, then an error). The two small classes below are gpiozero's own
  with that one call fixed; on a Pi hardware SPI (spidev) never goes there.
"""

from __future__ import annotations

from threading import RLock
from typing import Any

from gpiozero import Device, InputDevice, OutputDevice
from gpiozero.mixins import SharedMixin
from gpiozero.pins.mock import MockFactory, MockPWMPin
from gpiozero.pins.spi import SPISoftware, SPISoftwareBus


class _Bus(SPISoftwareBus):  # type: ignore[misc]
    def __init__(self, clock_pin: Any, mosi_pin: Any, miso_pin: Any, *, pin_factory: Any) -> None:
        self.lock = None
        self.clock = self.mosi = self.miso = None
        Device.__init__(self, pin_factory=pin_factory)  # the fix: gpiozero passes no factory here
        self.lock = RLock()
        try:
            self.clock = OutputDevice(clock_pin, active_high=True, pin_factory=pin_factory)
            if mosi_pin is not None:
                self.mosi = OutputDevice(mosi_pin, pin_factory=pin_factory)
            if miso_pin is not None:
                self.miso = InputDevice(miso_pin, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise


class _SoftSPI(SPISoftware):  # type: ignore[misc]
    def __init__(self, clock_pin: Any, mosi_pin: Any, miso_pin: Any, select_pin: Any, *, pin_factory: Any) -> None:
        self._bus = None
        self._select = None
        SPISoftware.__bases__[0].__init__(self, pin_factory=pin_factory)
        try:
            self._clock_phase = False
            self._lsb_first = False
            self._bits_per_word = 8
            self._bus = _Bus(clock_pin, mosi_pin, miso_pin, pin_factory=pin_factory)
            self._select = OutputDevice(select_pin, active_high=False, pin_factory=pin_factory)
        except BaseException:
            self.close()
            raise


class _SoftSPIShared(SharedMixin, _SoftSPI):  # type: ignore[misc]
    @classmethod
    def _shared_key(cls, clock_pin: Any, mosi_pin: Any, miso_pin: Any, select_pin: Any, pin_factory: Any) -> Any:
        return (clock_pin, select_pin)


class SimPinFactory(MockFactory):  # type: ignore[misc]
    def _get_spi_class(self, shared: bool, hardware: bool) -> type:
        return _SoftSPIShared if shared else _SoftSPI


def sim_pin_factory(pin_class: type = MockPWMPin) -> Any:
    """Mock pins with PWM and a working software SPI; see the module docstring.

    ``pin_class`` must be ``MockPWMPin`` or a subclass (PWM lights need it).
    """
    if not issubclass(pin_class, MockPWMPin):
        raise TypeError("sim_pin_factory needs MockPWMPin or a subclass")
    return SimPinFactory(pin_class=pin_class)
