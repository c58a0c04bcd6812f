"""Traces: the last evaluations of every rule, to answer "why did the siren go off at 3 am".

Each evaluation is one JSON-able dict::

    {"ts": 1767225600.0, "time": "2026-01-01T00:00:00+00:00", "rule": "night_light",
     "trigger": "state hall_motion -> True", "cause": "ab12-7", "result": "ran",
     "conditions": [["time after 22:00:00 before 06:00:00", true]],
     "actions": ["turn_on hall_light for 120s"]}

``result`` is one of ``ran``, ``conditions failed``, ``cooldown``, ``skipped:
still running``, ``queued``, ``queue full``, ``restarted``. The engine keeps the
last ``size`` per rule in memory and in ``<state_dir>/rules-traces.json``, so
they survive a restart; :func:`read_traces` and :func:`format_traces` are what
``gateway traces`` prints.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

TRACES_FILE = "rules-traces.json"


class TraceStore:
    __slots__ = ("_by_rule", "size")

    def __init__(self, size: int = 20) -> None:
        self.size = size
        self._by_rule: dict[str, deque[dict[str, Any]]] = {}

    def add(self, trace: dict[str, Any]) -> dict[str, Any]:
        rule = str(trace["rule"])
        queue = self._by_rule.get(rule)
        if queue is None:
            queue = self._by_rule[rule] = deque(maxlen=self.size)
        queue.append(trace)
        return trace

    def get(self, rule: str) -> list[dict[str, Any]]:
        return list(self._by_rule.get(rule, ()))

    def all(self, tz: dt.tzinfo | None = None) -> dict[str, list[dict[str, Any]]]:
        """Every trace; with ``tz``, each gets its human ``time`` now (formatting a date at every
        rule run cost 8 % of the engine's time: it is done when traces are written, at most once a minute)."""
        if tz is not None:
            for queue in self._by_rule.values():
                for trace in queue:
                    if "time" not in trace:
                        trace["time"] = iso(trace["ts"], tz)
        return {rule: list(queue) for rule, queue in self._by_rule.items()}

    def load(self, data: dict[str, Any]) -> None:
        for rule, traces in data.items():
            if isinstance(traces, list):
                for trace in traces[-self.size :]:
                    if isinstance(trace, dict):
                        self.add({**trace, "rule": rule})


def write_json(path: Path, data: Any) -> None:
    """Atomically: a reader (or a power cut) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, separators=(",", ":"), default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None


def read_traces(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    data = read_json(Path(state_dir) / TRACES_FILE)
    return data if isinstance(data, dict) else {}


def format_traces(traces: dict[str, list[dict[str, Any]]], rule: str | None = None, last: int | None = None) -> str:
    """Human text, newest last: one block per evaluation."""
    lines: list[str] = []
    for rule_id in sorted(traces) if rule is None else [rule]:
        items: Iterable[dict[str, Any]] = traces.get(rule_id, [])
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
