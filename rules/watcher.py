"""Reload the rules when a rule file changes (``[rules] watch = true``).

The directory is polled on the dispatcher's timers (a stat of each
``*.toml``: name, size, mtime; no inotify, nothing to install). A changed set
is loaded and validated as a whole; a broken one is reported once per change
and the rules in force stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rules.loader import RulesError, RuleSet
from rules.timers import Scheduler

log = logging.getLogger("rules.engine")

WATCH_INTERVAL = 5.0
"""Seconds between checks of the rule files for changes (stat only: name, size, mtime)."""


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
                 scheduler: Scheduler, interval: float, *, in_force: Callable[[], int],
                 stopped: Callable[[], bool]) -> None:
        self.directory = directory
        self.load = load
        self.replace = replace
        self.scheduler = scheduler
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
            else:
                log.info("rule files changed in %s: reloading", self.directory)
                self.replace(ruleset)
        self.start()
