"""The durable outbox: every event waits here, in SQLite, until the broker acknowledges it.

Why: paho keeps unacknowledged messages in memory only, so a gateway killed
during a broker outage would lose them. The outbox makes delivery *at least
once, in order* across broker outages, restarts and SIGKILL.

How it is used (see ``docs/mqtt.md``, "Delivery guarantee")::

    seq = outbox.add(topic, make_payload, droppable=True, ts=event.ts)  # any thread, never blocks on I/O
    outbox.commit_if_due()                     # publisher thread: one transaction per batch window (young rows wait)
    rows = outbox.fetch(after=handed, limit=n) # rows in seq order: committed ones, then those awaiting commit
    outbox.ack(seq)                            # broker's PUBACK; deleted with the next commit
    outbox.ack_all(seqs)                       # the same for a publisher round's acks, under one lock

An event is handed to paho as soon as it is accepted, without waiting for its
commit: the batch window spares the SD card without adding to the latency.
That weakens nothing: a row is deleted only on PUBACK, and a row not yet
committed when the process dies was never durable either way. A row the broker
acknowledges before its commit is never written (nor deleted): while the broker
keeps up the file hardly changes. For that, a window's commit leaves its
youngest rows (those accepted in the last :data:`CARRY_FRACTION` of the window,
not yet acknowledged) to the next window, which closes ``batch_ms`` after the
first of them: every row is still on disk, or delivered, within ``batch_ms`` of
its acceptance, and a row's PUBACK has that long to come.

Settings and their reasons:

* ``batch_ms``: events accepted within this window share one transaction.
  One commit per event writes ~27x more bytes per event to the SD card.
* ``synchronous``: ``NORMAL`` (default) keeps every committed row through a
  process kill (WAL); power loss may lose the last commits. ``FULL`` fsyncs
  every commit. ``OFF`` is for tests.
* ``max_events`` and ``reserve``: the bounds, applied by kind (Kura's store-and-forward keeps a
  priority reserve the same way). Above ``max_events`` readings are coalesced: those a
  newer reading of the same entity supersedes go (oldest first), then the events of no lasting
  value (timers, system). Transitions (alarm, availability, rejected, command, state, a rule's
  ``publish``) and the newest reading of each entity are kept until ``max_events + reserve``, the
  hard limit; past it the oldest of those readings go, then the oldest command, state and publish
  rows, and alarm, availability and rejected rows last of all. Every row shed is counted in
  ``counters.dropped`` and, by kind, in ``counters.shed_by_kind``. Shedding deletes rows and
  never reorders them, so what is delivered stays in order per entity; the hub sees a gap in ``seq``.
* ``max_packet_size``: an event whose PUBLISH packet would exceed it is
  refused at :meth:`add` (``counters.oversized``) and never queued: one
  oversized publish makes a broker drop the connection again and again.

``seq`` is the per-gateway sequence number in every payload. It is assigned
here, strictly increasing, and persists across restarts (SQLite
``AUTOINCREMENT``). Because rows may be published before their commit, the
outbox keeps a *reservation* on disk (:data:`SEQ_RESERVE` ahead of the newest
seq, renewed by the commit that finds less than half of it left ahead) and
publishes only seqs up to it; after a
restart after a crash numbering resumes above the reservation (a clean close
gives the unused part back). So a seq the hub has seen is never given to
another event. Gaps are possible (dropped rows; rows lost when
the process dies before their commit; the unused reservation after a restart),
repeats are not.

Local control never depends on this file. At start:

* an outbox SQLite cannot read (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``: a lost sector, a
  half-written card) is moved aside to ``outbox.sqlite3.corrupt-<timestamp>`` (with its ``-wal``
  and ``-shm``) and replaced by an empty one; its events are lost to forwarding, logged;
* an outbox that cannot be opened or written at all (a read-only or missing state directory, a
  full disk, an I/O error), or whose replacement fails, makes the outbox run **in memory**
  (:attr:`Outbox.degraded` says why): forwarding is *degraded* — events are still published
  while the broker is reachable and wait in memory (at most :data:`DEGRADED_MAX_EVENTS`) while
  it is not, but a restart loses them. Logged as an ERROR; health and ``gateway status`` show it.

Only :class:`OutboxInUse` (a second gateway on the same state directory) still stops the start.
A new outbox (a replacement, or memory) numbers from the wall clock in milliseconds
(``seq_floor``), so that seqs keep increasing for a hub that remembers the highest one.

Bytes written are counted from SQLite's own checkpoint figures (WAL frames
plus the pages copied back to the database file, at most one copy of each of
its pages per checkpoint); file-system metadata and the flash translation
layer are not included.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.sqlite_memory import MultiRowInsert, cap_page_cache, give_back_freed_memory, give_back_page_cache
from gateway.mqtt import MqttSetupError
from gateway.mqtt.topics import EVENT_STREAM

log = logging.getLogger(__name__)

Synchronous = Literal["OFF", "NORMAL", "FULL"]

SEQ_RESERVE = 100_000
"""How far ahead of the newest seq the on-disk reservation runs (see the module docstring)."""
CHECKPOINT_EVERY_COMMITS = 100
CHECKPOINT_EVERY_SECONDS = 5.0
CARRY_FRACTION = 0.5
"""The part of ``batch_ms`` at the end of a window whose rows, not yet acknowledged, wait for the next window's commit
(:meth:`Outbox.commit_if_due`) when they are all that commit would write. A steady stream's newest rows were always
unacknowledged at their window's commit (handed to paho a moment before): written, then deleted at the next commit, a
4 kB page each time. At 100 and 1,000 lines/s that was 146-191 and 192 KiB/s of WAL (issue 14). Half of 20 ms leaves a
PUBACK 10 ms: several round trips to a broker on the house's network, and the uplink's own gathering pause
(``netloop.ACK_GATHER``, 5 ms; a quarter of the window left rows 5.1-5.4 ms old written). The next window then closes
10-20 ms later. Only when nothing else would be written: with the broker down, or acknowledging slower than that, a
carry saves no write and would double the transactions (the review measured 48 against 91 a second at 1,000 lines/s
with nothing acknowledged)."""
DEGRADED_MAX_EVENTS = 10_000
"""The bound of an outbox in memory (forwarding degraded): ~2 MB, whatever ``max_events`` says."""
DEGRADED_RESERVE = 10_000
"""The reserve of an outbox in memory, whatever ``reserve`` says."""

KIND_CODES: dict[str, int] = {
    "other": 0, "reading": 1, "timer": 2, "system": 3, "publish": 4, "command": 5, "state": 6,
    "rejected": 7, "availability": 8, "alarm": 9,
}
"""The kind of a row, stored in its ``droppable`` column (so an outbox written before the lanes reads
the same: its 1 was a reading, its 0 a row to keep)."""
KIND_NAMES = {code: name for name, code in KIND_CODES.items()}
SHED_ORDER: tuple[tuple[tuple[int, ...], bool], ...] = (
    ((KIND_CODES["timer"], KIND_CODES["system"], KIND_CODES["other"]), False),
    ((KIND_CODES["reading"],), True),
    ((KIND_CODES["publish"], KIND_CODES["command"], KIND_CODES["state"]), True),
    ((KIND_CODES["rejected"], KIND_CODES["availability"], KIND_CODES["alarm"]), True),
)
"""The lanes after superseded readings, shed in this order, oldest first within a lane; ``True``: only
past the hard limit (``max_events + reserve``). Readings left then are the newest of their entity."""
READING = KIND_CODES["reading"]
WAL_HEADER = 32
WAL_FRAME_HEADER = 24
PAGE_CACHE_KB = 512
"""SQLite's page cache for the outbox file, in KiB (SQLite's default is 2,000). The rows the publisher reads
and writes are at the two ends of the table (the oldest unacknowledged, the newest accepted), a few pages
each; a bigger cache only kept pages of rows long delivered or shed: 2 MB that flood d left behind (issue
17). Spilling to the WAL inside a transaction is left where it was (:func:`core.sqlite_memory.cap_page_cache`)."""
RECENT_ROWS = 1024
"""Committed rows the outbox keeps in memory for :meth:`Outbox.fetch`, at most: the publisher usually hands rows over
a window or two after their commit, and reading them back from SQLite cost a step (and a GIL hand-over) per row
(issue 14). 1,024 rows are three commit windows at 10,000 lines/s, ~300 kB; older rows are read from the file."""
SHRINK_AFTER_ROWS = 1000
"""Once the outbox has drained (depth 0) and at least this many rows were written since it last did so,
its connection gives back all of its page cache (``PRAGMA shrink_memory``): the pages are re-read from the
operating system's cache when next needed, a handful of them."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    droppable INTEGER NOT NULL,
    ts REAL NOT NULL
)
"""


STREAM_SUFFIX = f"/{EVENT_STREAM}"
"""The end of the event stream's topic (``<base>/events``, ``[mqtt] event_batches``): its rows are events of every
entity, each with its ``entity`` in its JSON payload."""
_READING_KEY = (
    f"CASE WHEN topic LIKE '%{STREAM_SUFFIX}' AND json_valid(CAST(payload AS TEXT)) "
    "THEN substr(topic, 1, length(topic) - 1) || '/' || json_extract(CAST(payload AS TEXT), '$.entity') "
    "ELSE topic END"
)
"""The key of a reading row (whose newest reading it is, for coalescing): its entity's ``event/<entity>`` topic,
also for a row of the stream, whose readings of all entities share one topic. In SQL, for the rows an outbox holds
when it is opened; :meth:`Outbox.add` is given it."""


INSERT_CHUNKS = (64, 16, 4, 1)
"""Rows per INSERT statement of a window's rows (:class:`core.sqlite_memory.MultiRowInsert`: one step, one GIL
hand-over, per statement; 6 ms per ``executemany`` at 10,000 lines/s before). No larger than 64 rows: a 256-row
statement alone held 157 kB of SQLite's memory for good, which the drained outbox must give back
(tests/test_mqtt_outbox.py); 64 rows hold 40 kB and a 1,000-row window is still 16 statements."""
_insert_values = MultiRowInsert("outbox", ("seq", "topic", "payload", "droppable", "ts"), INSERT_CHUNKS)


def _insert(db: sqlite3.Connection, rows: list[tuple[int, str, bytes, int, float]]) -> None:
    """Insert ``rows`` in a few multi-row statements (:data:`INSERT_CHUNKS`), in order."""
    # The payload as a bytearray, stored as the same BLOB: sqlite3 binds bytearray, int, float and str directly but
    # looks ``bytes`` up in its adapter registry first (two failed attribute lookups, each raising and clearing an
    # exception: 1,400 instructions a row, 12 % of the insert, measured).
    _insert_values(db, [value for seq, topic, payload, code, ts in rows
                        for value in (seq, topic, bytearray(payload), code, ts)])


def seq_runs(seqs: list[int]) -> list[tuple[int, int]]:
    """The seqs as runs of consecutive numbers, ``(first, last)``, ascending (duplicates merged): a window's acks
    are mostly one run, deleted in one statement (one step, as :data:`INSERT_CHUNKS` says why)."""
    runs: list[tuple[int, int]] = []
    ordered = sorted(seqs)
    if not ordered:
        return runs
    first = last = ordered[0]
    for seq in ordered:
        if seq > last + 1:
            runs.append((first, last))
            first = seq
        last = seq
    runs.append((first, last))
    return runs


def _delete(db: sqlite3.Connection, seqs: list[int]) -> int:
    """Delete the rows ``seqs`` (those still there); returns how many went."""
    if not seqs:
        return 0
    return db.executemany("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", seq_runs(seqs)).rowcount


def _without_delivered(pending: _Pending) -> tuple[_Pending, int]:
    """``pending`` without its rows the broker has already acknowledged (and without their acks): they need not be
    written, nor then deleted. Returns it and how many rows left."""
    if not pending.acks or not pending.rows:
        return pending, 0
    acked = set(pending.acks)
    delivered = acked.intersection(row[0] for row in pending.rows)
    if not delivered:
        return pending, 0
    rows = [row for row in pending.rows if row[0] not in delivered]
    acks = [seq for seq in pending.acks if seq not in delivered]
    return _Pending(rows, acks, pending.refused, pending.since), len(delivered)


def _seq_of(row: tuple[int, str, bytes, int, float]) -> int:
    return row[0]


def _time_of(arrival: tuple[float, int]) -> float:
    return arrival[0]


def _seq_of_arrival(arrival: tuple[float, int]) -> int:
    return arrival[1]


class OutboxInUse(MqttSetupError):
    """Another process has this outbox open: two gateways on one state directory would send
    the same events twice and fight over the sequence numbers."""


class _Unusable(Exception):
    """The outbox file cannot be used; ``str()`` says why, for a person."""


def _corrupt(exc: sqlite3.Error) -> bool:
    """SQLite cannot read the file as a database: replacing it is the only way on."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def _lock_exclusively(path: Path) -> int:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutboxInUse(f"{path} is in use by another gateway process (same state_dir?)") from None
    return fd


def publish_packet_size(topic: str, payload: bytes, mqtt5: bool = True) -> int:
    """Bytes of a QoS 1 PUBLISH packet with no properties: what the broker's maximum packet size limits."""
    remaining = 2 + len(topic.encode()) + 2 + (1 if mqtt5 else 0) + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16_384 else 3 if remaining < 2_097_152 else 4
    return 1 + length_bytes + remaining


@dataclass(slots=True, frozen=True)
class Row:
    seq: int
    topic: str
    payload: bytes


@dataclass(slots=True)
class OutboxCounters:
    accepted: int = 0
    """Events given a seq and queued for the next commit."""
    committed: int = 0
    delivered: int = 0
    """Rows the broker acknowledged: deleted from the file, or never written (``delivered_unwritten``)."""
    delivered_unwritten: int = 0
    """Rows the broker acknowledged before their commit: delivered without being written to the file."""
    carried: int = 0
    """Rows a window's commit left, young and not yet acknowledged, to the next window (:data:`CARRY_FRACTION`)."""
    dropped: int = 0
    """Rows deleted by the overflow policy, never delivered."""
    oversized: int = 0
    """Events refused (or rows removed) because they exceed the broker's maximum packet size."""
    commits: int = 0
    bytes_written: int = 0
    commit_failures: int = 0
    """Transactions SQLite refused (disk full, I/O error); their events stay in memory and are retried."""
    closed_drops: int = 0
    """Events offered after :meth:`Outbox.close` (shutdown races), not queued."""
    shed_by_kind: dict[str, int] = field(default_factory=dict)
    """``dropped`` by the kind of event (``reading``, ``command``, ...); replaced, never changed in place,
    so a reader on another thread always sees a whole one."""

    def count_shed(self, shed: dict[int, int]) -> None:
        """Add rows shed, by kind code (see :data:`KIND_CODES`)."""
        if not shed:
            return
        merged = dict(self.shed_by_kind)
        for code, count in shed.items():
            name = KIND_NAMES.get(code, "other")
            merged[name] = merged.get(name, 0) + count
        self.dropped += sum(shed.values())
        self.shed_by_kind = merged


@dataclass(slots=True)
class _Pending:
    rows: list[tuple[int, str, bytes, int, float]] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    since: float | None = None


class Outbox:
    """See the module docstring. :meth:`add` and :meth:`ack` are safe from any thread;
    the other methods serialise on one connection lock."""

    def __init__(
        self,
        path: Path,
        *,
        batch_ms: float = 20.0,
        synchronous: Synchronous = "NORMAL",
        max_events: int = 200_000,
        reserve: int = 100_000,
        max_packet_size: int | None = None,
        mqtt5: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        seq_floor: int = 0,
    ) -> None:
        self.path = path
        self.batch = batch_ms / 1000.0
        self.max_events = max_events
        self.reserve = reserve
        self._floors: dict[int, int] = {}
        """Per lane (index in :data:`SHED_ORDER`; -1: superseded readings): no sheddable row below this seq."""
        self._newest_reading: dict[str, int] = {}
        """An entity's key (its ``event/<entity>`` topic, :data:`_READING_KEY`) -> the seq of its newest reading: the
        one coalescing keeps."""
        self.max_packet_size = max_packet_size
        self.mqtt5 = mqtt5
        self.counters = OutboxCounters()
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._pending = _Pending()
        self._arrivals: list[tuple[float, int]] = []
        """(monotonic time, seq) of each row added, in order, until the commit that writes or delivers it: which rows
        are young at a commit (:data:`CARRY_FRACTION`)."""
        self.batches = 0
        """Batch windows opened so far (an add or an ack found nothing waiting for a commit): a caller that
        sees it change knows the publisher must be woken to commit within ``batch_ms`` (bridge.forward)."""
        self._closed = False
        self._db_closed = False
        self._failing: str | None = None
        self._lock_fd: int | None = None
        self.degraded: str | None = None
        """Why the outbox runs in memory only (forwarding degraded); None while it is on disk."""
        self.moved_aside: Path | None = None
        """Where an unreadable outbox file was moved at start (its events were not sent)."""
        try:
            self._db = self._open_durable(path, synchronous, seq_floor)
        except _Unusable as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self.degraded = str(exc)
            self.max_events = min(max_events, DEGRADED_MAX_EVENTS)
            self.reserve = min(reserve, DEGRADED_RESERVE)
            self._db = self._open_memory(seq_floor)
            log.error("forwarding DEGRADED: %s. Events are still published while the broker is reachable, but "
                      "wait in memory only (at most %d) while it is not, and a restart loses them. Rules, "
                      "heating and the alarm are not affected. Fix the state directory (free space, "
                      "permissions) and restart the gateway.", self.degraded, self.max_events)
        self._commits_since_checkpoint = 0
        self._last_checkpoint = monotonic()
        self._written_since_shrink = 0
        """Rows inserted since the page cache was last given back (:data:`SHRINK_AFTER_ROWS`)."""
        try:
            self._checkpoint()
        except sqlite3.Error as exc:  # the WAL stays for the next checkpoint; nothing is lost
            log.warning("outbox: checkpoint at start failed: %s", exc)

    def _open_durable(self, path: Path, synchronous: Synchronous, seq_floor: int) -> sqlite3.Connection:
        """The outbox file, locked and loaded; an unreadable one replaced. :class:`_Unusable` if the
        file cannot serve (read-only, full, missing directory), :class:`OutboxInUse` if it is taken."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _Unusable(f"cannot create the state directory {path.parent}: {exc.strerror}") from None
        try:
            self._lock_fd = _lock_exclusively(path)
        except OSError as exc:
            raise _Unusable(f"cannot create the outbox's lock file {path}.lock: {exc.strerror}") from None
        try:
            try:
                return self._load(self._open(path, synchronous), 0)
            except sqlite3.DatabaseError as exc:
                if not _corrupt(exc):
                    raise
                self.moved_aside = self._move_aside(path, exc)
                return self._load(self._open(path, synchronous), seq_floor)
        except (sqlite3.Error, OSError) as exc:
            raise _Unusable(f"cannot use the outbox {path}: {exc}") from None

    def _move_aside(self, path: Path, exc: sqlite3.Error) -> Path:
        """Rename an unreadable outbox (and its WAL and shared-memory files, which belong to it) out of the way."""
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            for suffix in ("-wal", "-shm", ""):
                source = Path(f"{path}{suffix}")
                if source.exists():
                    source.rename(f"{aside}{suffix}")
        except OSError as error:
            raise _Unusable(f"the outbox {path} is unreadable ({exc}) and cannot be moved aside: "
                            f"{error.strerror}") from None
        log.error("the outbox %s is unreadable (%s): moved aside to %s and replaced by an empty one; the events "
                  "it held will not be sent", path, exc, aside)
        return aside

    def _open_memory(self, seq_floor: int) -> sqlite3.Connection:
        """Forwarding degraded: the same queue, ordering and bound, in memory only."""
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.execute(_SCHEMA)
        return self._load(db, seq_floor)

    def _load(self, db: sqlite3.Connection, seq_floor: int) -> sqlite3.Connection:
        """Read the depth and the seqs of an opened outbox and renew the reservation; closes ``db`` on error."""
        try:
            self._page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            self._depth = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            self._next_seq = max(int(row[0]) if row else 0, seq_floor) + 1
            self._committed_seq = self._next_seq - 1
            self._recent: list[tuple[int, str, bytes, int, float]] = []
            self._recent_from = self._next_seq
            self._newest_reading = {str(key): int(seq) for key, seq in db.execute(
                f"SELECT {_READING_KEY} AS key, MAX(seq) FROM outbox WHERE droppable = ? GROUP BY key",  # noqa: S608 - a constant
                (READING,))}
            self._db = db
            self._reserve(self._next_seq - 1 + SEQ_RESERVE)
            self._reserved = self._next_seq - 1 + SEQ_RESERVE
        except sqlite3.Error:
            db.close()
            raise
        return db

    @staticmethod
    def _open(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            # Before the WAL is first opened, so that its index lives in this process's memory, not in a -shm file
            # (whose page every commit dirtied, for the kernel to write back to the card), and the file locks are
            # taken once, not around every transaction (6 fcntl a commit). The outbox is this process's alone
            # (_lock_exclusively); no other reader may open it while it runs (docs/mqtt.md).
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # we checkpoint, and count the bytes
            db.execute("PRAGMA journal_size_limit=4194304")
            cap_page_cache(db, PAGE_CACHE_KB)
            db.execute(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _release_reservation(self) -> None:
        """On a clean close every seq given out is on disk (or delivered): numbering resumes right after
        it, without the gap a crash leaves. Kept when rows still wait in memory (a failing disk)."""
        with self._lock:
            if self._pending.rows:
                return
            last = self._next_seq - 1
        try:
            self._db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'outbox'", (last,))
        except sqlite3.Error as exc:
            log.warning("outbox: could not release the seq reservation: %s", exc)

    def _reserve(self, upto: int) -> None:
        """Record on disk that seqs up to ``upto`` may be in use (inside the caller's transaction, if any)."""
        updated = self._db.execute("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'outbox'", (upto,))
        if updated.rowcount == 0:
            self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', ?)", (upto,))

    # -- any thread ------------------------------------------------------------------------

    def add(self, topic: str, make_payload: Callable[[int], bytes], *, ts: float, kind: str | None = None,
            droppable: bool = False, key: str | None = None) -> int | None:
        """Give the event the next seq and queue it for the next commit; None if refused.

        ``kind`` (a :data:`KIND_CODES` name, e.g. an event's ``Kind`` value) decides what is shed first when
        the bound is reached; without it, ``droppable`` rows count as readings and the others as ``other``.
        ``key``: whose newest reading this is, for coalescing (the entity's ``event/<entity>`` topic, also when the
        row is for the stream ``<base>/events``: :data:`_READING_KEY`); default the topic."""
        added = self.add_made(topic, make_payload, ts=ts, kind=kind, droppable=droppable, key=key)
        return None if added is None else added[0]

    def add_made(self, topic: str, make_payload: Callable[[int], bytes], *, ts: float, kind: str | None = None,
                 droppable: bool = False, key: str | None = None) -> tuple[int, bytes] | None:
        """:meth:`add`, returning the seq and the payload it made: the bridge hands both to paho at once, without
        a closure per event to catch the payload on its way in (issue 14, the dispatcher's cost per reading)."""
        code = KIND_CODES.get(kind, 0) if kind is not None else READING if droppable else 0
        with self._lock:
            if self._closed:
                self.counters.closed_drops += 1
                return None
            seq = self._next_seq
            payload = make_payload(seq)
            limit = self.max_packet_size  # fits(), inline: a call less per event when there is no limit
            if limit is not None and publish_packet_size(topic, payload, self.mqtt5) > limit:
                self.counters.oversized += 1
                if self.counters.oversized in (1, 10) or self.counters.oversized % 1000 == 0:
                    log.error("event for %s refused: %d bytes exceed the broker's maximum packet size %s "
                              "(%d refused so far)", topic, len(payload), self.max_packet_size,
                              self.counters.oversized)
                return None
            self._next_seq = seq + 1
            self._pending.rows.append((seq, topic, payload, code, ts))
            if code == READING:
                self._newest_reading[key or topic] = seq
            now = self._monotonic()
            self._arrivals.append((now, seq))
            if self._pending.since is None:
                self._pending.since = now
                self.batches += 1
            self.counters.accepted += 1
            return seq, payload

    def ack(self, seq: int) -> None:
        """The broker has the row: delete it with the next commit."""
        self.ack_all((seq,))

    def ack_all(self, seqs: Iterable[int]) -> None:
        """The broker has these rows (a PUBACK's, or the acks of a publisher round): one lock for all of them."""
        with self._lock:
            self._pending.acks.extend(seqs)
            if self._pending.since is None:
                self._pending.since = self._monotonic()
                self.batches += 1

    def refuse(self, seq: int) -> None:
        """Remove a committed row that turned out too large for the broker (its limit came with CONNACK)."""
        with self._lock:
            self.counters.oversized += 1
            self._pending.refused.append(seq)
            if self._pending.since is None:
                self._pending.since = self._monotonic()
                self.batches += 1

    def fits(self, topic: str, payload: bytes) -> bool:
        limit = self.max_packet_size
        return limit is None or publish_packet_size(topic, payload, self.mqtt5) <= limit

    @property
    def depth(self) -> int:
        """Rows committed and not yet acknowledged, plus rows waiting for their commit."""
        with self._lock:
            return self._depth + len(self._pending.rows)

    @property
    def last_seq(self) -> int:
        """The seq given to the newest accepted event (committed or not)."""
        with self._lock:
            return self._next_seq - 1

    @property
    def trouble(self) -> str | None:
        """Why forwarding is degraded now: the outbox runs in memory, or its writes are failing; else None."""
        return self.degraded or self._failing

    @property
    def reserved(self) -> int:
        """The newest seq the reservation on disk covers: only rows up to it may be published."""
        return self._reserved

    @property
    def committed_seq(self) -> int:
        """The newest seq a commit has dealt with: everything up to it is on disk, and survives a process kill, or
        was acknowledged by the broker before its commit (never written: :meth:`commit`)."""
        with self._lock:
            return self._committed_seq

    # -- the publisher thread ----------------------------------------------------------------

    def due_in(self) -> float | None:
        """Seconds until the batch window closes; None when nothing waits."""
        with self._lock:
            since = self._pending.since
        return None if since is None else max(0.0, since + self.batch - self._monotonic())

    def commit_if_due(self) -> int:
        """:meth:`commit` once the batch window has closed; its young rows wait (:data:`CARRY_FRACTION`)."""
        due = self.due_in()
        return self.commit(carry=True) if due is not None and due <= 0 else 0

    def commit(self, *, carry: bool = False) -> int:
        """Write the waiting rows and deletions in one transaction; returns rows inserted.

        A waiting row the broker has already acknowledged is not written at all (nor deleted): it is delivered,
        and the file only keeps what is not. With the window handing rows to paho before their commit, that is
        most rows while the broker keeps up, so a gateway that keeps up hardly writes to its SD card (issue 14);
        a commit left with nothing to write, no reservation to renew, opens no transaction. ``carry``: the rows
        accepted in the last :data:`CARRY_FRACTION` of the window and not yet acknowledged wait for the next window
        (:meth:`_carry_young`); without it (stopping, closing) everything waiting is written now."""
        with self._db_lock:
            if self._db_closed:
                return 0
            with self._lock:
                pending, self._pending = self._pending, _Pending()
                reserve = self._next_seq - 1 + SEQ_RESERVE
                cut = self._monotonic() - self.batch * CARRY_FRACTION  # rows accepted after it are young
            if not pending.rows and not pending.acks and not pending.refused:
                return 0
            newest = pending.rows[-1][0] if pending.rows else None
            pending, unwritten = _without_delivered(pending)
            self._account_unwritten(unwritten)  # delivered, whatever becomes of the write
            renew = reserve > self._reserved + SEQ_RESERVE // 2  # see _write
            pending, newest = self._due(pending, newest, cut if carry and not renew else None)
            if (pending.rows or pending.acks or pending.refused or renew
                    or self._failing is not None):  # a failing disk: a transaction tells when it writes again
                try:
                    delivered, refused, shed = self._write(pending, reserve if renew else None)
                except sqlite3.Error as exc:
                    self._restore(pending, exc)
                    return 0
                if renew:
                    self._reserved = reserve
                committed = True
            else:
                delivered, refused, shed, committed = 0, 0, {}, False
            self._remember(pending, shed)
            if committed and self._failing:
                self._failing = None
                log.warning("the outbox writes to %s again", self.path)
            with self._lock:
                self._depth += len(pending.rows) - delivered - refused - sum(shed.values())
                if newest is not None:  # every seq up to it is on disk now, or at the broker
                    self._committed_seq = newest
                self.counters.committed += len(pending.rows)
                self.counters.delivered += delivered
                self.counters.count_shed(shed)
                self.counters.commits += committed
            if committed:
                self._commits_since_checkpoint += 1
                if (self._commits_since_checkpoint >= CHECKPOINT_EVERY_COMMITS
                        or self._monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY_SECONDS):
                    self._checkpoint()
            self._written_since_shrink += len(pending.rows)  # without a transaction too: a drained outbox shrinks
            if self._written_since_shrink >= SHRINK_AFTER_ROWS and self._drained():
                self._shrink()
            return len(pending.rows)

    def _account_unwritten(self, unwritten: int) -> None:
        """Rows delivered before their commit (:func:`_without_delivered`) count as delivered."""
        if unwritten:
            with self._lock:
                self.counters.delivered += unwritten
                self.counters.delivered_unwritten += unwritten

    def _due(self, pending: _Pending, newest: int | None, cut: float | None) -> tuple[_Pending, int | None]:
        """What this commit writes of ``pending`` (``newest``: its newest seq), and the newest seq then on disk or
        delivered: nothing, when its rows are all young and go back to wait (:meth:`_carry_young`; ``cut`` None:
        none waits)."""
        carried = None if cut is None else self._carry_young(pending, cut)
        if carried is not None:
            pending, newest = _Pending(), carried
        self._forget_arrivals(newest)
        return pending, newest

    def _carry_young(self, pending: _Pending, cut: float) -> int | None:
        """When ``pending``'s rows were all accepted after ``cut`` (the last :data:`CARRY_FRACTION` of the batch
        window) and they are all it holds (no acknowledgement or refusal to write), put them back to wait, in front of
        any added since, for the next window, which closes ``batch_ms`` after the first of them; returns the newest
        seq before them. None (nothing carried) otherwise.

        Only then: the commit opens no transaction, and the young rows have another window to be acknowledged in.
        With an older row to write (the broker down, or slower than :data:`CARRY_FRACTION` of the window), a carry
        would save no write, only move the young rows to a transaction of their own half a window later."""
        rows = pending.rows
        if not rows or pending.acks or pending.refused:
            return None
        first = rows[0][0]
        with self._lock:
            arrivals = self._arrivals
            young = bisect.bisect_right(arrivals, cut, key=_time_of)
            if young == len(arrivals) or first < arrivals[young][1]:
                return None
            arrived = arrivals[bisect.bisect_left(arrivals, first, lo=young, key=_seq_of_arrival)][0]
            waiting = self._pending
            waiting.rows[:0] = rows
            waiting.since = arrived if waiting.since is None else min(arrived, waiting.since)
            self.counters.carried += len(rows)
        return first - 1

    def _forget_arrivals(self, newest: int | None) -> None:
        """The rows up to ``newest`` are written or delivered: their arrival times are of no more use."""
        if newest is None:
            return
        with self._lock:
            arrivals = self._arrivals
            del arrivals[:bisect.bisect_right(arrivals, newest, key=_seq_of_arrival)]

    def _remember(self, pending: _Pending, shed: dict[int, int]) -> None:
        """Keep the rows just committed in :attr:`_recent` for :meth:`fetch` (under the connection lock).

        Its contract: every seq from :attr:`_recent_from` to the newest committed one is in the file if and only if
        it is in :attr:`_recent`. A row deleted in this commit (acknowledged, refused) moves the start past it; a
        commit that shed rows starts it afresh after them; the oldest rows beyond :data:`RECENT_ROWS` go."""
        recent = self._recent + pending.rows
        start = self._recent_from
        if shed:
            start = self._committed_seq + 1 if not pending.rows else pending.rows[-1][0] + 1
        if pending.acks or pending.refused:
            start = max(start, max(pending.acks or [0]) + 1, max(pending.refused or [0]) + 1)
        if recent and recent[0][0] < start:
            recent = recent[bisect.bisect_left(recent, start, key=_seq_of):]
        if len(recent) > RECENT_ROWS:
            recent = recent[-RECENT_ROWS:]
            start = recent[0][0]
        self._recent, self._recent_from = recent, start

    def _drained(self) -> bool:
        with self._lock:
            return self._depth == 0 and not self._pending.rows

    def _shrink(self) -> None:
        """Give SQLite's page cache back (see :data:`SHRINK_AFTER_ROWS`), and the freed pages to the system
        (:func:`give_back_freed_memory`); the file is not touched. Not for an outbox in memory: its pages are
        its rows."""
        self._written_since_shrink = 0
        if self.degraded is not None:
            return
        try:
            give_back_page_cache(self._db)
        except sqlite3.Error as exc:  # nothing is lost: the cache is only memory
            log.warning("outbox: could not give the page cache back: %s", exc)
        give_back_freed_memory()

    def _write(self, pending: _Pending, reserve: int | None) -> tuple[int, int, dict[int, int]]:
        """One transaction: the rows, the seq reservation renewed up to ``reserve`` (None: it still covers half
        of :data:`SEQ_RESERVE` ahead of the newest seq, and is left alone), the deletions, the bound.

        Why not renew it in every commit: an UPDATE of ``sqlite_sequence`` rewrites its page even when the value
        does not change, one WAL frame (4 kB on the SD card, 2 writes) more per commit, ~7 % of a commit at
        10,000 lines/s (issue 14). Every seq handed to paho is still below the reservation on disk."""
        db = self._db
        floors = dict(self._floors)
        db.execute("BEGIN")
        try:
            # The acknowledged rows go first: the pages they free take this window's rows in the same transaction.
            # Inserted first, the rows took fresh pages and the emptied ones were written as well (14 WAL frames a
            # commit instead of 8 at 10,000 lines/s, issue 14). None of the acks is for a row of this window
            # (_without_delivered); a refused seq may be, so the refused rows go after the insert, as before.
            delivered = _delete(db, pending.acks)
            _insert(db, pending.rows)
            if reserve is not None:
                self._reserve(reserve)
            refused = _delete(db, pending.refused)
            shed = self._enforce_bound(len(pending.rows) - delivered - refused)
            db.execute("COMMIT")
        except BaseException:
            self._floors = floors
            db.execute("ROLLBACK")
            raise
        return delivered, refused, shed

    def _restore(self, pending: _Pending, exc: sqlite3.Error) -> None:
        """A failed commit (disk full, I/O error): keep the batch in memory, in order, for the next
        attempt, bounded as the file is (:meth:`_enforce_bound`'s policy, on the rows in memory)."""
        with self._lock:
            current = self._pending
            rows, shed = self._shed_in_memory(pending.rows + current.rows)
            self._pending = _Pending(rows, pending.acks + current.acks,
                                     pending.refused + current.refused, pending.since or current.since)
            self.counters.count_shed(shed)
            self.counters.commit_failures += 1
        if not self._failing:
            self._failing = f"the outbox cannot write to {self.path} ({exc}): events wait in memory"
            log.error("the outbox cannot write to %s (%s): events are kept in memory and retried", self.path, exc)

    def _enforce_bound(self, growth: int) -> dict[int, int]:
        """Shed rows by kind until the outbox is within its bounds (module docstring); rows shed by kind code."""
        depth = self._depth + growth
        shed: dict[int, int] = {}
        if depth <= self.max_events:
            return shed
        with self._lock:
            newest = set(self._newest_reading.values())
        # 1. readings superseded by a newer reading of the same entity, oldest first
        # Each scan starts at its floor: below it no row of its kind is left to shed, so a long queue of
        # transitions held in the reserve is not read again on every commit (measured: 4,000 rows/s
        # drained instead of 11,000 when each commit scanned the whole table).
        superseded: list[tuple[int]] = []
        excess = depth - self.max_events
        top = int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()[0])
        floor, kept = self._floors.get(-1, 0), False
        cursor = self._db.execute("SELECT seq FROM outbox WHERE seq > ? AND droppable = ? ORDER BY seq",
                                  (floor, READING))
        for (seq,) in cursor:
            if len(superseded) >= excess:
                break
            if seq in newest:
                kept = True
            else:
                superseded.append((seq,))
                floor = floor if kept else seq
        else:
            floor = floor if kept else top
        cursor.close()
        self._floors[-1] = floor
        if superseded:
            count = self._db.executemany("DELETE FROM outbox WHERE seq = ?", superseded).rowcount
            shed[READING] = count
            depth -= count
        # 2. the lanes, lowest first: the first down to max_events, the others only down to the hard limit
        for index, (lane, hard) in enumerate(SHED_ORDER):
            bound = self.max_events + self.reserve if hard else self.max_events
            if depth <= bound:
                continue
            marks = ",".join("?" * len(lane))
            wanted = depth - bound
            deleted = self._db.execute(
                f"DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE seq > ? AND droppable IN ({marks}) "  # noqa: S608 - marks only
                "ORDER BY seq LIMIT ?) RETURNING seq, droppable",
                (self._floors.get(index, 0), *lane, wanted)).fetchall()
            for _, code in deleted:
                shed[code] = shed.get(code, 0) + 1
            depth -= len(deleted)
            self._floors[index] = max(seq for seq, _ in deleted) if len(deleted) == wanted else top
        if shed and self.counters.dropped == 0:
            log.error("outbox full (%d events, reserve %d): shedding readings first; see outbox.shed_by_kind "
                      "in health", self.max_events, self.reserve)
        return shed

    def _shed_in_memory(
        self, rows: list[tuple[int, str, bytes, int, float]]
    ) -> tuple[list[tuple[int, str, bytes, int, float]], dict[int, int]]:
        """:meth:`_enforce_bound` for rows waiting in memory (commits failing): the same order, in Python."""
        shed: dict[int, int] = {}
        if len(rows) <= self.max_events:
            return rows, shed
        newest = set(self._newest_reading.values())  # the rows in memory are the newest of all
        gone: set[int] = set()
        excess = len(rows) - self.max_events
        for seq, _, _, code, _ in rows:
            if len(gone) >= excess:
                break
            if code == READING and seq not in newest:
                gone.add(seq)
                shed[READING] = shed.get(READING, 0) + 1
        depth = len(rows) - len(gone)
        for lane, hard in SHED_ORDER:
            bound = self.max_events + self.reserve if hard else self.max_events
            for seq, _, _, code, _ in rows:
                if depth <= bound:
                    break
                if code in lane and seq not in gone:
                    gone.add(seq)
                    shed[code] = shed.get(code, 0) + 1
                    depth -= 1
        return [row for row in rows if row[0] not in gone], shed

    def _checkpoint(self) -> None:
        """Copy the WAL's pages back into the database file (PASSIVE: ``wal_autocheckpoint`` is off) and count the
        bytes: the WAL's frames, and the pages copied. SQLite reports the frames it checkpointed, but writes each
        page once, its newest frame; a page cannot be copied more than once, so no more pages than the file has
        (``page_count``): at 10,000 lines/s the same 8 pages took every commit, and counting each frame as a copy
        doubled the figure (issue 14)."""
        _, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > 0:
            pages = int(self._db.execute("PRAGMA page_count").fetchone()[0])
            written = WAL_HEADER + frames * (self._page_size + WAL_FRAME_HEADER) + min(copied, pages) * self._page_size
            with self._lock:
                self.counters.bytes_written += written
        self._commits_since_checkpoint = 0
        self._last_checkpoint = self._monotonic()

    def fetch(self, after: int, limit: int) -> list[Row]:
        """Rows with ``seq > after``, oldest first: committed ones, then those waiting for their commit
        (within the on-disk seq reservation). Rows of the last commits come from memory (:meth:`_remember`),
        older ones from the file."""
        if limit <= 0:
            return []
        with self._db_lock:  # no commit can move rows from memory to disk while both are read
            if self._db_closed:
                return []
            rows: list[Row] = []
            if after >= self._recent_from - 1:  # committed a moment ago: still in memory (_remember)
                start = bisect.bisect_right(self._recent, after, key=_seq_of)
                rows = [Row(seq, topic, payload) for seq, topic, payload, _, _ in self._recent[start : start + limit]]
            elif after < self._committed_seq:
                cursor = self._db.execute(
                    "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
                )
                rows = [Row(*row) for row in cursor]  # sqlite3 gives int, str and bytes already
            if len(rows) < limit:
                last = rows[-1].seq if rows else after
                with self._lock:
                    pending = self._pending.rows  # in seq order: find the first one after ``last``
                    start = bisect.bisect_right(pending, last, key=_seq_of)
                    waiting = pending[start : start + limit - len(rows)]
                rows.extend(Row(seq, topic, payload) for seq, topic, payload, _, _ in waiting
                            if seq <= self._reserved)
            return rows

    def oldest_ts(self) -> float | None:
        with self._db_lock:
            row = None if self._db_closed else self._db.execute("SELECT ts FROM outbox ORDER BY seq LIMIT 1").fetchone()
        if row is not None:
            return float(row[0])
        with self._lock:
            return self._pending.rows[0][4] if self._pending.rows else None

    def close(self) -> None:
        """Commit what waits, checkpoint, and close; later :meth:`add` calls are counted and ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.commit()
        with self._db_lock:
            self._release_reservation()
            self._checkpoint()
            self._db.close()
            self._db_closed = True
            if self._lock_fd is not None:
                os.close(self._lock_fd)
