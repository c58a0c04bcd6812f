"""Logging for journald and for a person at a terminal.

Under systemd (``JOURNAL_STREAM`` set) each line starts with the sd-daemon
priority prefix (``<3>`` error ... ``<7>`` debug) and carries no timestamp:
journald adds its own and ``journalctl -p warning`` filters by level. At a
terminal, lines carry a short local time and the level name instead.

At INFO the log is the house's story (``house:`` lines, :mod:`gateway.houselog`)
plus what the gateway itself does; libraries' chatter (APScheduler's jobs,
paho's reconnects) appears only at DEBUG.
"""

from __future__ import annotations

import logging
import os
import sys

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def under_journald() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup_logging(level: str = "INFO", journal: bool | None = None) -> None:
    """Configure the root logger once; ``journal`` defaults to detecting systemd."""
    handler = logging.StreamHandler(sys.stdout)
    if journal if journal is not None else under_journald():
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho logs every reconnect attempt at its own level; our bridge reports outages once.
    logging.getLogger("paho").setLevel(logging.WARNING)
    # APScheduler says "Added job ...", "Scheduler started" and "Job ... executed" at INFO at every start,
    # reload and run: library chatter, shown only when the gateway itself logs at DEBUG. Its warnings
    # (a missed run) stay.
    chatty = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("apscheduler").setLevel(chatty)
