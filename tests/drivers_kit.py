"""Helpers for the driver tests: a recording ``post``, a driver context on mock pins, a pty pair."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import serial
from gpiozero.pins.mock import MockFactory

from core.clock import VirtualClock
from core.events import Event, EventFactory, Kind
from drivers.base import DriverContext
from drivers.timing import VirtualScheduler
from tests.helpers import wait_until


@dataclass
class Recorder:
    """Collects what a driver posts; safe to call from any thread."""

    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, kind: Kind, entity: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.kind is kind and (entity is None or e.entity == entity)]

    def values(self, kind: Kind = Kind.READING, entity: str | None = None) -> list[object]:
        return [e.value for e in self.of(kind, entity)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Poll with a deadline: for events that come from a reader thread."""
        wait_until(predicate, timeout, what=f"events; so far: {self.events}")

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


def make_context(
    recorder: Recorder,
    clock: VirtualClock | None = None,
    factory: MockFactory | None = None,
    scheduler: VirtualScheduler | None = None,
) -> DriverContext:
    """A context on mock pins; pass a VirtualScheduler to run the driver's timers in virtual time."""
    if scheduler is not None:
        clock = scheduler.clock
    return DriverContext(
        post=recorder,
        events=EventFactory(clock or VirtualClock(), boot="test"),
        pin_factory=factory or MockFactory(),
        open_serial=serial.serial_for_url,
        scheduler=scheduler,
    )


@contextmanager
def pty_pair() -> Iterator[tuple[int, str]]:
    """A pseudo-terminal: the master fd the test writes to, and the device path a driver opens."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        yield master, path
    finally:
        for fd in (master, slave):
            with suppress(OSError):
                os.close(fd)
