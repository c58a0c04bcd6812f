"""The engine's two files in the state directory, written so as to spare an SD card.

* ``rules-state.json`` (:data:`STATE_FILE`): pending timers with their
  remaining time and the anchor to measure the time away
  (:func:`rules.timers.anchor`), restorable virtual entities, and the
  controllers' snapshots. Written :data:`SAVE_DELAY` s after a change (a
  burst of changes is one write) and at stop; read once, at start.
* ``rules-traces.json`` (:data:`~rules.traces.TRACES_FILE`): the traces, at
  most every :data:`TRACE_SAVE_DELAY` s and at stop; they are for people, not
  for recovery.

Writes are atomic (:func:`rules.traces.write_json`); a failed one is logged
(under ``rules.engine``) and the engine runs on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

from rules.timers import Anchor, SavedTimer, Scheduler
from rules.traces import TRACES_FILE, TraceStore, read_json, write_json

log = logging.getLogger("rules.engine")  # "rules.engine logs each failed save" (docs/mqtt.md)

STATE_FILE = "rules-state.json"
SAVE_DELAY = 2.0
"""Seconds a change may wait before the state file is written: coalesces a burst, spares the SD card."""
TRACE_SAVE_DELAY = 60.0
"""Traces are written at most once a minute (and at stop): they are for people, not for recovery."""


class EngineState(TypedDict):
    """``rules-state.json``, version 1."""

    version: int
    anchor: Anchor
    timers: list[SavedTimer]
    virtuals: dict[str, Any]
    controllers: dict[str, dict[str, Any]]


class StateFiles:
    """Writes the state file soon after a change and the traces file at most once a minute, or now at stop."""

    def __init__(self, state_dir: Path | None, scheduler: Scheduler, snapshot: Callable[[], EngineState],
                 traces: TraceStore, tz: ZoneInfo) -> None:
        self.state_dir = state_dir
        self.scheduler = scheduler
        self.snapshot = snapshot
        self.traces = traces
        self.tz = tz
        self.closed = False
        self._save_armed = False
        self._traces_armed = False

    def read(self) -> dict[str, Any]:
        """The saved state (empty if none, unreadable or of another version); loads the saved traces too."""
        if self.state_dir is None:
            return {}
        traces = read_json(self.state_dir / TRACES_FILE)
        if isinstance(traces, dict):
            self.traces.load(traces)
        data = read_json(self.state_dir / STATE_FILE)
        return data if isinstance(data, dict) and data.get("version") == 1 else {}

    def changed(self) -> None:
        """Timers or restorable state changed: write the state file soon (coalesced)."""
        if self.state_dir is None or self._save_armed or self.closed:
            return
        self._save_armed = True
        self.scheduler.call_later(SAVE_DELAY, self._save_state)

    def traced(self) -> None:
        """A trace was added: write the traces file within :data:`TRACE_SAVE_DELAY` (they are larger)."""
        if self.state_dir is None or self._traces_armed or self.closed:
            return
        self._traces_armed = True
        self.scheduler.call_later(TRACE_SAVE_DELAY, self._save_traces)

    def save(self) -> None:
        """Write both files now (at stop)."""
        self._write(STATE_FILE, self.snapshot())
        self._write(TRACES_FILE, self.traces.all(self.tz))

    def _save_state(self) -> None:
        self._save_armed = False
        self._write(STATE_FILE, self.snapshot())

    def _save_traces(self) -> None:
        self._traces_armed = False
        self._write(TRACES_FILE, self.traces.all(self.tz))

    def _write(self, name: str, data: object) -> None:
        if self.state_dir is None:
            return
        try:
            write_json(self.state_dir / name, data)
        except OSError as exc:
            log.error("cannot save %s in %s: %s", name, self.state_dir, exc)
