"""Pending timers of rules and controllers that survive reloads and restarts.

Every ``for``, ``delay``, pulse (``turn_on`` with ``for``) and alarm delay is a
:class:`Pending` entry keyed by what it is, a :class:`TimerKey` (written
``hold:<rule>:<n>``, ``run:<rule>``, ``pulse:<rule>:<entity>``, ``alarm:<id>``
in the state file), owned by a rule or controller and stamped with its
fingerprint. The timer itself runs on the
dispatcher's monotonic heap; :meth:`TimerTable.snapshot` turns the table into
JSON: the wall-clock time of the snapshot, the monotonic time and boot id, and
each timer's *remaining* seconds. After a restart the engine asks
:func:`elapsed_since` how long the gateway was away (monotonic when the board
did not reboot, wall clock otherwise) and re-arms each timer under the policy
documented in docs/rules.md: resume, fire late within the grace, or drop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, get_args

from core.clock import Clock

TimerKind = Literal["hold", "run", "pulse", "alarm"]
"""``hold``: a trigger's ``for``; ``run``: a rule's ``delay``; ``pulse``: ``turn_on … for``; ``alarm``: its delays."""
_KINDS: frozenset[str] = frozenset(get_args(TimerKind))


@dataclass(slots=True, frozen=True)
class TimerKey:
    """What a pending timer is for. Its string form (:meth:`__str__`, read back by :meth:`parse`) is the
    ``key`` of the state file and must never change, or timers saved by an older gateway would not restore:
    ``hold:<rule>:<trigger index>``, ``run:<rule>``, ``pulse:<rule>:<entity>``, ``alarm:<alarm id>``.
    Rule, entity and alarm ids never contain ``:`` (rules/model.py's patterns)."""

    kind: TimerKind
    owner: str
    """The rule or controller whose timer it is."""
    index: int | None = None
    """``hold``: the trigger's index in the rule."""
    entity: str | None = None
    """``pulse``: the output the rule holds on."""

    @classmethod
    def hold(cls, rule: str, index: int) -> TimerKey:
        return cls("hold", rule, index=index)

    @classmethod
    def run(cls, rule: str) -> TimerKey:
        return cls("run", rule)

    @classmethod
    def pulse(cls, rule: str, entity: str) -> TimerKey:
        return cls("pulse", rule, entity=entity)

    @classmethod
    def alarm(cls, alarm: str) -> TimerKey:
        return cls("alarm", alarm)

    @classmethod
    def parse(cls, text: str) -> TimerKey:
        """The key from its persisted form; ValueError if it is not one."""
        kind, _, rest = text.partition(":")
        if kind not in _KINDS or not rest:
            raise ValueError(f"not a timer key: {text!r}")
        if kind == "hold":
            owner, _, index = rest.rpartition(":")
            if not owner or not index.isdigit():
                raise ValueError(f"not a timer key: {text!r}")
            return cls.hold(owner, int(index))
        if kind == "pulse":
            owner, _, entity = rest.rpartition(":")
            if not owner or not entity:
                raise ValueError(f"not a timer key: {text!r}")
            return cls.pulse(owner, entity)
        return cls("run" if kind == "run" else "alarm", rest)

    def __str__(self) -> str:
        if self.kind == "hold":
            return f"hold:{self.owner}:{self.index}"
        if self.kind == "pulse":
            return f"pulse:{self.owner}:{self.entity}"
        return f"{self.kind}:{self.owner}"


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class SavedTimer(TypedDict):
    """A timer in the state file (:meth:`TimerTable.snapshot`)."""

    key: str
    """:class:`TimerKey`'s string form."""
    owner: str
    fingerprint: str
    remaining: float
    data: dict[str, Any]


class Anchor(TypedDict):
    """When a snapshot was taken, on both clocks (:func:`anchor`)."""

    wall: float
    mono: float
    boot: str | None


@dataclass(slots=True)
class Pending:
    key: TimerKey
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
    entries: dict[TimerKey, Pending] = field(default_factory=dict)

    def arm(  # noqa: PLR0917 - every timer needs all of these
        self, key: TimerKey | str, owner: str, fingerprint: str, delay: float, data: dict[str, Any],
        callback: Callable[[Pending], None],
    ) -> Pending:
        """(Re)arm ``key``: an existing timer of the same key is replaced, which is how a re-trigger extends.
        A key may be given in its persisted form (``"alarm:house"``)."""
        key = _key(key)
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

    def cancel(self, key: TimerKey | str) -> bool:
        entry = self.entries.pop(_key(key), None)
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

    def get(self, key: TimerKey | str) -> Pending | None:
        return self.entries.get(_key(key))

    def snapshot(self) -> list[SavedTimer]:
        now = self.clock.monotonic()
        return [
            {"key": str(e.key), "owner": e.owner, "fingerprint": e.fingerprint,
             "remaining": round(e.deadline - now, 3), "data": e.data}
            for e in self.entries.values()
        ]


def _key(key: TimerKey | str) -> TimerKey:
    return key if isinstance(key, TimerKey) else TimerKey.parse(key)


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return None


def anchor(clock: Clock) -> Anchor:
    """What a snapshot needs to measure, later, how long the gateway was away."""
    return {"wall": clock.time(), "mono": clock.monotonic(), "boot": boot_id()}


def elapsed_since(saved: Mapping[str, Any], clock: Clock) -> float:
    """Seconds since ``saved`` (from :func:`anchor`): monotonic on the same boot, else wall clock, never negative."""
    try:
        if saved.get("boot") is not None and saved.get("boot") == boot_id():
            return max(0.0, clock.monotonic() - float(saved["mono"]))
        return max(0.0, clock.time() - float(saved["wall"]))
    except (KeyError, TypeError, ValueError):
        return 0.0
