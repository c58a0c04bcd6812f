"""How the outbox writes a batch window: several rows per INSERT statement and acknowledged runs of seqs
deleted by range (issue 14: one SQLite step per row handed the GIL over once per row). What reaches the file
must be exactly what one statement per row wrote."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt.outbox import CARRY_FRACTION, INSERT_CHUNKS, SEQ_RESERVE, Outbox, seq_runs


def stored(path: Path) -> list[tuple[int, str, bytes, int, float]]:
    with sqlite3.connect(path) as db:
        return [tuple(row) for row in db.execute("SELECT seq, topic, payload, droppable, ts FROM outbox ORDER BY seq")]


class Clock:
    """The outbox's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def numbered(i: int) -> Callable[[int], bytes]:
    """A payload that shows which row it was and the seq the outbox gave it."""
    return lambda seq: f"{i}:{seq}".encode()


def test_a_window_of_more_rows_than_one_insert_holds_is_stored_whole_and_in_order(tmp_path: Path) -> None:
    count = 2 * INSERT_CHUNKS[0] + sum(INSERT_CHUNKS[1:]) + 3  # every statement size, some of them twice
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    for i in range(count):
        outbox.add(f"gw/event/e{i % 7}", numbered(i), kind="reading" if i % 2 else "alarm", ts=1000.0 + i)
    assert outbox.commit() == count
    outbox.close()
    assert stored(tmp_path / "o.db") == [
        (i + 1, f"gw/event/e{i % 7}", f"{i}:{i + 1}".encode(), 1 if i % 2 else 9, 1000.0 + i) for i in range(count)
    ]


def test_only_the_acknowledged_rows_leave_the_outbox_when_acks_have_gaps(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    for i in range(20):
        outbox.add("gw/event/x", lambda seq: b"p", ts=1000.0 + i)
    outbox.commit()
    outbox.ack_all([5, 3, 4, 9, 10, 1])
    outbox.ack(17)
    outbox.ack(4)  # a duplicate ack deletes nothing more
    outbox.commit()
    assert outbox.counters.delivered == 7
    assert outbox.depth == 13
    outbox.close()
    assert [row[0] for row in stored(tmp_path / "o.db")] == [2, 6, 7, 8, 11, 12, 13, 14, 15, 16, 18, 19, 20]


def test_seq_runs_are_the_consecutive_stretches_of_the_seqs_in_ascending_order() -> None:
    assert seq_runs([]) == []
    assert seq_runs([7]) == [(7, 7)]
    assert seq_runs([5, 3, 4, 9, 10, 1, 4]) == [(1, 1), (3, 5), (9, 10)]


def in_file(path: Path, after: int) -> list[int]:
    with sqlite3.connect(path) as db:
        return [seq for (seq,) in db.execute("SELECT seq FROM outbox WHERE seq > ? ORDER BY seq", (after,))]


def in_outbox_file(outbox: Outbox, after: int) -> list[int]:
    """:func:`in_file` while the outbox is open: through its own connection, the only one its file admits."""
    return [seq for (seq,) in outbox._db.execute("SELECT seq FROM outbox WHERE seq > ? ORDER BY seq", (after,))]


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 12), st.booleans()),
    st.tuples(st.just("ack"), st.integers(1, 90), st.integers(1, 8)),
    st.tuples(st.just("commit"), st.just(0), st.booleans()),
    st.tuples(st.just("tick"), st.integers(0, 25), st.just(False)),
    st.tuples(st.just("fetch"), st.integers(0, 90), st.integers(1, 50)),
), max_size=40))
def test_fetch_gives_exactly_the_rows_in_the_file_then_those_awaiting_their_commit(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, bool | int]]
) -> None:
    """Recently committed rows are served from memory (``RECENT_ROWS``), and a window's commit may leave its young
    rows to the next (``carry``, :data:`CARRY_FRACTION`); whatever acks, commits, shedding and time came before, a
    fetch must give what reading the file back would have given, then the rows still waiting."""
    path = tmp_path_factory.mktemp("o") / "o.db"
    clock = Clock()
    outbox = Outbox(path, synchronous="OFF", max_events=30, reserve=10, monotonic=clock)
    waiting: list[tuple[int, float]] = []  # seq, accepted at
    acked: set[int] = set()  # since the last commit
    for action, number, flag in steps:
        if action == "add":
            for _ in range(number):
                seq = outbox.add("gw/event/x" if flag else "gw/event/y", lambda seq: b"p", kind="reading" if flag
                                 else "alarm", ts=1.0)
                assert seq is not None
                waiting.append((seq, clock.now))
        elif action == "ack":
            outbox.ack_all(range(number, number + int(flag)))
            acked.update(range(number, number + int(flag)))
        elif action == "commit":
            outbox.commit(carry=bool(flag))
            cut = clock.now - outbox.batch * CARRY_FRACTION
            left = [(seq, at) for seq, at in waiting if seq not in acked]
            deletions = acked - {seq for seq, _ in waiting}
            # carried only when the young rows are all the commit would write (CARRY_FRACTION)
            carried = flag and left and all(at > cut for _, at in left) and not deletions
            waiting = left if carried else []
            acked = set()
            assert [row.seq for row in outbox.fetch(outbox.committed_seq, 1000)] == [seq for seq, _ in waiting]
        elif action == "tick":
            clock.now += number / 1000
        else:
            expected = [seq for seq in in_outbox_file(outbox, number) + [seq for seq, _ in waiting]
                        if seq > number][: int(flag)]
            assert [row.seq for row in outbox.fetch(number, int(flag))] == expected
    outbox.close()


def test_rows_shed_at_a_commit_are_not_fetched_from_memory(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF", max_events=5, reserve=0)
    for _ in range(12):
        outbox.add("gw/event/x", lambda seq: b"p", kind="reading", ts=1.0)
    outbox.commit()
    assert outbox.counters.dropped == 7
    assert [row.seq for row in outbox.fetch(0, 50)] == in_outbox_file(outbox, 0) == [8, 9, 10, 11, 12]


def test_a_row_the_broker_acknowledged_before_its_commit_is_never_written(tmp_path: Path) -> None:
    """The window hands rows to paho before their commit; a row whose PUBACK came first is delivered, and the file
    (the SD card) need not see it, nor then its deletion."""
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    for i in range(5):
        outbox.add("gw/event/x", numbered(i), ts=1000.0 + i)
    outbox.ack_all([1, 2, 4])
    assert outbox.commit() == 2
    assert outbox.depth == 2
    assert (outbox.counters.delivered, outbox.counters.delivered_unwritten) == (3, 3)
    assert [row.seq for row in outbox.fetch(0, 10)] == [3, 5]
    outbox.close()
    assert [row[0] for row in stored(tmp_path / "o.db")] == [3, 5]


def test_a_commit_whose_rows_were_all_delivered_opens_no_transaction(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    outbox = Outbox(path, synchronous="OFF")
    outbox.add("gw/event/x", numbered(0), ts=1000.0)
    outbox.commit()  # seq 1 stays, unacknowledged
    commits, wal = outbox.counters.commits, (tmp_path / "o.db-wal").stat().st_size
    for i in range(1, 51):
        outbox.add("gw/event/x", numbered(i), ts=1000.0 + i)
    outbox.ack_all(range(2, 52))
    assert outbox.commit() == 0
    assert outbox.counters.commits == commits
    assert (tmp_path / "o.db-wal").stat().st_size == wal
    assert outbox.depth == 1
    assert outbox.committed_seq == 51
    outbox.close()
    assert [row[0] for row in stored(path)] == [1]


def test_a_seq_given_to_a_row_never_written_is_never_given_again(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    outbox = Outbox(path, synchronous="OFF")
    for i in range(10):
        outbox.add("gw/event/x", numbered(i), ts=1000.0 + i)
    outbox.ack_all(range(1, 11))
    outbox.commit()
    outbox.close()
    reopened = Outbox(path, synchronous="OFF")
    assert reopened.add("gw/event/x", numbered(10), ts=1010.0) == 11
    reopened.close()


def test_a_disk_that_writes_again_is_noticed_while_every_row_is_delivered_before_its_commit(tmp_path: Path) -> None:
    """A failing outbox opens a transaction at every commit, rows or not, to find out when the disk writes again
    (review of cb94154: while the broker kept up, no transaction came, and health said "degraded" for hours)."""
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full: SQLite refuses to grow the file
    seqs = [outbox.add("gw/event/x", lambda seq: b"p" * 200, ts=1.0) for _ in range(200)]
    outbox.commit()
    assert outbox.trouble is not None
    outbox._db.execute("PRAGMA max_page_count = 1073741823")  # space again
    outbox.ack_all(seq for seq in seqs if seq is not None)
    for _ in range(3):  # the broker keeps up: every row acknowledged before its commit
        seq = outbox.add("gw/event/x", lambda seq: b"p", ts=1.0)
        assert seq is not None
        outbox.ack(seq)
        outbox.commit()
    assert outbox.depth == 0
    assert outbox.trouble is None
    outbox.close()


def test_a_drained_outbox_gives_its_cache_back_though_its_later_commits_write_nothing(tmp_path: Path) -> None:
    """Review of cb94154: a live row that arrived while the backlog's last transaction ran kept the outbox from
    counting as drained then, and the commits after it, of rows delivered before their commit, never checked again."""
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    shrinks: list[int] = []
    shrink = outbox._shrink

    def counted_shrink() -> None:
        shrinks.append(1)
        shrink()

    outbox._shrink = counted_shrink  # type: ignore[method-assign]
    backlog = [outbox.add("gw/event/x", lambda seq: b"p" * 250, ts=1.0) for _ in range(2000)]
    outbox.commit()  # an outage: the backlog is written
    outbox.ack_all(seq for seq in backlog if seq is not None)
    write = outbox._write
    live: list[int | None] = []

    def write_while_a_row_arrives(pending: Any, reserve: int | None) -> Any:
        done = write(pending, reserve)
        live.append(outbox.add("gw/event/x", lambda seq: b"p", ts=1.0))  # the dispatcher, meanwhile
        return done

    outbox._write = write_while_a_row_arrives  # type: ignore[method-assign]
    outbox.commit()  # the backlog's acks: drained, but a live row waits
    outbox._write = write  # type: ignore[method-assign]
    for _ in range(3):  # the broker keeps up
        outbox.ack_all(seq for seq in live if seq is not None)
        live.clear()
        outbox.commit()
    assert outbox.depth == 0
    assert shrinks
    outbox.close()


# -- what a commit writes besides its rows (issue 14: the publisher's pages, WAL frames, per commit) -------------

def reservation_on_disk(outbox: Outbox) -> int:
    """The seq reservation as the file holds it (read through the outbox's own connection: no other may open it)."""
    return int(outbox._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()[0])


def test_a_commit_leaves_the_seq_reservation_on_disk_alone_while_it_covers_half_its_span_ahead(
    tmp_path: Path,
) -> None:
    """Rewriting the reservation in every commit dirtied one page more, one more WAL frame (4 kB) on the SD card
    per commit; a seq the hub may have seen is still below it (test_mqtt_outbox's crash test)."""
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    opened = reservation_on_disk(outbox)
    for i in range(10):
        outbox.add("gw/event/x", numbered(i), ts=1000.0 + i)
    outbox.commit()
    assert reservation_on_disk(outbox) == opened == outbox.reserved == SEQ_RESERVE
    outbox.close()


def test_the_seq_reservation_is_renewed_once_the_seqs_given_out_reach_half_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.mqtt.outbox.SEQ_RESERVE", 100)
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF")
    assert outbox.reserved == 100
    for i in range(40):
        outbox.add("gw/event/x", numbered(i), ts=1000.0 + i)
    outbox.commit()
    assert reservation_on_disk(outbox) == outbox.reserved == 100  # 60 seqs ahead: enough
    for i in range(40, 60):
        outbox.add("gw/event/x", numbered(i), ts=1000.0 + i)
    outbox.commit()
    assert reservation_on_disk(outbox) == outbox.reserved == 160  # 40 ahead: renewed, 100 past the newest
    assert [row.seq for row in outbox.fetch(0, 100)] == list(range(1, 61))
    outbox.close()


def test_a_commit_of_a_steady_stream_writes_hardly_more_pages_than_its_rows_fill(tmp_path: Path) -> None:
    """Each commit deletes the rows the broker acknowledged since the last one and inserts those it has not yet
    acknowledged (10,000 lines/s: ~150 of each every 20 ms). Deleted first, their pages take the new rows in the
    same transaction; inserted first, the new rows took fresh pages and the emptied ones were written too (14
    WAL frames a commit instead of 8 at issue 14's rate: 4 kB each, on the SD card)."""
    path = tmp_path / "o.db"
    outbox = Outbox(path, synchronous="OFF", monotonic=lambda: 100.0)  # no checkpoint by the clock meanwhile
    rows_per_commit, size = 150, 160
    unacknowledged: list[int] = []

    def window() -> None:
        outbox.ack_all(unacknowledged)
        unacknowledged[:] = [seq for _ in range(rows_per_commit)
                             if (seq := outbox.add("gw/event/temperature", lambda seq: b"x" * size, ts=1.0))]
        outbox.commit()

    for _ in range(5):
        window()
    before = Path(f"{path}-wal").stat().st_size
    for _ in range(20):
        window()
    frames = (Path(f"{path}-wal").stat().st_size - before) / (4096 + 24) / 20
    filled = rows_per_commit * (size + 40) / 4096  # a row's topic, ts and headers: ~40 bytes more
    outbox.close()
    assert frames <= filled + 3, f"{frames:.1f} pages written per commit for {filled:.1f} pages of rows"


def test_the_outbox_file_is_the_gateways_alone_while_it_is_open(tmp_path: Path) -> None:
    """``locking_mode=EXCLUSIVE``: SQLite takes its file locks once, not around every transaction (six ``fcntl``
    calls a commit, ~300 a second at 10,000 lines/s), and keeps the WAL's index in memory rather than in a
    ``-shm`` file beside it, whose page every commit dirtied for the kernel to write back to the SD card. The
    outbox's own lock file already refuses a second gateway; nothing else reads the file while it is open."""
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path, synchronous="OFF")
    outbox.add("gw/event/x", numbered(0), ts=1000.0)
    outbox.commit()
    assert not Path(f"{path}-shm").exists()
    with pytest.raises(sqlite3.OperationalError, match="locked"), sqlite3.connect(path, timeout=0) as other:
        other.execute("SELECT COUNT(*) FROM outbox").fetchone()
    outbox.close()
    assert in_file(path, 0) == [1]  # free again once closed


def bytes_this_process_wrote() -> int:
    """``wchar`` of ``/proc/self/io``: the bytes this process handed to write calls (for the card, in time)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


def test_the_bytes_written_counter_is_what_the_outbox_wrote_to_its_files(tmp_path: Path) -> None:
    """``counters.bytes_written`` (health, docs/performance.md) counts the WAL's frames and the pages a checkpoint
    copies back. It counted every checkpointed *frame* as a page copied, while a checkpoint writes each page once,
    however many frames it has: twice the truth at 10,000 lines/s, where the same few pages take every commit."""
    if not Path("/proc/self/io").exists():
        pytest.skip("no /proc/self/io")
    outbox = Outbox(tmp_path / "o.db", synchronous="OFF", monotonic=lambda: 100.0)
    unacknowledged: list[int] = []
    before = bytes_this_process_wrote()
    for _ in range(250):  # two checkpoints (every 100 commits) and the one at close
        outbox.ack_all(unacknowledged)
        unacknowledged[:] = [seq for _ in range(150)
                             if (seq := outbox.add("gw/event/temperature", lambda seq: b"x" * 160, ts=1.0))]
        outbox.commit()
    outbox.ack_all(unacknowledged)
    outbox.close()
    wrote = bytes_this_process_wrote() - before
    assert 0.9 * wrote <= outbox.counters.bytes_written <= 1.1 * wrote, (outbox.counters.bytes_written, wrote)


def clocked(tmp_path: Path) -> tuple[Outbox, Clock]:
    clock = Clock()
    return Outbox(tmp_path / "o.db", synchronous="OFF", batch_ms=20, monotonic=clock), clock


def test_a_row_accepted_just_before_its_window_closes_waits_for_the_next_and_delivered_is_never_written(
    tmp_path: Path,
) -> None:
    """A steady stream's newest row was always unacknowledged at its window's commit (handed to paho a moment
    before): written, then deleted at the next commit, a page of the SD card each time (issue 14)."""
    outbox, clock = clocked(tmp_path)
    first = outbox.add("gw/event/x", numbered(0), ts=1.0)
    assert first is not None
    outbox.ack(first)
    clock.now += 0.018
    young = outbox.add("gw/event/x", numbered(1), ts=1.0)
    assert young is not None
    clock.now += 0.002  # the window closes
    outbox.commit_if_due()
    assert in_outbox_file(outbox, 0) == []
    assert [row.seq for row in outbox.fetch(0, 10)] == [young]  # waiting for its commit, as any row before it
    outbox.ack(young)
    clock.now += 0.018  # the next window closes 20 ms after the young row
    outbox.commit_if_due()
    assert in_outbox_file(outbox, 0) == []
    assert (outbox.counters.delivered_unwritten, outbox.counters.commits) == (2, 0)
    outbox.close()


def test_a_row_left_to_the_next_window_is_on_disk_within_batch_ms_of_its_acceptance(tmp_path: Path) -> None:
    outbox, clock = clocked(tmp_path)
    outbox.ack(outbox.add("gw/event/x", numbered(0), ts=1.0) or 0)
    clock.now += 0.015
    young = outbox.add("gw/event/x", numbered(1), ts=1.0)
    clock.now += 0.005
    outbox.commit_if_due()
    assert in_outbox_file(outbox, 0) == []
    assert outbox.due_in() == pytest.approx(0.015)
    clock.now += 0.015  # 20 ms after the young row
    assert outbox.commit_if_due() == 1
    assert in_outbox_file(outbox, 0) == [young]
    outbox.close()


def test_with_the_broker_down_a_steady_stream_still_takes_one_transaction_per_window(tmp_path: Path) -> None:
    """Young rows are carried only when they are all a commit would write: with nothing acknowledged, a carry saves
    no write and only moves them to a transaction of their own half a window later (twice the transactions)."""
    outbox, clock = clocked(tmp_path)
    next_add, end = clock.now, clock.now + 1.0
    while clock.now < end:  # 1,000 lines/s, nothing acknowledged, the publisher on time to 0.5 ms
        while next_add <= clock.now:
            outbox.add("gw/event/x", lambda seq: b"p" * 60, ts=1.0, kind="reading")
            next_add += 0.001
        outbox.commit_if_due()
        clock.now += 0.0005
    assert outbox.counters.commits <= 55  # one a window: 48; carrying the young rows regardless: 90
    assert outbox.counters.carried == 0
    outbox.close()


def test_a_commit_without_waiting_writes_the_young_rows_too(tmp_path: Path) -> None:
    """Stopping and closing commit everything now (``commit()``): nothing is left in memory."""
    outbox, clock = clocked(tmp_path)
    outbox.add("gw/event/x", numbered(0), ts=1.0)
    clock.now += 0.019
    outbox.add("gw/event/x", numbered(1), ts=1.0)
    clock.now += 0.001
    assert outbox.commit() == 2
    assert in_outbox_file(outbox, 0) == [1, 2]
    outbox.close()


def test_a_window_with_a_refused_row_leaves_nothing_to_the_next(tmp_path: Path) -> None:
    """A refused row is deleted by its window's commit: were it left to the next, it would be written after."""
    outbox, clock = clocked(tmp_path)
    outbox.add("gw/event/x", numbered(0), ts=1.0)
    clock.now += 0.019
    refused = outbox.add("gw/event/x", numbered(1), ts=1.0)
    assert refused is not None
    outbox.refuse(refused)
    clock.now += 0.001
    outbox.commit_if_due()
    clock.now += 1.0
    outbox.commit_if_due()
    assert in_outbox_file(outbox, 0) == [1]
    outbox.close()
