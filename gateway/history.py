"""The event history on the device: what happened, kept for a window (default 7 days) in SQLite.

``gateway history`` and the web page (:mod:`gateway.web`) read it to answer "what happened last
night, and why". It is its own database, ``history.sqlite`` in the state directory, never the
MQTT outbox's: the outbox sits on the hot path (every event, committed within 20 ms), and the
history must never slow it, lock it or share its size budget.

How it is fed, and why it cannot slow the house::

    dispatcher ── record(event) ──> bounded queue ──> writer thread ──> history.sqlite
                  (put_nowait; full: counted in ``dropped``)   (one transaction per ``flush_s``,
                                                                or as soon as ``flush_at`` events wait)

:meth:`History.record` is called on the dispatcher thread for every processed event; it only
appends to a bounded queue and never blocks. The writer thread commits what has queued once per
``flush_s`` (default 60 s: one transaction, a few pages, instead of one per event: the SD card's
wear; docs/web.md has the bytes per hour), or as soon as ``flush_at`` events wait (a burst, a flood:
memory stays bounded by a batch, not by an interval's worth of events), and prunes in the
background every ``prune_s``: rows older than the window go, then the oldest rows beyond ``max_mb``.
The file survives restarts (WAL, ``synchronous=NORMAL``: a power cut loses at most the last batch:
the history is for people; delivery to the hub is the outbox's job). :meth:`History.stop` waits at
most ``stop_timeout_s`` (5 s) for the writer: a writer hung on the SD card keeps the file to itself
(no second thread on its connection, no close under its transaction) and the events still queued
are counted in ``dropped`` and logged once. ``dropped`` sums counters each written by one thread.

Config (``config.toml``)::

    [history]
    enabled = true
    window = "7d"
    max_mb = 64
    flush_s = 60
    readings_per_s = 10   # a flooding sensor's readings beyond this per second: only the newest is written
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import itertools
import json
import logging
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.claims import Level
from core.events import K_READING, Event, Value
from core.guard import guarded
from core.sqlite_memory import MultiRowInsert, cap_page_cache, give_back_page_cache
from gateway.bus import waker

log = logging.getLogger(__name__)

HISTORY_FILE = "history.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    n INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    entity TEXT NOT NULL,
    value TEXT,
    unit TEXT,
    rule TEXT,
    cause TEXT,
    detail TEXT,
    because TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""
# One index only, on time, which grows at its end like the table: a batch then dirties a few pages, not
# one per entity and per random id (three indexes wrote 3x the bytes per hour). The cause of an event is
# written with it (``because``), looked up in the writer's memory of recent events, so no query joins.

PAGE_CACHE_KB = 256
"""SQLite's page cache for the history file, in KiB (SQLite's default is 2,000). A flush appends at the end
of the table and of its one index, a few pages; the default kept 2 MB of pages written long ago after a
flood (issue 17, flood d). Spilling inside a transaction stays where it was
(:func:`core.sqlite_memory.cap_page_cache`)."""
RECENT_CAUSES = 4096
"""Events the writer remembers to describe the cause of the events after them: the newest this many before a
flush's batch, and the batch's own as it is written, trimmed back at the batch's end. So while a batch is written
the memory holds up to this many plus the batch (itself bounded by the queue's bound): ~0.3 MB more at the peak of
10,000 lines/s (docs/performance.md)."""

INSERT_CHUNKS = (32, 8, 2, 1)
"""Rows per INSERT statement of a flush (:class:`core.sqlite_memory.MultiRowInsert`: one step, one GIL hand-over,
per statement; 0.85 s of wall time per flush in the 10,000 lines/s profile before). No larger than 32 rows: these
four statements hold 52 kB of SQLite's memory for the connection's life; with 64 rows of ten columns they held
107 kB (tests/test_history.py). The instructions per row are the same either way (measured: docs/performance.md)."""
_insert = MultiRowInsert(
    "events", ("id", "ts", "kind", "entity", "value", "unit", "rule", "cause", "detail", "because"), INSERT_CHUNKS)


_SELECT = ("SELECT e.id, e.ts, e.kind, e.entity, e.value, e.unit, e.rule, e.cause, e.detail, e.because "
           "FROM events e WHERE ")


@dataclass(slots=True, frozen=True)
class Row:
    """One event as the history keeps it; ``because`` is the event its ``cause`` names, if still kept."""

    id: str
    ts: float
    kind: str
    entity: str
    value: Value
    unit: str | None
    rule: str | None
    cause: str | None
    detail: str | None
    because: str | None = None
    """``entity=value unit (kind)`` of the cause event, e.g. ``living_temperature=20.4 °C (reading)``."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "kind": self.kind, "entity": self.entity, "value": self.value,
                "unit": self.unit, "rule": self.rule, "cause": self.cause, "detail": self.detail,
                "because": self.because}


class History:
    """Records every event it is given into ``path``, readings thinned to ``readings_per_s`` per entity per
    second (see the module docstring and :meth:`record`)."""

    def __init__(
        self,
        path: Path,
        *,
        window_s: float = 7 * 86_400.0,
        max_bytes: int = 64 << 20,
        flush_s: float = 60.0,
        prune_s: float = 600.0,
        queue_size: int = 5_000,
        flush_at: int = 1_000,
        readings_per_s: int | None = None,
        wall: Callable[[], float] = time.time,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.path = path
        self.window_s = window_s
        self.max_bytes = max_bytes
        self.flush_s = flush_s
        self.prune_s = prune_s
        self._wall = wall
        self.stop_timeout_s = stop_timeout_s
        self._queue: deque[Event] = deque()
        # A deque, not a queue.Queue: one producer (the dispatcher) and one consumer (the writer), whose
        # append and popleft are atomic; the bound is checked by hand. queue.Queue's lock and condition
        # cost ten times as much per event.
        self.queue_size = queue_size
        self.flush_at = flush_at
        self.readings_per_s = readings_per_s
        """Readings written per entity per second of the monotonic clock (None: all); see :meth:`record`."""
        self.thinned = 0
        """Readings not written because their entity had used its ``readings_per_s`` (by design, not a loss)."""
        self._allowance: dict[str, list[int]] = {}
        """Entity -> [the second of the monotonic clock, readings admitted in it] (the dispatcher's)."""
        self._held: dict[str, Event] = {}
        """Entity -> its newest reading beyond the allowance, not yet written: written before the entity's next
        admitted reading or at the next flush, so the history always ends on the value the sensor holds.
        Shared: the dispatcher sets and pops, the writer pops (each ``pop`` is atomic, so a reading is
        written once or counted once)."""
        self._last_held: Event | None = None
        self._causes: deque[Event] = deque()
        """Held readings that an event names as its cause: the writer remembers them for ``because``."""
        self._due = threading.Event()
        """Set when ``flush_at`` events wait, or to stop: the writer commits at once."""
        self._wake_writer = waker(self._due)
        """``_due.set`` unless still set: once the queue is past ``flush_at``, every event until the writer takes
        it would set it again (gateway.bus.waker)."""
        # ``dropped`` is the sum of counters each written by one thread only: ``counter += n`` is a read and a store,
        # and a count stored by another thread between them would be lost. No lock: the dispatcher's side stays an
        # append and an increment.
        self._refused = 0
        """Events the full queue refused (the dispatcher's)."""
        self._not_written = 0
        """Events taken from the queue and not written: a failed write, or no file open (the thread that flushes)."""
        self._left_at_stop = 0
        """Events a hung writer left in the queue at :meth:`stop` (the stopping thread's)."""
        self._writing = 0
        """Events in the transaction the writer is in (the writer's), for the log of a hung stop."""
        self._handover = threading.Lock()
        """Who closes the file, decided once: :meth:`stop` after a writer that ended, or the writer, once it ends,
        after a stop that could not wait for it. Never taken on the dispatcher's side."""
        self._writer_running = False
        self._abandoned = False
        self.written = 0
        self.pruned = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._last_prune = 0.0
        self._recent: dict[str, str] = {}
        """Event id -> ``entity=value (kind)``, for the newest :data:`RECENT_CAUSES` events (the writer's; up to a
        batch more while one is written)."""

    # -- the dispatcher's side ---------------------------------------------------------------

    def record(self, event: Event) -> None:
        """Queue ``event`` for the writer; never blocks (a full queue counts a drop).

        With ``readings_per_s``, an entity's readings beyond that many in one second of the monotonic clock
        are not written (counted in ``thinned``), except the newest one, which is written before the entity's
        next admitted reading or at the next flush: a flood of readings costs the history a bounded number of
        rows, and the history still ends on the sensor's last value. Every other kind of event is written.
        An event whose ``cause`` is a reading held back still names it (``because``) when it is recorded right after
        that reading (the rules' immediate actions); a later one (a ``delay``, the end of ``turn_on … for``) whose
        cause was left out names nothing: the history does not remember the readings it thinned.
        """
        if event.kind is K_READING and self.readings_per_s is not None:
            if self._thin(event, self.readings_per_s):
                return
        elif (event.cause is not None and self._last_held is not None and event.cause == self._last_held.id
              and len(self._queue) < self.queue_size):
            # Only for an event the queue takes (the dispatcher is its one producer, so room now is room at
            # ``_put``): ``_causes`` is emptied with the queue, so it stays bounded by the queue's bound while the
            # writer is stuck. Noted before the event is queued, so the writer never takes the event without it.
            self._causes.append(self._last_held)
            self._last_held = None
        self._put(event)

    def _put(self, event: Event) -> None:
        queued = self._queue
        if len(queued) >= self.queue_size:
            self._refused += 1
            return
        queued.append(event)
        if len(queued) >= self.flush_at:
            self._wake_writer()

    def _thin(self, event: Event, limit: int) -> bool:
        """True when ``event`` (a reading) is held back rather than queued."""
        entity = event.entity
        second = int(event.mono)
        allowance = self._allowance.get(entity)
        if allowance is None or allowance[0] != second:
            self._allowance[entity] = [second, 1]
        elif allowance[1] >= limit:
            if self._held.pop(entity, None) is not None:
                self.thinned += 1
            self._held[entity] = event
            self._last_held = event
            return True
        else:
            allowance[1] += 1
        held = self._held.pop(entity, None)
        if held is not None:
            self._put(held)
        return False

    # -- the writer ----------------------------------------------------------------------------

    def open(self) -> None:
        """Create or open the database (the writer's connection); OSError/sqlite3.Error if it cannot."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        cap_page_cache(db, PAGE_CACHE_KB)
        db.executescript(_SCHEMA)
        self._db = db

    def start(self) -> None:
        """Open the file and start the writer thread. A file that cannot be opened is logged, and the
        gateway runs on without history (local control never depends on storage)."""
        try:
            self.open()
        except (OSError, sqlite3.Error) as exc:
            log.error("event history disabled: cannot open %s: %s", self.path, exc)
            return
        self._thread = threading.Thread(target=guarded("history writer")(self._run), name="history", daemon=True)
        self._writer_running = True
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued and close; never waits more than ``stop_timeout_s`` for the writer.

        The service's stop must not hang on the SD card (the outputs' safe state comes first, docs/service.md),
        and the file must not be damaged. So a writer still busy after ``stop_timeout_s`` (a slow or hung card) keeps
        the file: no flush on its connection from this thread, no close under its transaction. It commits the batch
        it holds if the card answers, and closes the file when it ends (a process that exits first loses that
        batch: SQLite's journal keeps the file whole). The events still queued are let go here, counted in
        ``dropped`` and logged once.
        """
        if self._abandoned:
            return
        self._stop.set()
        self._due.set()
        if self._thread is not None:
            self._thread.join(timeout=self.stop_timeout_s)
            self._thread = None
        with self._handover:
            self._abandoned = self._writer_running
        if self._abandoned:
            left = self._let_go()
            log.warning("event history: the writer did not finish within %g s (a slow or hung SD card): %d events "
                        "not written (counted in dropped); the %d it is writing and the file are left to it",
                        self.stop_timeout_s, left, self._writing)
            return
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.flush()
            self._close()

    def _let_go(self) -> int:
        """Take every queued and held event away from the writer, and count it: each ``popleft`` and ``pop`` is
        atomic, so an event is written by the writer or counted here, never both."""
        left = len(self._take_queued()) + len(self._take_held())
        self._left_at_stop += left
        return left

    def _take_queued(self) -> list[Event]:
        """Every queued event, oldest first, each taken by one atomic ``popleft`` (the dispatcher may append
        meanwhile: what it appends after the queue ran empty waits for the next taker)."""
        taken: list[Event] = []
        with contextlib.suppress(IndexError):
            while True:
                taken.append(self._queue.popleft())
        return taken

    def _take_held(self) -> list[Event]:
        """Every held reading, each taken by one atomic ``pop`` (the dispatcher may hold a newer one meanwhile)."""
        return [held for entity in list(self._held) if (held := self._held.pop(entity, None)) is not None]

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _run(self) -> None:
        try:
            while True:
                self._due.wait(self.flush_s)
                self._due.clear()
                if self._stop.is_set():
                    return
                self.flush()
                if not self._stop.is_set() and self._wall() - self._last_prune >= self.prune_s:
                    self._prune_or_say_why()
        finally:
            with self._handover:
                self._writer_running = False
                if self._abandoned:  # stop() could not wait: the file is the writer's to close
                    self._close()

    def flush(self) -> int:
        """Write every queued event in one transaction, then give SQLite's page cache back; the number written."""
        # The held readings first, then the queue: a reading the dispatcher holds after this point is newer than
        # anything queued before it, so it waits for the next flush. (Taken after the queue, a reading held
        # meanwhile was written before the older ones the dispatcher queued meanwhile: the history did not end
        # on the sensor's value.)
        held = self._take_held()
        batch = self._take_queued()
        for reading in held:
            # In its place by time among the batch's events (which are in the order they were processed).
            bisect.insort(batch, reading, key=_mono)
        with contextlib.suppress(IndexError):
            while True:
                cause = self._causes.popleft()
                self._recent[cause.id] = _described(cause)
        if not batch:
            return 0
        if self._db is None:
            # No file (it could not be opened, or it is closed): the events are let go, and counted, so that health
            # says what the history lost. Logged once, where the file failed to open, not at each flush.
            self._not_written += len(batch)
            return 0
        values = self._values(batch)
        written = len(batch)
        self._writing = written
        try:
            with self._transaction() as db:
                _insert(db, values)
        except sqlite3.Error as exc:
            self._not_written += written
            log.warning("event history: %d events not written: %s", written, exc)
            return 0
        finally:
            self._writing = 0
        self.written += written
        # The writer sleeps until the next batch (a minute, at the usual pace): the pages it wrote stay in the
        # operating system's cache, so its own copy is given back; the next flush re-reads a few of them.
        with contextlib.suppress(sqlite3.Error):
            give_back_page_cache(self._db)
        return written

    def _values(self, batch: list[Event]) -> list[Value]:
        """The columns of ``batch``'s rows, row after row in one flat list (as :func:`_insert` binds them); each
        event is remembered for the ``because`` of the events after it."""
        recent = self._recent
        values: list[Value] = []
        for e in batch:
            because = recent.get(e.cause) if e.cause is not None else None
            values += (e.id, e.ts, str(e.kind), e.entity, json.dumps(e.value), e.unit, e.rule, e.cause, e.detail,
                       because)
            recent[e.id] = _described(e)
        excess = len(recent) - RECENT_CAUSES
        if excess > 0:
            # The oldest first, in one pass: ``next(iter(...))`` per deletion walks every slot already deleted from
            # the dict's front again, a cost that grows with the batch.
            for old in list(itertools.islice(recent, excess)):
                del recent[old]
        return values

    def _prune_or_say_why(self) -> None:
        """A prune the card refuses (full: VACUUM needs room for a copy) must not end the writer: the history keeps
        recording, and the prune is tried again after ``prune_s``."""
        try:
            self.prune()
        except sqlite3.Error as exc:
            self._last_prune = self._wall()
            log.warning("event history: prune failed (%s); recording goes on, the prune is retried in %.0f s",
                        exc, self.prune_s)

    def prune(self) -> int:
        """Delete rows older than the window, then the oldest beyond ``max_bytes``; the rows deleted."""
        if self._db is None:
            return 0
        self._last_prune = self._wall()
        deleted = 0
        with self._transaction() as db:
            deleted += db.execute("DELETE FROM events WHERE ts < ?", (self._wall() - self.window_s,)).rowcount
        while self.size_bytes() > self.max_bytes:
            with self._transaction() as db:
                total = db.execute("SELECT count(*) FROM events").fetchone()[0]
                if total == 0:
                    break
                cut = max(1, total // 10)
                deleted += db.execute(
                    "DELETE FROM events WHERE n IN (SELECT n FROM events ORDER BY n LIMIT ?)", (cut,)).rowcount
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute("VACUUM")
        self.pruned += deleted
        return deleted

    def size_bytes(self) -> int:
        """The database's pages in use (free pages do not count: SQLite reuses them)."""
        if self._db is None:
            return 0
        pages = self._db.execute("PRAGMA page_count").fetchone()[0] - self._db.execute(
            "PRAGMA freelist_count").fetchone()[0]
        return int(pages) * int(self._db.execute("PRAGMA page_size").fetchone()[0])

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        assert self._db is not None
        self._db.execute("BEGIN")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @property
    def dropped(self) -> int:
        """Events not kept: the queue was full (the writer could not keep up, or the disk hung), a write failed, or a
        hung writer left them at :meth:`stop`."""
        return self._refused + self._not_written + self._left_at_stop

    def health(self) -> dict[str, int]:
        """Figures for health reports and the web page (thread-safe reads of counters)."""
        return {"queued": len(self._queue), "written": self.written, "dropped": self.dropped,
                "pruned": self.pruned, "thinned": self.thinned}


def query(
    path: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    entities: Sequence[str] = (),
    limit: int | None = None,
) -> list[Row]:
    """Rows from the history at ``path``, oldest first (the newest ``limit`` when given); each with the
    event its ``cause`` names (when the writer still remembered it). Opens the file read-only: any
    process may ask while the gateway writes."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        where: list[str] = ["1=1"]
        args: list[float | str] = []
        if since is not None:
            where.append("e.ts >= ?")
            args.append(since)
        if until is not None:
            where.append("e.ts <= ?")
            args.append(until)
        if entities:
            where.append(f"e.entity IN ({','.join('?' * len(entities))})")
            args.extend(entities)
        # Only fixed clauses are joined here; every value is a bound parameter.
        sql = _SELECT + " AND ".join(where) + " ORDER BY e.n DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        found = db.execute(sql, args).fetchall()
    finally:
        db.close()
    rows = []
    for r in reversed(found):
        rows.append(Row(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] is not None else None,
                        r[5], r[6], r[7], r[8], r[9]))
    return rows


def parse_since(text: str) -> float:
    """``2h``, ``30m``, ``1d``, ``90s`` or plain seconds: the span in seconds; ValueError otherwise."""
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 30m, 2h or 1d") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 30m, 2h or 1d")
    return seconds


def _mono(event: Event) -> float:
    return event.mono


def _described(event: Event) -> str:
    """``entity=value unit (kind)``: how a row names the event that caused it."""
    unit = f" {event.unit}" if event.unit else ""
    return f"{event.entity}={_text(event.value)}{unit} ({event.kind})"


def _text(value: Value) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    return "-" if value is None else str(value)


_LEVELS = "|".join(level.name.lower() for level in Level)
_CLAIM = re.compile(rf"^[\w.:-]+ \((?:{_LEVELS})\) ")
_CLAIM_VALUE = re.compile(r"(\([a-z_]+\)) (True|False)\b")


def format_rows(rows: Sequence[Row], tz: dt.tzinfo | None = None) -> str:
    """One line per event, as an installer reads it: time, entity, value, and why (the rule, the event
    that caused it, and for an output's state the claim that holds it: ``held by light_on_motion (rules)
    on``). The entity column is as wide as the longest entity shown, so the values line up."""
    width = max((len(row.entity) for row in rows), default=0)
    lines = []
    for row in rows:
        when = dt.datetime.fromtimestamp(row.ts, tz).strftime("%Y-%m-%d %H:%M:%S")
        unit = f" {row.unit}" if row.unit else ""
        why = [f"rule {row.rule}"] if row.rule else []
        if row.because:
            why.append(f"after {row.because}")
        if row.detail:
            why.append(_claims(row.detail) if row.kind == "state" else row.detail)
        tail = f"  ({'; '.join(why)})" if why else ""
        lines.append(f"{when}  {row.kind:<12} {row.entity:<{width}} {_text(row.value)}{unit}{tail}")
    return "\n".join(lines)


def _claims(detail: str) -> str:
    """An output's ``detail`` (the arbiter's ``holder (level) True; waiting: ...``) in the installer's words:
    ``held by holder (level) on; waiting: ...``; any other detail unchanged."""
    if not _CLAIM.match(detail):
        return detail
    return "held by " + _CLAIM_VALUE.sub(lambda m: f"{m.group(1)} {'on' if m.group(2) == 'True' else 'off'}", detail)
