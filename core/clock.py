"""Injectable clocks.

Every duration in the gateway (``for``, delays, debounce, minimum on/off times)
is measured on ``monotonic()``, so an NTP step on a board without a real-time
clock can neither fire nor cancel it. ``time()`` is the wall clock, used only
for timestamps people read and for wall-clock schedules.

Tests and ``gateway simulate`` use :class:`VirtualClock`: time moves only when
told to, so a five-minute rule is checked in microseconds.
"""

from __future__ import annotations

import time as _time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    """The real clocks of the machine."""

    __slots__ = ()

    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()


class VirtualClock:
    """A clock that moves only when :meth:`advance` or :meth:`set_wall` is called.

    The wall clock can be stepped on its own (an NTP correction) while the
    monotonic clock stays put, which is exactly what a real board does.
    """

    __slots__ = ("_mono", "_wall")

    def __init__(self, wall: float = 1_767_225_600.0, mono: float = 1000.0) -> None:
        self._wall = wall
        self._mono = mono

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self._mono += seconds
        self._wall += seconds

    def set_wall(self, wall: float) -> None:
        """Step the wall clock only, as NTP does on a board without an RTC."""
        self._wall = wall
