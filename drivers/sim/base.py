"""Pieces the simulated twins share: a thermal model, a twin's thread, a pseudo-terminal serial device.

Twins are seeded from ``world.rng`` and deterministic for a given seed and
sequence of heater commands. A twin never replaces a driver: it writes bytes
into the pty the driver reads, or drives the driver's mock pins.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

from core.guard import guarded
from drivers.base import Simulator, SimWorld


@dataclass(slots=True)
class ThermalModel:
    """A room as one thermal mass: ``dT/dt = (outside - T) / tau + heating * gain``, plus a little noise.

    With the defaults a room at 18 °C climbs to about 21 °C in an hour with the
    heater on, and sinks back towards ``outside`` when it is off: slow enough to
    look real, fast enough to watch a thermostat cycle in ``--simulate``.
    """

    temperature: float = 18.0
    outside: float = 8.0
    tau_s: float = 4 * 3600.0
    gain_per_s: float = 0.0015
    noise: float = 0.02

    def step(self, dt: float, heating: bool, gauss: Callable[[float, float], float]) -> float:
        drift = (self.outside - self.temperature) / self.tau_s + (self.gain_per_s if heating else 0.0)
        self.temperature += drift * dt + gauss(0.0, self.noise)
        return self.temperature


FIRST_SEND_S = 0.2
"""A twin speaks this soon after start, so ``--simulate`` shows every device at once."""


def twin_rng(world: SimWorld) -> random.Random:
    """A twin's own generator, drawn from the world's at start: twins on different threads never
    share one, so each one's sequence depends only on the seed and the order of the devices."""
    return random.Random(world.rng.getrandbits(64))


def heater_on(world: SimWorld, entity: str | None) -> bool:
    return entity is not None and world.state(entity) is True


def corrupt(data: bytes, rng_random: Callable[[], float], rng_randrange: Callable[[int], int], rate: float) -> bytes:
    """Now and then flip one byte, as a noisy cable does (the parser must count it, not read it)."""
    if not data or rng_random() >= rate:
        return data
    i = rng_randrange(len(data))
    return data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]


class ThreadTwin(Simulator):
    """A twin that runs on a thread of its own until :meth:`stop`: the plumbing every twin shares.

    Subclasses call :meth:`_spawn` from ``start`` and free what they took in :meth:`release`
    (which runs after the thread has ended); loops wait on ``self._stop``, never sleep.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _spawn(self, run: Callable[[], None]) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=guarded(f"sim {self.name}")(run), name=f"sim-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self.release()

    def release(self) -> None:
        """Free files, descriptors or emulators that ``start`` took; the thread has ended."""


class PtyTwin(ThreadTwin):
    """A serial device on a pseudo-terminal, registered in ``world.serial_ports[port]``.

    Every ``interval`` seconds :meth:`produce` is asked for bytes to send;
    :meth:`respond` answers bytes the driver wrote (polled sensors).
    """

    def __init__(self, port: str, name: str, interval: float) -> None:
        super().__init__(name)
        self.port = port
        self.interval = interval
        self._fds: tuple[int, int] | None = None
        self.rng = random.Random(0)

    def produce(self, world: SimWorld, dt: float) -> bytes:
        return b""

    def respond(self, world: SimWorld, request: bytes) -> bytes:
        return b""

    def start(self, world: SimWorld) -> None:
        self.rng = twin_rng(world)
        master, slave = os.openpty()
        self._fds = (master, slave)
        tty.setraw(slave)
        world.serial_ports[self.port] = os.ttyname(slave)
        self._spawn(lambda: self._run(world, master))

    def _run(self, world: SimWorld, master: int) -> None:
        next_at = time.monotonic() + min(self.interval, FIRST_SEND_S)
        while not self._stop.is_set():
            readable, _, _ = select.select([master], [], [], max(0.0, min(0.25, next_at - time.monotonic())))
            if readable:
                try:
                    request = os.read(master, 256)
                except OSError:
                    return
                self._send(master, self.respond(world, request))
            if time.monotonic() >= next_at:
                next_at += self.interval
                self._send(master, self.produce(world, self.interval))

    def _send(self, master: int, data: bytes) -> None:
        if data:
            try:
                os.write(master, data)
            except OSError:
                self._stop.set()

    def release(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds = None
