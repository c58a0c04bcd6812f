"""Commands from the page, answered on the page with the outcome the hub would get (docs/web.md).

A command from the page takes the hub's path: the MQTT bridge's rate limit for the entity, its validator
(the one a ``<base>/set/<entity>`` message meets), the bus, the authority and the envelope. Its answer is
the same *final outcome* the hub gets on ``result/<entity>`` (docs/mqtt.md, "outcomes"): ``done``,
``failed`` or ``rejected``, with the reason. :class:`PageCommands` listens to the command inlet's results
(``CommandInlet.listeners``) and waits a few seconds for the outcome of its own commands; a command the
envelope defers past that wait is answered ``deferred`` with its reason, and its final outcome is shown
next to the output when it comes (:attr:`PageCommands.last`).

Threads: :meth:`PageCommands.send` runs on a web thread; results come on that thread (``accepted``, a
rejection), on the dispatcher's (``done``, ``failed``, ``deferred``) or on the inlet's timer sweep.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.events import Value

if TYPE_CHECKING:
    from gateway.mqtt.inlet import CommandInlet

FINAL = frozenset({"done", "failed", "rejected"})
WAIT_S = 5.0
"""Seconds a page command waits for its final outcome before the page answers with what it has."""
REMEMBERED = 256
"""Page commands whose outcome is still looked for (the oldest are forgotten beyond)."""


@dataclass(slots=True, frozen=True)
class Outcome:
    """What became of one command from the page: a ``result/<entity>`` status and its reason."""

    entity: str
    status: str
    """``done``, ``failed``, ``rejected`` (final); ``deferred`` or ``accepted`` (the final one follows)."""
    reason: str | None = None
    value: Value = None
    ts: float = 0.0

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def words(self) -> str:
        """``done: on``, ``rejected: expected ON or OFF``, ``deferred: … (the outcome follows)``."""
        if self.status == "done":
            text = "done" if self.value is None else f"done: {_show(self.value)}"
            return f"{text} ({self.reason})" if self.reason else text
        text = f"{self.status}: {self.reason}" if self.reason else self.status
        return text if self.final else f"{text} (the outcome follows)"


class PageCommands:
    """Sends the page's commands the hub's way; answers each with its final outcome (or what it has)."""

    def __init__(self, inlet: CommandInlet, *, wait_s: float = WAIT_S, clock: Callable[[], float] = time.time) -> None:
        self._inlet = inlet
        self._wait_s = wait_s
        self._clock = clock
        self._changed = threading.Condition()
        self._mine: OrderedDict[str, Outcome | None] = OrderedDict()
        """Command id -> its latest result (None until one beyond ``accepted`` comes)."""
        self._here = threading.local()
        self.last: dict[str, Outcome] = {}
        """Entity -> the latest outcome of a page command for it (shown next to the output)."""
        inlet.listeners.append(self._on_result)

    def send(self, entity: str, value: str) -> Outcome:
        """Rate limit, validate, post; then wait (at most ``wait_s``) for the final outcome."""
        if self._inlet.limiter.admit(entity) != "ok":
            return self._remember(Outcome(entity[:64], "rejected", self._inlet.limiter.describe(entity),
                                          ts=self._clock()))
        self._here.seen = []  # results made on this thread during handle(): ``accepted`` or a rejection
        try:
            command = self._inlet.handle(entity, value.encode())
        finally:
            seen: list[Outcome] = self._here.seen
            self._here.seen = None
        if command is None:
            rejected = next((o for o in seen if o.status == "rejected"),
                            Outcome(entity[:64], "rejected", "not a valid command for this entity", ts=self._clock()))
            return self._remember(rejected)
        with self._changed:
            self._changed.wait_for(lambda: self._settled(command.id), timeout=self._wait_s)
            latest = self._mine.get(command.id)
            if latest is not None and latest.final:
                del self._mine[command.id]
        return latest or Outcome(entity, "accepted", f"no outcome within {self._wait_s:g} s", ts=self._clock())

    def _settled(self, command_id: str) -> bool:
        latest = self._mine.get(command_id)
        return latest is not None and latest.final

    def _on_result(self, entity: str, status: str, command_id: str | None, value: Value, reason: str | None) -> None:
        outcome = Outcome(entity, status, reason, value, self._clock())
        seen: list[Outcome] | None = getattr(self._here, "seen", None)
        with self._changed:
            if seen is not None:  # this thread's own handle(): the ``accepted`` names the id before the post
                seen.append(outcome)
                if status == "accepted" and command_id is not None:
                    self._mine[command_id] = None
                    while len(self._mine) > REMEMBERED:
                        self._mine.popitem(last=False)
                return
            if command_id is None or command_id not in self._mine:
                return
            self._mine[command_id] = outcome
            self.last[entity] = outcome
            self._changed.notify_all()

    def latest(self) -> dict[str, Outcome]:
        """A copy of :attr:`last`, safe from any thread."""
        with self._changed:
            return dict(self.last)

    def _remember(self, outcome: Outcome) -> Outcome:
        with self._changed:
            self.last[outcome.entity] = outcome
        return outcome


def _show(value: Value) -> str:
    return "on" if value is True else "off" if value is False else str(value)
