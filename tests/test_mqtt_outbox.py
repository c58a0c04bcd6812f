"""The durable outbox on its own (order, persistence, batching, the bound, the packet-size limit),
and the pacing around it (drain token bucket, reconnect jitter)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.sqlite_memory import give_back_freed_memory
from gateway.mqtt.connection import Jitter
from gateway.mqtt.outbox import Outbox, OutboxInUse, publish_packet_size
from gateway.mqtt.window import TokenBucket
from tests.sqlite_memory import sqlite_memory_used


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ROOT = Path(__file__).resolve().parent.parent


def payload(text: str) -> bytes:
    return text.encode()


def numbered(i: int) -> Callable[[int], bytes]:
    """The payload of the ``i``-th event, made once the outbox gives it its sequence number."""
    return lambda seq: payload(f"{i}:{seq}")


def add(outbox: Outbox, n: int, *, droppable: bool = True, start: int = 0) -> list[int | None]:
    return [
        outbox.add("gw/event/x", numbered(i), droppable=droppable, ts=1000.0 + i)
        for i in range(start, start + n)
    ]


def test_rows_come_back_in_seq_order_before_and_after_their_commit(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    seqs = add(outbox, 3)
    assert [r.seq for r in outbox.fetch(0, 10)] == [1, 2, 3]  # published without waiting for the batch window
    outbox.commit()
    rows = outbox.fetch(0, 10)
    assert [r.seq for r in rows] == seqs == [1, 2, 3]
    assert [r.payload for r in rows] == [b"0:1", b"1:2", b"2:3"]
    assert [r.seq for r in outbox.fetch(2, 10)] == [3]


def test_add_made_returns_the_seq_and_the_payload_it_queued_for_the_hand_over(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    assert outbox.add_made("gw/event/x", numbered(0), ts=1000.0, kind="reading") == (1, b"0:1")
    assert outbox.add("gw/event/x", numbered(1), ts=1001.0, kind="reading") == 2
    assert [(r.seq, r.payload) for r in outbox.fetch(0, 10)] == [(1, b"0:1"), (2, b"1:2")]


def test_add_made_refuses_a_payload_over_the_packet_limit_and_gives_no_seq(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    outbox.max_packet_size = 64
    assert outbox.add_made("gw/event/x", lambda seq: b"x" * 100, ts=1000.0, kind="reading") is None
    assert outbox.counters.oversized == 1
    assert outbox.add_made("gw/event/x", numbered(0), ts=1001.0, kind="reading") == (1, b"0:1")


def test_a_seq_handed_out_before_its_commit_is_never_reused_after_a_crash(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from gateway.mqtt.outbox import Outbox\n"
        "outbox = Outbox(Path(sys.argv[1]), batch_ms=60_000)\n"
        "for i in range(5):\n"
        "    outbox.add('t', lambda seq: b'x', droppable=True, ts=0.0)\n"
        "print(max(r.seq for r in outbox.fetch(0, 10)), flush=True)\n"
        "os._exit(9)  # killed before the commit: the rows were published, never stored\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "o.db")], capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    published = int(done.stdout)
    reopened = Outbox(tmp_path / "o.db")
    [seq] = add(reopened, 1)
    assert seq is not None and seq > published
    reopened.close()


def test_committed_rows_and_the_seq_survive_reopening(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "o.db")
    add(first, 3)
    first.commit()
    first.ack(1)
    first.close()
    second = Outbox(tmp_path / "o.db")
    assert [r.seq for r in second.fetch(0, 10)] == [2, 3]
    assert add(second, 1) == [4]


def test_the_seq_is_not_reused_after_every_row_was_delivered(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "o.db")
    add(first, 2)
    first.commit()
    first.ack(1)
    first.ack(2)
    first.close()
    second = Outbox(tmp_path / "o.db")
    assert second.depth == 0
    assert add(second, 1) == [3]


def test_events_accepted_within_the_batch_window_share_one_commit(tmp_path: Path) -> None:
    clock = FakeMonotonic()
    outbox = Outbox(tmp_path / "o.db", batch_ms=20, monotonic=clock)
    add(outbox, 50)
    clock.now += 0.010
    assert outbox.commit_if_due() == 0
    clock.now += 0.011
    assert outbox.commit_if_due() == 50
    assert outbox.counters.commits == 1


def test_acknowledged_rows_are_deleted_and_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    add(outbox, 3)
    outbox.commit()
    outbox.ack(2)
    outbox.commit()
    assert [r.seq for r in outbox.fetch(0, 10)] == [1, 3]
    assert (outbox.depth, outbox.counters.delivered) == (2, 1)


def test_overflow_drops_the_oldest_readings_first_and_counts_them(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_events=100)
    add(outbox, 10, droppable=False)  # e.g. commands and confirmed states
    add(outbox, 95, droppable=True, start=10)
    outbox.commit()
    rows = outbox.fetch(0, 1000)
    assert len(rows) == 100 and outbox.depth == 100
    assert outbox.counters.dropped == 5
    assert [r.seq for r in rows][:10] == list(range(1, 11))  # the critical ones are all kept
    assert rows[10].seq == 16  # readings 11..15 were the oldest droppable ones


def test_overflow_with_nothing_droppable_drops_the_oldest_of_any_kind(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_events=100)
    add(outbox, 103, droppable=False)
    outbox.commit()
    assert [r.seq for r in outbox.fetch(0, 1)] == [4]
    assert outbox.counters.dropped == 3


def test_an_event_larger_than_the_broker_accepts_is_refused_and_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_packet_size=1024)
    big = outbox.add("gw/event/x", lambda seq: b"x" * 2000, droppable=True, ts=0.0)
    small = outbox.add("gw/event/x", lambda seq: b"ok", droppable=True, ts=0.0)
    outbox.commit()
    assert big is None and small == 1  # the refused event does not use up a seq
    assert outbox.counters.oversized == 1
    assert [r.payload for r in outbox.fetch(0, 10)] == [b"ok"]


def test_the_packet_size_counts_the_mqtt_headers() -> None:
    assert publish_packet_size("a/b", b"x" * 10, mqtt5=True) == 1 + 1 + 2 + 3 + 2 + 1 + 10
    assert publish_packet_size("a/b", b"x" * 200, mqtt5=False) == 1 + 2 + 2 + 3 + 2 + 200


def test_bytes_written_are_counted_from_the_wal(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    add(outbox, 100)
    outbox.commit()
    outbox.close()
    assert outbox.counters.bytes_written >= 100 * 10


def test_events_offered_after_close_are_counted_not_queued(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    outbox.close()
    assert add(outbox, 1) == [None]
    assert outbox.counters.closed_drops == 1


def test_the_drain_rate_is_a_token_bucket() -> None:
    clock = FakeMonotonic()
    bucket = TokenBucket(rate=80, burst=10, monotonic=clock)
    assert bucket.take(50) == 10  # the burst
    assert bucket.take(1) == 0
    clock.now += 0.25
    assert bucket.take(50) == 10  # refilled at 80/s, capped at the burst
    clock.now += 0.0625
    assert bucket.take(50) == 5


def test_a_closed_outbox_still_answers_health_questions(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    outbox.close()
    assert (outbox.oldest_ts(), outbox.fetch(0, 10), outbox.commit()) == (None, [], 0)



def test_a_second_process_on_the_same_outbox_is_refused(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "o.db")
    with pytest.raises(OutboxInUse, match="another gateway process"):
        Outbox(tmp_path / "o.db")
    first.close()
    Outbox(tmp_path / "o.db").close()  # free again once closed


def test_a_full_disk_keeps_the_batch_in_memory_and_writes_it_in_order_later(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db")
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own 'disk full'
    add(outbox, 500)
    assert outbox.commit() == 0
    assert outbox.counters.commit_failures == 1 and outbox.depth == 500
    add(outbox, 1, start=500)
    outbox._db.execute("PRAGMA max_page_count = 1073741823")
    assert outbox.commit() == 501
    assert [r.seq for r in outbox.fetch(0, 1000)] == list(range(1, 502))
    outbox.close()


def test_reconnect_jitter_grows_with_the_backoff_and_restarts_after_a_connection() -> None:
    jitter = Jitter(1.0, 8.0, rng=random.Random(7))
    waits = [jitter.next_wait() for _ in range(6)]
    assert waits[0] == 0.0  # the first connection is not delayed
    assert all(0 <= w <= bound for w, bound in zip(waits[1:], [0.5, 1, 2, 4, 4], strict=True))
    assert len(set(waits[1:])) == 5  # random, so a fleet spreads out
    jitter.connected()
    assert jitter.next_wait() <= 0.5


# -- the page cache (issue 17, flood d's memory) ---------------------------------------------------------------

def big(i: int) -> Callable[[int], bytes]:
    """A payload of the size of a real event (~250 bytes), so that a few thousand rows fill many pages."""
    return lambda seq: payload(f"{i}:{seq}:" + "x" * 240)


def test_the_outbox_page_cache_stays_small_while_a_backlog_is_written(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    before = sqlite_memory_used()
    for batch in range(20):  # ~5 MB of rows, 1,000 a commit: SQLite's default cache would keep 2 MB of them
        for i in range(1000):
            outbox.add("gw/event/x", big(batch * 1000 + i), kind="command", ts=1000.0)
        outbox.commit()
    grown = sqlite_memory_used() - before
    outbox.close()
    assert grown < 1 << 20, f"SQLite holds {grown:,} bytes more after writing the backlog"


def test_the_outbox_gives_its_page_cache_back_once_it_has_drained(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", synchronous="OFF")
    before = sqlite_memory_used()
    for i in range(5000):
        outbox.add("gw/event/x", big(i), kind="command", ts=1000.0)
    outbox.commit()
    for row in outbox.fetch(0, 5000):
        outbox.ack(row.seq)
    outbox.commit()
    assert outbox.depth == 0
    grown = sqlite_memory_used() - before
    outbox.close()
    assert grown < 100_000, f"SQLite still holds {grown:,} bytes more once the outbox has drained"


def test_freed_memory_is_handed_back_to_the_system_where_the_c_library_can() -> None:
    if not Path("/proc/self/maps").read_text().count("libc.so.6"):
        pytest.skip("not glibc: there is no malloc_trim")
    assert give_back_freed_memory() is True
