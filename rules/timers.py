"""Pending timers of rules and controllers that survive reloads and restarts.

Every ``for``, ``delay``, pulse (``turn_on`` with ``for``) and alarm delay is a
:class:`Pending` entry keyed by what it is (``hold:<rule>:<n>``,
``run:<rule>``, ``pulse:<rule>:<entity>``, ``alarm:<id>``), owned by a rule or
controller and stamped with its fingerprint. The timer itself runs on the
dispatcher's monotonic heap; :meth:`TimerTable.snapshot` turns the table into
JSON: the wall-clock time of the snapshot, the monotonic time and boot id, and
each timer's *remaining* seconds. After a restart the engine asks
:func:`elapsed_since` how long the gateway was away (monotonic when the board
did not reboot, wall clock otherwise) and re-arms each timer under the policy
documented in docs/rules.md: resume, fire late within the grace, or drop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.clock import Clock


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


@dataclass(slots=True)
class Pending:
    key: str
    owner: str
    fingerprint: str
    deadline: float
    data: dict[str, Any]
    handle: TimerHandle | None = None


@dataclass(slots=True)
class TimerTable:
    scheduler: Scheduler
    clock: Clock
    on_change: Callable[[], None] = lambda: None
    entries: dict[str, Pending] = field(default_factory=dict)

    def arm(  # noqa: PLR0917 - every timer needs all of these
        self, key: str, owner: str, fingerprint: str, delay: float, data: dict[str, Any],
        callback: Callable[[Pending], None],
    ) -> Pending:
        """(Re)arm ``key``: an existing timer of the same key is replaced, which is how a re-trigger extends."""
        self.cancel(key)
        entry = Pending(key, owner, fingerprint, self.clock.monotonic() + max(0.0, delay), data)

        def fire() -> None:
            if self.entries.get(key) is entry:
                del self.entries[key]
                self.on_change()
                callback(entry)

        entry.handle = self.scheduler.call_later(max(0.0, delay), fire)
        self.entries[key] = entry
        self.on_change()
        return entry

    def cancel(self, key: str) -> bool:
        entry = self.entries.pop(key, None)
        if entry is None:
            return False
        if entry.handle is not None:
            entry.handle.cancel()
        self.on_change()
        return True

    def cancel_owner(self, owner: str) -> int:
        keys = [key for key, entry in self.entries.items() if entry.owner == owner]
        for key in keys:
            self.cancel(key)
        return len(keys)

    def get(self, key: str) -> Pending | None:
        return self.entries.get(key)

    def remaining(self, key: str) -> float | None:
        entry = self.entries.get(key)
        return None if entry is None else max(0.0, entry.deadline - self.clock.monotonic())

    def cancel_all(self) -> None:
        for key in list(self.entries):
            self.cancel(key)

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock.monotonic()
        return [
            {"key": e.key, "owner": e.owner, "fingerprint": e.fingerprint,
             "remaining": round(e.deadline - now, 3), "data": e.data}
            for e in self.entries.values()
        ]


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return None


def anchor(clock: Clock) -> dict[str, Any]:
    """What a snapshot needs to measure, later, how long the gateway was away."""
    return {"wall": clock.time(), "mono": clock.monotonic(), "boot": boot_id()}


def elapsed_since(saved: dict[str, Any], clock: Clock) -> float:
    """Seconds since ``saved`` (from :func:`anchor`): monotonic on the same boot, else wall clock, never negative."""
    try:
        if saved.get("boot") is not None and saved.get("boot") == boot_id():
            return max(0.0, clock.monotonic() - float(saved["mono"]))
        return max(0.0, clock.time() - float(saved["wall"]))
    except (KeyError, TypeError, ValueError):
        return 0.0
