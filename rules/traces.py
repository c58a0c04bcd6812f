"""Traces: the last evaluations of every rule, to answer "why did the siren go off at 3 am".

Each evaluation is one :class:`Trace`; in ``rules-traces.json`` and for
``gateway traces`` it is this JSON object (:meth:`Trace.to_json`)::

    {"ts": 1767225600.0, "time": "2026-01-01T00:00:00+00:00", "rule": "night_light",
     "trigger": "state hall_motion -> True", "cause": "ab12-7", "result": "ran",
     "conditions": [["time after 22:00:00 before 06:00:00", true]],
     "actions": ["turn_on hall_light for 120s"]}

(``notes`` only when there are some). ``result`` is one of ``ran``,
``conditions failed``, ``cooldown``, ``skipped: still running``, ``queued``,
``queue full``, ``note``. The engine keeps the last ``size`` per rule in memory
and in ``<state_dir>/rules-traces.json``, so they survive a restart;
:func:`read_traces` and :func:`format_traces` are what ``gateway traces`` prints.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NotRequired, TypedDict

from core.files import write_atomically

log = logging.getLogger(__name__)

TRACES_FILE = "rules-traces.json"


class TraceJSON(TypedDict):
    """A trace as ``rules-traces.json`` holds it and ``gateway traces`` reads it."""

    ts: float
    rule: str
    trigger: str
    cause: str | None
    result: str
    conditions: list[list[str | bool]]
    """``[text, passed]`` per condition examined."""
    actions: list[str]
    notes: NotRequired[list[str]]
    time: NotRequired[str]
    """The local time of ``ts``, added when the trace is written (see :meth:`TraceStore.all`)."""


@dataclass(slots=True)
class Trace:
    """One evaluation of a rule: what triggered it, the conditions examined, what ran, and why not."""

    ts: float
    rule: str
    trigger: str
    cause: str | None
    result: str = ""
    conditions: list[tuple[str, bool]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    time: str | None = None

    def to_json(self) -> TraceJSON:
        data: TraceJSON = {
            "ts": self.ts, "rule": self.rule, "trigger": self.trigger, "cause": self.cause, "result": self.result,
            "conditions": [[text, ok] for text, ok in self.conditions], "actions": list(self.actions),
        }
        if self.notes:
            data["notes"] = list(self.notes)
        if self.time is not None:
            data["time"] = self.time
        return data

    @classmethod
    def from_json(cls, rule: str, data: Mapping[str, object]) -> Trace:
        """A trace read back from the file (written by this or an earlier version); ValueError if unreadable."""
        ts, cause, time = data.get("ts", 0.0), data.get("cause"), data.get("time")
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            raise ValueError(f"no time stamp in trace {data!r}")
        return cls(
            ts=float(ts), rule=rule, trigger=str(data.get("trigger", "")),
            cause=None if cause is None else str(cause), result=str(data.get("result", "")),
            conditions=[(str(item[0]), bool(item[1])) for item in _list(data.get("conditions"))
                        if isinstance(item, list) and len(item) == 2],
            actions=[str(action) for action in _list(data.get("actions"))],
            notes=[str(note) for note in _list(data.get("notes"))],
            time=None if time is None else str(time),
        )


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


class TraceStore:
    """The last ``size`` traces of each rule."""

    __slots__ = ("_by_rule", "size")

    def __init__(self, size: int = 20) -> None:
        self.size = size
        self._by_rule: dict[str, deque[Trace]] = {}

    def add(self, trace: Trace) -> Trace:
        queue = self._by_rule.get(trace.rule)
        if queue is None:
            queue = self._by_rule[trace.rule] = deque(maxlen=self.size)
        queue.append(trace)
        return trace

    def of(self, rule: str) -> list[Trace]:
        """The rule's traces, oldest first."""
        return list(self._by_rule.get(rule, ()))

    def get(self, rule: str) -> list[TraceJSON]:
        """The rule's traces as ``gateway traces`` reads them (:class:`TraceJSON`), oldest first."""
        return [trace.to_json() for trace in self._by_rule.get(rule, ())]

    def all(self, tz: dt.tzinfo | None = None) -> dict[str, list[TraceJSON]]:
        """Every trace, as the file holds them; with ``tz``, each gets its human ``time`` now (formatting a date
        at every rule run cost 8 % of the engine's time: it is done when traces are written, at most once a
        minute)."""
        if tz is not None:
            for queue in self._by_rule.values():
                for trace in queue:
                    if trace.time is None:
                        trace.time = iso(trace.ts, tz)
        return {rule: [trace.to_json() for trace in queue] for rule, queue in self._by_rule.items()}

    def load(self, data: Mapping[str, object]) -> None:
        """Traces read back from the file; what cannot be read is left out."""
        for rule, traces in data.items():
            if isinstance(traces, list):
                for trace in traces[-self.size :]:
                    if isinstance(trace, dict):
                        try:
                            self.add(Trace.from_json(rule, trace))
                        except ValueError as exc:
                            log.warning("ignoring an unreadable trace of rule %s: %s", rule, exc)


def write_json(path: Path, data: object) -> None:
    """Atomically: a reader (or a power cut) sees the old file or the new one, never half of one."""
    write_atomically(path, json.dumps(data, separators=(",", ":"), default=str))


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def read_traces(state_dir: Path) -> dict[str, list[TraceJSON]]:
    """The traces file as it is (entries are not checked: :func:`format_traces` reads them leniently)."""
    data = read_json(Path(state_dir) / TRACES_FILE)
    return data if isinstance(data, dict) else {}


def format_traces(traces: Mapping[str, list[TraceJSON]], rule: str | None = None, last: int | None = None) -> str:
    """Human text, newest last: one block per evaluation."""
    lines: list[str] = []
    for rule_id in sorted(traces) if rule is None else [rule]:
        items: Iterable[TraceJSON] = traces.get(rule_id, [])
        items = list(items)[-last:] if last else items
        for trace in items:
            lines.append(f"{trace.get('time', '?')}  {rule_id}: {trace.get('result', '?')}")
            lines.append(f"    trigger: {trace.get('trigger', '?')} (cause {trace.get('cause')})")
            for text, ok in trace.get("conditions", []):
                lines.append(f"    {'pass' if ok else 'FAIL'}: {text}")
            for action in trace.get("actions", []):
                lines.append(f"    action: {action}")
            for note in trace.get("notes", []):
                lines.append(f"    note: {note}")
    if not lines:
        return f"no traces for rule {rule}" if rule else "no traces"
    return "\n".join(lines)


def print_traces(state_dir: Path, rule: str | None = None, last: int | None = None,
                 out: IO[str] | None = None) -> int:
    """What ``gateway traces [RULE] [--last N]`` prints; 0, or 1 when there is nothing for ``rule``."""
    traces = read_traces(state_dir)
    print(format_traces(traces, rule, last), file=out or sys.stdout)
    return 0 if rule is None or traces.get(rule) else 1


def iso(ts: float, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")
