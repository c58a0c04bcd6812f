"""What the Raspberry Pi's 40-pin header offers, and what each configured device takes from it.

One place for the board knowledge that ``gateway check`` (statically, from
``config.toml``) and ``gateway check --hardware`` (on the device) both use:

* :data:`HEADER`: the 40 physical pins, BOARD number to BCM number (None for
  power and ground); every Pi with a 40-pin header (B+ to Pi 5, Zero) has the
  same layout, BCM 0-27.
* :func:`bcm_number`: a configured ``pin`` (``17``, ``"GPIO17"``, ``"BCM17"``,
  ``"BOARD11"``, ``"J8:11"``, ``"WPI0"``, ``"17"``: the names gpiozero accepts)
  to its BCM number, or a ``ValueError`` that says what would be right.
* :data:`SPI0`, :data:`I2C1`, :data:`UART0`: the buses whose pins the kernel
  takes once they are enabled, with the device node they make and the
  ``config.txt`` line and ``raspi-config`` command that enable them.
* :func:`uses` and :func:`conflicts`: the pins, buses and ports each device
  takes; two devices on one pin, a GPIO device on an enabled bus's pin, one
  serial port twice (a serial sensor or a Modbus RTU line: both own their port).
* :func:`load_pin_factory`: the gpiozero pin factory for ``[gateway]
  pin_factory``, built once, with gpiozero's fallback warnings kept out of the
  log and one :class:`NoPinFactory` error that says how to fix it.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from drivers.base import DeviceConfig

if TYPE_CHECKING:
    from gpiozero import Factory

log = logging.getLogger(__name__)

_P = None  # power or ground
HEADER: dict[int, int | None] = {
    1: _P, 2: _P, 3: 2, 4: _P, 5: 3, 6: _P, 7: 4, 8: 14, 9: _P, 10: 15,
    11: 17, 12: 18, 13: 27, 14: _P, 15: 22, 16: 23, 17: _P, 18: 24, 19: 10, 20: _P,
    21: 9, 22: 25, 23: 11, 24: 8, 25: _P, 26: 7, 27: 0, 28: 1, 29: 5, 30: _P,
    31: 6, 32: 12, 33: 13, 34: _P, 35: 19, 36: 16, 37: 26, 38: 20, 39: _P, 40: 21,
}
"""Physical (BOARD) pin number -> BCM GPIO number; None for 3V3, 5V and ground."""

_POWER = {1: "3V3", 17: "3V3", 2: "5V", 4: "5V"}

GPIO_NUMBERS = range(28)
"""BCM numbers on the header: GPIO0-27 (GPIO0/1 are the HAT ID EEPROM's, usable when no HAT has one)."""

_WPI_BY_BOARD = {
    3: 8, 5: 9, 7: 7, 8: 15, 10: 16, 11: 0, 12: 1, 13: 2, 15: 3, 16: 4, 18: 5, 19: 12, 21: 13,
    22: 6, 23: 14, 24: 10, 26: 11, 27: 30, 28: 31, 29: 21, 31: 22, 32: 26, 33: 23, 35: 24,
    36: 27, 37: 25, 38: 28, 40: 29,
}
WIRINGPI: dict[int, int] = {wpi: bcm for board, wpi in _WPI_BY_BOARD.items() if (bcm := HEADER[board]) is not None}
"""wiringPi number -> BCM number (gpiozero's ``WPIn`` names)."""

_NAME = re.compile(r"^(GPIO|BCM|BOARD|J8:|WPI)?(0|[1-9][0-9]?)$")

PinName = int | str


def bcm_number(pin: PinName) -> int:
    """The BCM number of a configured pin, as gpiozero would resolve it on a 40-pin Pi.

    Raises ``ValueError`` with the installer's fix for anything gpiozero would refuse
    (``99``, ``-3``, ``"seventeen"``) or that is not a GPIO at all (``"BOARD6"``, a ground pin).
    """
    if isinstance(pin, bool):
        raise ValueError(f"{pin!r} is not a GPIO pin: {_SPELLINGS}")
    if isinstance(pin, int):
        if pin in GPIO_NUMBERS:
            return pin
        raise ValueError(f"{pin} is not a GPIO pin of the Raspberry Pi header (BCM 0-27): {_SPELLINGS}")
    match = _NAME.match(pin.strip())
    if match is None:
        raise ValueError(f"{pin!r} is not a pin name gpiozero knows: {_SPELLINGS}")
    prefix, number = match.group(1) or "", int(match.group(2))
    if prefix in ("", "GPIO", "BCM"):
        if number in GPIO_NUMBERS:
            return number
        raise ValueError(f"{pin!r} is not a GPIO pin of the Raspberry Pi header (BCM 0-27): {_SPELLINGS}")
    if prefix == "WPI":
        if number in WIRINGPI:
            return WIRINGPI[number]
        raise ValueError(f"{pin!r} is not a wiringPi pin of the Raspberry Pi header: {_SPELLINGS}")
    if number not in HEADER:
        raise ValueError(f"{pin!r}: the header has physical pins 1-40: {_SPELLINGS}")
    bcm = HEADER[number]
    if bcm is None:
        raise ValueError(f"{pin!r} is a {_POWER.get(number, 'ground')} pin, not a GPIO: {_SPELLINGS}")
    return bcm


_SPELLINGS = "use a BCM number (17) or a gpiozero name ('GPIO17', 'BCM17', 'BOARD11')"


def board_pin(bcm: int) -> int:
    """The physical pin of GPIO ``bcm`` (for messages: 'GPIO17 (pin 11)')."""
    return next(board for board, number in HEADER.items() if number == bcm)


@dataclass(frozen=True, slots=True, eq=False)
class Bus:
    """A hardware bus whose pins the kernel takes once the bus is enabled (one object per bus: compared
    and hashed by identity)."""

    name: str
    pins: dict[int, str]
    """BCM number -> the pin's role on the bus."""
    node: str
    """The device node a driver opens, relative to ``/dev``."""
    enable: str
    """How to enable it: the ``config.txt`` line and the ``raspi-config`` command."""
    group: str
    """The group that may open :attr:`node` on Raspberry Pi OS."""


SPI0 = Bus("SPI0", {7: "CE1", 8: "CE0", 9: "MISO", 10: "MOSI", 11: "SCLK"}, "spidev0.0",
           "add `dtparam=spi=on` to /boot/firmware/config.txt or run `sudo raspi-config nonint do_spi 0`, "
           "then reboot", "spi")
I2C1 = Bus("I2C1", {2: "SDA", 3: "SCL"}, "i2c-1",
           "add `dtparam=i2c_arm=on` to /boot/firmware/config.txt or run `sudo raspi-config nonint do_i2c 0`, "
           "then reboot", "i2c")
UART0 = Bus("UART0", {14: "TXD", 15: "RXD"}, "serial0",
            "add `enable_uart=1` to /boot/firmware/config.txt and turn the serial login console off: "
            "`sudo raspi-config nonint do_serial_cons 1` and `sudo raspi-config nonint do_serial_hw 0`, "
            "then reboot", "dialout")

UART_PORTS = frozenset({"/dev/serial0", "/dev/ttyAMA0", "/dev/ttyS0"})
"""Ports that are the header's UART (GPIO14/15): the primary UART under its alias and its two names."""

ONEWIRE_ENABLE = ("add `dtoverlay=w1-gpio` (GPIO4; `dtoverlay=w1-gpio,gpiopin=N` for another pin) to "
                  "/boot/firmware/config.txt or run `sudo raspi-config nonint do_onewire 0`, then reboot")


@dataclass(frozen=True, slots=True)
class Uses:
    """What one device takes from the board (derived from its validated config)."""

    pins: tuple[tuple[str, PinName], ...] = ()
    """``(key, value)`` for each GPIO pin the device names (``("pin", 22)``)."""
    buses: tuple[Bus, ...] = ()
    spi_select: int | None = None
    """SPI0's chip select (0: CE0, 1: CE1) for an SPI device."""
    serial_port: str | None = None
    onewire_base: str | None = None
    i2c_address: tuple[int, int] | None = None
    """(bus number, 7-bit address) of an I2C chip."""

    @property
    def needs_pin_factory(self) -> bool:
        """GPIO pins or SPI through gpiozero: ``run`` needs a pin factory for this device."""
        return bool(self.pins) or SPI0 in self.buses


def uses(device: DeviceConfig) -> Uses:
    """The pins (every ``pin`` or ``*_pin`` field), buses and ports a device's config names."""
    pins = tuple(
        (name, value) for name in type(device).model_fields
        if (name == "pin" or name.endswith("_pin")) and isinstance(value := getattr(device, name), int | str)
    )
    # Told by the config models themselves (DeviceConfig's methods), so that this module, which ``gateway run``
    # imports, does not import every driver that may hold a bus.
    if (select := device.spi_select()) is not None:  # an MCP3008
        return Uses(pins, (SPI0,), spi_select=select)
    if (port := device.serial_port()) is not None:  # a serial sensor, a Modbus RTU line
        return Uses(pins, (UART0,) if port in UART_PORTS else (), serial_port=port)
    if (at := device.i2c_address()) is not None:
        return Uses(pins, (I2C1,) if at[0] == 1 else (), i2c_address=at)
    if (base := device.onewire_base()) is not None:
        return Uses(pins, onewire_base=base)
    return Uses(pins)


@dataclass(frozen=True, slots=True)
class Conflict:
    """One problem with where a device is wired: located at ``devices[index].key``."""

    index: int
    key: str
    value: object
    message: str


def _who(index: int, device: DeviceConfig) -> str:
    return f"devices[{index}] ({device.id})"


def conflicts(devices: Sequence[DeviceConfig]) -> list[Conflict]:
    """Every wiring problem of the device table at once, in table order.

    A pin gpiozero would refuse; a pin two devices claim; a GPIO pin of a bus that a configured
    device needs (SPI0 for an MCP3008, UART0 for a serial device or a Modbus line on ``/dev/serial0``, I2C1 for an I2C
    chip on bus 1); one SPI chip select, one serial port or one I2C bus+address used twice.
    """
    used = [uses(device) for device in devices]
    buses: dict[int, tuple[Bus, int]] = {}
    for index, use in enumerate(used):
        for bus in use.buses:
            for pin in bus.pins:
                buses.setdefault(pin, (bus, index))
    out = _pin_conflicts(devices, used, buses)
    out += _shared(devices, [(u.spi_select, "spi_device") for u in used],
                   lambda cs, who: f"SPI0 chip select CE{cs} is already used by {who}: "
                                   "give each chip its own (spi_device = 0 or 1)")
    out += _shared(devices, [(u.serial_port, "port") for u in used],
                   lambda port, who: f"{port!r} is already used by {who}: one serial port serves one device")
    out += [replace(c, value=c.value[1]) for c in _shared(  # type: ignore[index]
        devices, [(u.i2c_address, "address") for u in used],
        lambda at, who: f"I2C bus {at[0]} address 0x{at[1]:02X} is already used by {who}: two chips on "
                        "one address answer together; move one with its address pin or jumper, or put "
                        "it on another bus")]
    return sorted(out, key=lambda c: c.index)


def _pin_conflicts(devices: Sequence[DeviceConfig], used: Sequence[Uses],
                   buses: dict[int, tuple[Bus, int]]) -> list[Conflict]:
    out: list[Conflict] = []
    pins: dict[int, int] = {}
    for index, use in enumerate(used):
        for key, value in use.pins:
            try:
                bcm = bcm_number(value)
            except ValueError as exc:
                out.append(Conflict(index, key, value, str(exc)))
                continue
            if bcm in pins:
                other = pins[bcm]
                out.append(Conflict(index, key, value, f"GPIO{bcm} is already used by {_who(other, devices[other])}"))
                continue
            pins[bcm] = index
            if bcm in buses:
                bus, owner = buses[bcm]
                out.append(Conflict(
                    index, key, value,
                    f"GPIO{bcm} is {bus.name}'s {bus.pins[bcm]} pin, which {_who(owner, devices[owner])} needs "
                    f"({bus.name} takes GPIO {', '.join(str(p) for p in sorted(bus.pins))}): choose another pin",
                ))
    return out


def _shared(devices: Sequence[DeviceConfig], claims: Sequence[tuple[object, str]],
            say: Callable[[Any, str], str]) -> list[Conflict]:
    """A resource (a chip select, a port) that a later device claims again."""
    out: list[Conflict] = []
    first: dict[object, int] = {}
    for index, (value, key) in enumerate(claims):
        if value is None:
            continue
        if value in first:
            out.append(Conflict(index, key, value, say(value, _who(first[value], devices[first[value]]))))
        else:
            first[value] = index
    return out


# ---------------------------------------------------------------------------------------------
# Pin factories

FactoryName = Literal["auto", "lgpio", "rpigpio", "pigpio", "native", "mock"]
FACTORIES: dict[str, str] = {
    "lgpio": "gpiozero.pins.lgpio:LGPIOFactory",
    "rpigpio": "gpiozero.pins.rpigpio:RPiGPIOFactory",
    "pigpio": "gpiozero.pins.pigpio:PiGPIOFactory",
    "native": "gpiozero.pins.native:NativeFactory",
    "mock": "gpiozero.pins.mock:MockFactory",
}
"""gpiozero's own factories by the names its ``GPIOZERO_PIN_FACTORY`` uses; ``auto`` tries the first
four in this order (gpiozero's preference: lgpio works on every Pi, the Pi 5 included)."""

AUTO_ORDER = ("lgpio", "rpigpio", "pigpio", "native")

NO_FACTORY_FIX = ("install python3-lgpio (and create the venv with --system-site-packages so it sees it), "
                  "or run with --simulate")


class NoPinFactory(ImportError):
    """No gpiozero pin factory could be built: ``str()`` is one line with the fix and, in brackets,
    why each factory tried did not load (``tried``: name -> reason)."""

    def __init__(self, name: str, tried: dict[str, str]) -> None:
        self.name = name
        self.tried = tried
        self.reasons = "; ".join(f"{factory}: {reason}" for factory, reason in tried.items())
        """``lgpio: ModuleNotFoundError: No module named 'lgpio'; ...``"""
        self.fix = NO_FACTORY_FIX if name in ("auto", "lgpio") else f'set pin_factory = "auto" and {NO_FACTORY_FIX}'
        super().__init__(f"no GPIO pin factory: {self.fix} (tried {self.reasons})")


def load_pin_factory(name: FactoryName | str = "auto") -> tuple[Factory, str]:
    """Build the pin factory ``name`` (``auto``: the one ``GPIOZERO_PIN_FACTORY`` names if set, else the first
    of :data:`AUTO_ORDER` that loads).

    Returns the factory and the name of the one built. Each failure is logged at DEBUG and none
    reaches the log as gpiozero's ``PinFactoryFallback`` warnings (we never call gpiozero's own
    fallback: it warns for every factory it skips). Raises :class:`NoPinFactory` when none loads.
    """
    import importlib

    if name == "auto":
        chosen = os.environ.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
        if chosen in FACTORIES:  # gpiozero's own switch (e.g. ``mock`` for a whole process) keeps working
            name = chosen
    tried: dict[str, str] = {}
    for candidate in AUTO_ORDER if name == "auto" else (name,):
        module_name, cls_name = FACTORIES[candidate].split(":")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gpiozero's own fallback chatter, if any
                factory: Factory = getattr(importlib.import_module(module_name), cls_name)()
        except Exception as exc:  # an ImportError, or the library's own "not a Pi" error
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.debug("pin factory %s does not load: %s", candidate, reason)
            tried[candidate] = reason
            continue
        return factory, candidate
    raise NoPinFactory(name, tried)
