"""Log a repeated condition once when it starts and once when it ends, with a count.

A condition that a loop checks again and again (a serial port that keeps
failing, a wall clock not synchronised yet) must not write a line per check:
on a board logging to an SD card that is hundreds of lines an hour saying
nothing new. :class:`LogOnce` writes the first occurrence at the level the
caller chose, every repeat at DEBUG only, and one line when the condition is
over, carrying how many times it was seen::

    unsynced = LogOnce(log)
    ...
    if not synced:
        unsynced.holds(logging.WARNING, "wall clock not synchronised yet: schedules wait")
    else:
        unsynced.ended(logging.INFO, "wall clock synchronised after %d checks")

``ended`` logs nothing if the condition never held; its message gets the count
as its last ``%d`` argument. Safe from any thread.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["LogOnce"]


class LogOnce:
    """One repeated condition of one logger: first occurrence at its level, repeats at DEBUG, the end once."""

    __slots__ = ("_lock", "count", "log")

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.count = 0
        """How many times the condition was seen since it started (0: it does not hold)."""
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.count > 0

    def holds(self, level: int, msg: str, *args: object) -> bool:
        """The condition is seen (again): logged at ``level`` when it starts, at DEBUG while it lasts.

        True when this call started it (the caller may do once-per-outage work then)."""
        with self._lock:
            self.count += 1
            first = self.count == 1
        self.log.log(level if first else logging.DEBUG, msg, *args, stacklevel=2)
        return first

    def ended(self, level: int, msg: str, *args: object) -> int:
        """The condition is over: one line at ``level``, the count appended to ``args``; 0 and silence if it
        did not hold. Returns how many times it had been seen."""
        with self._lock:
            count, self.count = self.count, 0
        if count:
            self.log.log(level, msg, *args, count, stacklevel=2)
        return count
