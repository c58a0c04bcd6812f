"""One owner per I2C bus: every transaction of every device on a bus runs under the bus's one lock.

An I2C bus is shared by all the chips wired to SDA/SCL (a BME280, an SHT31 and
an ADS1115 on one breakout chain). A measurement is a *sequence* of transfers
(write a command, wait for the conversion, read the result); if two drivers'
sequences interleaved, one chip's trigger could land between another chip's
trigger and read. So every driver borrows its bus from :data:`BUSES` (opened at
the first ``acquire``, closed when the last driver releases it at ``stop``) and
wraps one whole measurement in ``with bus.transaction() as dev: ...``.

The device node is a path (``/dev/i2c-1``), resolved through the driver
context's ``resolve_path``: in ``--simulate`` and in tests that maps to the
name of a fake bus :meth:`BusRegistry.attach`-ed here (``drivers/sim/i2c.py``),
so the real driver code talks to a register-level twin of each chip. Any other
path is opened with ``smbus2.SMBus(path)``, imported only then.

Also here: Sensirion's CRC-8 (:func:`crc8`) and the errors a chip driver raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from smbus2 import i2c_msg


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` the chip drivers use (and :class:`drivers.sim.i2c.FakeI2cBus` implements)."""

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...

    def write_byte_data(self, i2c_addr: int, register: int, value: int, force: bool | None = None) -> None: ...

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]: ...

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None: ...

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None: ...

    def close(self) -> None: ...


class CrcError(Exception):
    """A word's CRC did not match: the reading is dropped and counted, never used."""


class Implausible(Exception):
    """The chip answered, but with a value no room, tank or sky can have (a half-reset chip, a bad joint)."""


def crc8(data: bytes | Sequence[int], poly: int = 0x31, init: int = 0xFF) -> int:
    """Sensirion's CRC-8 (SHT3x, SHT4x, SCD4x...): polynomial x^8+x^5+x^4+1 (0x31), init 0xFF, no reflection,
    no final XOR. The datasheet's example: ``crc8(b"\\xbe\\xef") == 0x92``."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def node(bus: int) -> str:
    """The device node of I2C bus ``bus`` (``/dev/i2c-1`` for the header's SDA/SCL, GPIO2/GPIO3)."""
    return f"/dev/i2c-{bus}"


class I2cBus:
    """One open bus and its lock. Hand it out only through :class:`BusRegistry`.

    ``settle(seconds)`` waits for a conversion inside a transaction (``time.sleep`` on a real bus; a
    fake bus converts at once and passes a no-op, so tests and benches never sleep).
    """

    def __init__(self, path: str, handle: SMBusLike, settle: Callable[[float], None] = time.sleep) -> None:
        self.path = path
        self.handle = handle
        self.settle = settle
        self.transactions = 0
        self._lock = threading.Lock()
        self.users = 0

    @contextmanager
    def transaction(self) -> Iterator[SMBusLike]:
        """Hold the bus for one whole measurement (every write, wait and read of it)."""
        with self._lock:
            self.transactions += 1
            yield self.handle


def _open_smbus(path: str) -> SMBusLike:
    from smbus2 import SMBus

    bus: Any = SMBus(path)
    return bus  # type: ignore[no-any-return]


class BusRegistry:
    """Buses by device node: opened once, shared by every driver on them, closed after the last release.

    Fake buses (tests, ``--simulate``, the bench) are :meth:`attach`-ed under a name of their own; they
    stay open until :meth:`detach`, whoever else acquires them.
    """

    def __init__(self, opener: Callable[[str], SMBusLike] = _open_smbus) -> None:
        self._opener = opener
        self._buses: dict[str, I2cBus] = {}
        self._attached: set[str] = set()
        self._lock = threading.Lock()

    def acquire(self, path: str) -> I2cBus:
        """The bus at ``path``, opened if no driver holds it yet; raises ``OSError`` if it cannot be opened."""
        with self._lock:
            bus = self._buses.get(path)
            if bus is None:
                bus = self._buses[path] = I2cBus(path, self._opener(path))
            bus.users += 1
            return bus

    def release(self, bus: I2cBus) -> None:
        """One driver is done with ``bus``; the last one out closes it (idempotent per driver if it forgets its bus)."""
        with self._lock:
            bus.users = max(0, bus.users - 1)
            if bus.users or bus.path in self._attached or self._buses.get(bus.path) is not bus:
                return
            del self._buses[bus.path]
        with suppress(OSError):
            bus.handle.close()

    def attach(self, name: str, handle: SMBusLike, settle: Callable[[float], None] = lambda _s: None) -> I2cBus:
        """Make ``handle`` (a fake bus) the bus drivers get for ``name``."""
        with self._lock:
            bus = self._buses[name] = I2cBus(name, handle, settle)
            self._attached.add(name)
            return bus

    def attached(self, name: str) -> I2cBus | None:
        with self._lock:
            return self._buses.get(name) if name in self._attached else None

    def detach(self, name: str) -> None:
        with self._lock:
            self._attached.discard(name)
            self._buses.pop(name, None)


BUSES = BusRegistry()
"""The process's buses. One per process because the kernel's device node is one per machine."""
