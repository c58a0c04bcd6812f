"""Reload the rules when a rule file changes (``[rules] watch = true``).

The directory is polled on the dispatcher's timers (a stat of each
``*.toml``: name, size, mtime; no inotify, nothing to install). A changed set
is loaded and validated as a whole; a broken one is reported once per change
and the rules in force stay.

A refused reload is logged (each problem at ERROR) and posted as a
``Kind.SYSTEM`` event: entity ``rules``, value ``reload_refused``, ``detail``
the problems one a line (:func:`refusal_detail`; the first line is the first
problem). The event reaches MQTT like every other, and the gateway keeps the
last reload's result for ``gateway status`` (``gateway/houselog.py``). A
SIGHUP reload that is refused posts the same event (``gateway/app.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from core.events import Event, EventFactory, Kind
from rules.controllers import Runtime
from rules.loader import RulesError, RuleSet

log = logging.getLogger("rules.engine")

WATCH_INTERVAL = 5.0
"""Seconds between checks of the rule files for changes (stat only: name, size, mtime)."""

RULES_ENTITY = "rules"
"""The entity of the engine's SYSTEM events (``rules.engine.ENGINE_ENTITY``)."""
RELOAD_REFUSED = "reload_refused"
"""The value of the SYSTEM event of a refused reload."""
SHOWN_PROBLEMS = 20
"""Problems a refusal event carries at most (the log has them all); a last line says how many more."""
_MORE = re.compile(r"^\.\.\. and (\d+) more \(see the gateway's log\)$")


def refusal_detail(problems: Sequence[str]) -> str:
    """The ``detail`` of a refused reload's event: the problems one a line, at most :data:`SHOWN_PROBLEMS`
    (each at most 500 characters), then ``... and N more (see the gateway's log)`` if there were more."""
    shown = [" ".join(problem.split())[:500] for problem in problems[:SHOWN_PROBLEMS]]
    if len(problems) > SHOWN_PROBLEMS:
        shown.append(f"... and {len(problems) - SHOWN_PROBLEMS} more (see the gateway's log)")
    return "\n".join(shown) or "refused"


def refusal_problems(detail: str | None) -> tuple[int, list[str]]:
    """What :func:`refusal_detail` wrote: (how many problems in all, those shown)."""
    lines = (detail or "").splitlines()
    more = _MORE.match(lines[-1]) if lines else None
    if more is not None:
        return len(lines) - 1 + int(more.group(1)), lines[:-1]
    return len(lines), lines


def refusal_event(events: EventFactory, problems: Sequence[str]) -> Event:
    """The SYSTEM event that says a reload was refused, and why."""
    return events.make(Kind.SYSTEM, RULES_ENTITY, RELOAD_REFUSED, detail=refusal_detail(problems))


def rules_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a rule file is added, removed or edited."""
    entries = []
    try:
        for path in sorted(Path(directory).glob("*.toml")):
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append((path.name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


class RuleFilesWatcher:
    """Polls ``directory`` every ``interval`` s once :meth:`start` is called; ``replace`` swaps a loaded set in."""

    def __init__(self, directory: Path, load: Callable[[], RuleSet], replace: Callable[[RuleSet], object],
                 scheduler: Runtime, interval: float, *, in_force: Callable[[], int],
                 stopped: Callable[[], bool]) -> None:
        self.directory = directory
        self.load = load
        self.replace = replace
        self.scheduler = scheduler
        """The engine's runtime: its timers poll the files, its bus carries a refusal's event."""
        self.interval = interval
        self.in_force = in_force
        """How many rules run now (for the log line of a refused reload)."""
        self.stopped = stopped
        self._signature = rules_signature(directory)

    def start(self) -> None:
        self.scheduler.call_later(self.interval, self._poll)

    def _poll(self) -> None:
        if self.stopped():
            return
        signature = rules_signature(self.directory)
        if signature != self._signature:
            self._signature = signature
            try:
                ruleset = self.load()
            except RulesError as exc:
                for problem in exc.problems:
                    log.error("rule files changed: %s", problem)
                log.error("reload refused: %d problem(s); the previous %d rules stay in force",
                          len(exc.problems), self.in_force())
                self.scheduler.bus.post(refusal_event(self.scheduler.events, exc.problems))
            else:
                log.info("rule files changed in %s: reloading", self.directory)
                self.replace(ruleset)
        self.start()
