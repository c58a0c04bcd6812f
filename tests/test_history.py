"""The event history: every event kept for a window, in batches, bounded, surviving restarts; `gateway history`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sqlite3
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from core.clock import VirtualClock
from core.events import Event, EventFactory, Kind
from gateway.app import Gateway
from gateway.cli import main
from gateway.config import ConfigError, load_config
from gateway.history import HISTORY_FILE, History, parse_since, query
from tests.helpers import RecordingForwarder
from tests.houses import house_config
from tests.sqlite_memory import sqlite_memory_used

T0 = 1_767_225_600.0


def factory(wall: float = T0) -> tuple[VirtualClock, EventFactory]:
    clock = VirtualClock(wall=wall, mono=100.0)
    return clock, EventFactory(clock, boot="h")


def test_recorded_events_are_kept_across_a_restart(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, wall=lambda: T0)
    history.open()
    history.record(events.reading("temp", 20.5, unit="°C"))
    history.stop()

    reopened = History(tmp_path / HISTORY_FILE, wall=lambda: T0)
    reopened.open()
    reopened.record(events.reading("temp", 20.0, unit="°C"))
    reopened.stop()

    assert [(r.entity, r.value, r.unit) for r in query(tmp_path / HISTORY_FILE)] == [
        ("temp", 20.5, "°C"), ("temp", 20.0, "°C")]


def test_a_batch_of_events_is_written_in_one_flush(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE)
    history.open()
    for n in range(500):
        history.record(events.reading("temp", n))
    assert history.flush() == 500
    history.stop()
    assert len(query(tmp_path / HISTORY_FILE)) == 500


def test_a_burst_is_written_once_flush_at_events_wait_not_held_in_memory_for_the_interval(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, flush_s=3600, flush_at=100, wall=lambda: T0)
    history.start()
    try:
        for n in range(250):
            history.record(events.reading("temp", n))
        deadline = time.monotonic() + 10
        while history.written < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert history.written >= 200  # without waiting for the hour's flush
    finally:
        history.stop()
    assert len(query(tmp_path / HISTORY_FILE)) == 250


def test_recording_never_blocks_when_the_queue_is_full_it_counts_the_drop(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, queue_size=3)
    for n in range(5):
        history.record(events.reading("temp", n))
    assert history.dropped == 2


def test_each_row_names_the_event_that_caused_it_with_its_unit(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE)
    history.open()
    reading = events.reading("living_temperature", 20.2, unit="°C")
    history.record(reading)
    history.record(events.make(Kind.STATE, "heater", True, rule="living_thermostat", cause=reading.id))
    history.stop()
    heater = query(tmp_path / HISTORY_FILE, entities=["heater"])
    assert [(r.value, r.rule, r.because) for r in heater] == [
        (True, "living_thermostat", "living_temperature=20.2 °C (reading)")]  # with its unit


def test_events_older_than_the_window_are_pruned(tmp_path: Path) -> None:
    clock, events = factory(wall=T0)
    now = [T0]
    history = History(tmp_path / HISTORY_FILE, window_s=3600, wall=lambda: now[0])
    history.open()
    history.record(events.reading("temp", 1))
    clock.advance(1800)
    history.record(events.reading("temp", 2))
    history.flush()
    now[0] = T0 + 3600 + 1
    assert history.prune() == 1
    history.stop()
    assert [r.value for r in query(tmp_path / HISTORY_FILE)] == [2]


def test_the_file_is_held_under_its_size_bound_by_dropping_the_oldest(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, max_bytes=256 << 10, queue_size=20_000, wall=lambda: T0)
    history.open()
    for n in range(20_000):
        history.record(events.make(Kind.READING, "temp", n, detail="x" * 40))
    history.flush()
    history.prune()
    assert history.size_bytes() <= 256 << 10
    kept = query(tmp_path / HISTORY_FILE)
    history.stop()
    assert kept and kept[-1].value == 19_999 and kept[0].value != 0


def test_the_gateway_keeps_every_event_it_processes_in_its_history(tmp_path: Path) -> None:
    config = load_config(house_config(tmp_path))
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=RecordingForwarder())
    gateway.start()
    try:
        gateway.dispatcher.drain()
    finally:
        gateway.shutdown()
    rows = query(config.gateway.state_dir / HISTORY_FILE)
    assert ("light", "state") in {(r.entity, r.kind) for r in rows}
    assert ("gateway", "system") in {(r.entity, r.kind) for r in rows}


def test_history_can_be_turned_off(tmp_path: Path) -> None:
    config = load_config(house_config(tmp_path, extra="[history]\nenabled = false\n"))
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=RecordingForwarder())
    assert gateway.history is None and gateway.taps == []


def test_a_bad_history_window_is_a_located_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(house_config(tmp_path, extra="[history]\nwindow_days = 0\n"))
    assert any("history.window_days" in p for p in caught.value.problems)


def test_since_takes_seconds_minutes_hours_and_days() -> None:
    assert [parse_since(t) for t in ("90s", "30m", "2h", "1d", "15")] == [90, 1800, 7200, 86_400, 15]
    with pytest.raises(ValueError, match="not a duration"):
        parse_since("last night")


def _history_with_a_light_switched_by_a_rule(tmp_path: Path) -> Path:
    config = house_config(tmp_path)
    state_dir = tmp_path / "state"
    _, events = factory(wall=time.time() - 600)
    history = History(state_dir / HISTORY_FILE)
    history.open()
    reading = events.reading("motion", True)
    history.record(reading)
    history.record(events.make(Kind.STATE, "light", True, rule="light_on_motion", cause=reading.id))
    history.stop()
    return config


def test_gateway_history_prints_what_happened_with_its_cause(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _history_with_a_light_switched_by_a_rule(tmp_path)
    assert main(["history", "--config", str(config), "--entity", "light", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "light" in out and "rule light_on_motion" in out and "after motion=on (reading)" in out
    assert "motion " not in out.split("light", 1)[0]  # only the entity asked for


def test_gateway_history_json_is_one_object_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _history_with_a_light_switched_by_a_rule(tmp_path)
    assert main(["history", "--config", str(config), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["entity"], d["value"]) for d in lines] == [("motion", True), ("light", True)]


def test_gateway_history_refuses_a_since_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _history_with_a_light_switched_by_a_rule(tmp_path)
    assert main(["history", "--config", str(config), "--since", "yesterday"]) == 1
    assert "--since" in capsys.readouterr().err


def test_the_history_names_the_claim_that_drove_an_output_in_the_installers_words() -> None:
    from gateway.history import Row, format_rows

    row = Row("e2", 0.0, "state", "hall_light", True, None, "hall_light_on_motion", "e1",
              "hall_light_on_motion (rules) True; waiting: light_on_alarm (rules) False", "hall_light=on (command)")
    line = format_rows([row], dt.UTC)
    assert line.endswith("on  (rule hall_light_on_motion; after hall_light=on (command); held by "
                         "hall_light_on_motion (rules) on; waiting: light_on_alarm (rules) off)")


def test_the_history_keeps_its_columns_aligned_for_long_entity_names() -> None:
    from gateway.history import Row, format_rows

    rows = [Row("a", 0.0, "state", "living_thermostat_setpoint", 21.0, "°C", None, None, None),
            Row("b", 0.0, "reading", "hall_motion", True, None, None, None, None)]
    first, second = format_rows(rows, dt.UTC).splitlines()
    assert first.index("21.0 °C") == len(second) - len("on")


def test_the_history_gives_its_page_cache_back_after_each_flush(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, queue_size=20_000)
    history.open()
    before = sqlite_memory_used()
    for n in range(10_000):  # a flood's worth of events: SQLite's default cache would keep 2 MB of their pages
        history.record(events.reading("temperature", n, unit="°C"))
    assert history.flush() == 10_000
    grown = sqlite_memory_used() - before
    history.stop()
    assert grown < 100_000, f"SQLite still holds {grown:,} bytes more after the flush"


# -- readings thinned per entity per second (issue 14: a flood of readings must not cost a row each) ----------


def test_readings_beyond_the_limit_of_an_entity_in_one_second_are_not_written_and_are_counted(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=3)
    history.open()
    for n in range(10):
        history.record(events.reading("temp", n))
    history.stop()
    # The first three of the second, and the newest one (so the history ends on the value the sensor holds).
    assert [r.value for r in query(tmp_path / HISTORY_FILE)] == [0, 1, 2, 9]
    assert history.thinned == 6


def test_each_entity_has_its_own_allowance_and_each_second_a_new_one(tmp_path: Path) -> None:
    clock, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=2)
    history.open()
    for n in range(4):
        history.record(events.reading("temp", n))
        history.record(events.reading("hum", 50 + n))
    clock.advance(1.0)
    history.record(events.reading("temp", 10))
    history.stop()
    assert [r.value for r in query(tmp_path / HISTORY_FILE, entities=["temp"])] == [0, 1, 3, 10]
    assert [r.value for r in query(tmp_path / HISTORY_FILE, entities=["hum"])] == [50, 51, 53]


def test_events_other_than_readings_are_never_thinned(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=1)
    history.open()
    for n in range(5):
        history.record(events.make(Kind.STATE, "light", n % 2 == 0))
        history.record(events.make(Kind.COMMAND, "light", True))
    history.stop()
    assert len(query(tmp_path / HISTORY_FILE)) == 10
    assert history.thinned == 0


def test_an_event_caused_by_a_thinned_reading_still_names_it(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=1)
    history.open()
    history.record(events.reading("temp", 20.0, unit="°C"))
    hot = events.reading("temp", 26.5, unit="°C")
    history.record(hot)
    history.record(events.make(Kind.COMMAND, "siren", True, rule="too_hot", cause=hot.id))
    history.record(events.reading("temp", 20.1, unit="°C"))
    history.stop()
    siren = query(tmp_path / HISTORY_FILE, entities=["siren"])
    assert [r.because for r in siren] == ["temp=26.5 °C (reading)"]


def test_the_newest_thinned_reading_is_written_in_its_place_among_later_events(tmp_path: Path) -> None:
    clock, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=1)
    history.open()
    history.record(events.reading("temp", 1))
    history.record(events.reading("temp", 2))
    clock.advance(5.0)
    history.record(events.make(Kind.STATE, "light", True))
    history.stop()
    assert [(r.entity, r.value) for r in query(tmp_path / HISTORY_FILE)] == [
        ("temp", 1), ("temp", 2), ("light", True)]


def test_without_a_limit_every_reading_is_written(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=None)
    history.open()
    for n in range(100):
        history.record(events.reading("temp", n))
    history.stop()
    assert len(query(tmp_path / HISTORY_FILE)) == 100


def test_the_gateway_thins_readings_to_ten_per_entity_per_second_unless_told_otherwise(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    default = Gateway(load_config(house_config(tmp_path / "a")), pin_factory=MockFactory(),
                      forwarder=RecordingForwarder())
    every = Gateway(load_config(house_config(tmp_path / "b", extra="[history]\nreadings_per_s = 0\n")),
                    pin_factory=MockFactory(), forwarder=RecordingForwarder())
    assert default.history is not None and default.history.readings_per_s == 10
    assert every.history is not None and every.history.readings_per_s is None


def test_a_stuck_writer_keeps_the_history_bounded_by_its_queue_even_when_thinned_readings_cause_events(
    tmp_path: Path,
) -> None:
    # A flooding sensor with a rule that acts on each reading, while the SD card hangs: the queue is full and
    # counts drops; what the history keeps for ``because`` must not grow with the flood either.
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, queue_size=10, readings_per_s=1)

    def flood(n: int) -> None:
        for value in range(n):
            reading = events.reading("temp", value)
            history.record(reading)
            history.record(events.make(Kind.COMMAND, "fan", True, rule="cool", cause=reading.id))

    flood(1_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        flood(20_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert history.dropped > 20_000
    assert grown < 64 * 1024


class _DispatcherRunsWhenTheWriterEmptiedTheQueue(deque[Event]):
    """The history's queue, which lets the dispatcher record once the writer has taken the last queued event: the
    interleaving the GIL allows at any bytecode, made to happen here rather than one run in a million."""

    def __init__(self, dispatcher: Callable[[], None]) -> None:
        super().__init__()
        self._dispatcher: Callable[[], None] | None = dispatcher

    def popleft(self) -> Event:
        if not self and self._dispatcher is not None:
            run, self._dispatcher = self._dispatcher, None
            run()
            raise IndexError("pop from an empty deque")
        return super().popleft()


def test_the_history_ends_on_the_newest_reading_when_the_dispatcher_records_while_the_writer_flushes(
    tmp_path: Path,
) -> None:
    clock, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=1)
    history.open()
    history.record(events.reading("temp", 1))
    history.record(events.reading("temp", 2))  # held: the second's allowance is used

    def dispatcher() -> None:
        clock.advance(1.0)
        history.record(events.reading("temp", 3))  # a new second: 2 is queued before it
        history.record(events.reading("temp", 4))  # held

    queue = _DispatcherRunsWhenTheWriterEmptiedTheQueue(dispatcher)
    queue.extend(history._queue)
    history._queue = queue
    history.flush()
    history.flush()
    history.stop()
    assert [r.value for r in query(tmp_path / HISTORY_FILE)] == [1, 2, 3, 4]


# -- the writer's defects found in review (issue 14): counters, a flush with no file, a hung writer at stop ----------


class _DispatcherDropsWhileTheWriterCounts(History):
    """A history whose dispatcher records (into a full queue) right after the writer has read a counter to count a
    failed write, before it stores the sum: the interleaving the GIL allows between a read and a store of
    ``counter += n``, made to happen here rather than one run in a million."""

    def __init__(self, path: Path, dispatcher: Callable[[], None]) -> None:
        super().__init__(path, queue_size=2)
        self._dispatcher: Callable[[], None] | None = None
        self._armed_dispatcher = dispatcher

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with super()._transaction() as db:
                yield db
        except sqlite3.Error:
            self._dispatcher = self._armed_dispatcher  # the next counter the writer reads, the dispatcher runs
            raise

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if type(value) is int and not name.startswith("__"):
            run = super().__getattribute__("_dispatcher")
            if run is not None:
                self._dispatcher = None
                run()
        return value


def test_no_drop_is_lost_when_the_dispatcher_counts_one_while_the_writer_counts_a_failed_write(tmp_path: Path) -> None:
    _, events = factory()

    def dispatcher() -> None:
        for n in range(3):  # the queue holds two: the third is dropped, on the dispatcher's thread
            history.record(events.reading("temp", 100 + n))

    history = _DispatcherDropsWhileTheWriterCounts(tmp_path / HISTORY_FILE, dispatcher)
    history.open()
    history.record(events.reading("temp", 1))
    history.record(events.reading("temp", 2))
    with contextlib.closing(sqlite3.connect(tmp_path / HISTORY_FILE)) as other:
        other.execute("DROP TABLE events")  # the writer's next insert fails, for real
    assert history.flush() == 0
    assert history.dropped == 2 + 1  # the batch the writer could not write, and the event the full queue refused


def test_a_flush_with_no_file_open_counts_the_queued_and_held_events_it_discards(tmp_path: Path) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, readings_per_s=1)  # never opened: the file could not be
    history.record(events.reading("temp", 1))
    history.record(events.reading("temp", 2))  # held: the second's allowance is used
    history.record(events.make(Kind.STATE, "light", True))
    assert history.flush() == 0
    assert history.dropped == 3
    assert history.health()["queued"] == 0


class _HangingCard(History):
    """A history whose writer hangs inside its first transaction, after its insert and before its commit (a slow or
    hung SD card), until the test lets the card answer."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, flush_s=3600, flush_at=1, stop_timeout_s=0.05, wall=lambda: T0)
        self.writing = threading.Event()
        self.card_answers = threading.Event()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with super()._transaction() as db:
            yield db
            if not self.writing.is_set() and threading.current_thread().name == "history":
                self.writing.set()
                self.card_answers.wait()


def _stopped_while_the_writer_hangs(tmp_path: Path) -> tuple[_HangingCard, threading.Thread]:
    """The writer hangs in the transaction of event 1; events 2 and 3 wait in the queue; then the service stops."""
    _, events = factory()
    history = _HangingCard(tmp_path / HISTORY_FILE)
    history.start()
    writer = history._thread
    assert writer is not None
    history.record(events.reading("temp", 1))
    assert history.writing.wait(10)
    history.record(events.reading("temp", 2))
    history.record(events.reading("temp", 3))
    history.stop()  # returns: the outputs' safe state and the rest of the shutdown never wait for the SD card
    return history, writer


def test_stop_leaves_the_file_to_a_hung_writer_which_commits_its_batch_when_the_card_answers(tmp_path: Path) -> None:
    history, writer = _stopped_while_the_writer_hangs(tmp_path)
    history.card_answers.set()
    writer.join(10)
    assert not writer.is_alive()
    assert [r.value for r in query(tmp_path / HISTORY_FILE)] == [1]  # not rolled back by a close under it
    with contextlib.closing(sqlite3.connect(tmp_path / HISTORY_FILE)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert history.written == 1


def test_stop_counts_and_logs_once_the_events_a_hung_writer_leaves_unwritten(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.history"):
        history, writer = _stopped_while_the_writer_hangs(tmp_path)
        history.stop()  # a second stop says nothing more
    history.card_answers.set()
    writer.join(10)
    assert history.dropped == 2 and history.health()["queued"] == 0
    hung = [r.getMessage() for r in caplog.records]
    assert len(hung) == 1 and "2 events" in hung[0], hung


class _CardFullOnPrune(History):
    """An SD card that is full when the history prunes (its VACUUM needs room for a copy): a failure no real part in
    a test can give on demand, so the prune raises what SQLite raises then, once."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.refused = 0

    def prune(self) -> int:
        if not self.refused:
            self.refused += 1
            self._last_prune = self._wall()
            raise sqlite3.OperationalError("database or disk is full")
        return super().prune()


def test_a_prune_the_card_refuses_does_not_stop_the_writer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, events = factory()
    history = _CardFullOnPrune(tmp_path / HISTORY_FILE, flush_s=3600, flush_at=10, prune_s=0, wall=lambda: T0)
    history.start()
    try:
        for n in range(10):
            history.record(events.reading("temp", n))
        deadline = time.monotonic() + 10
        while not history.refused and time.monotonic() < deadline:
            time.sleep(0.01)
        for n in range(10, 20):
            history.record(events.reading("temp", n))
        while history.written < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert history.written == 20  # the writer outlived the failed prune
    finally:
        history.stop()
    assert "prune" in caplog.text and "disk is full" in caplog.text


# -- the writer's cost per row (issue 14: every alarm is a row, 4,900 a second at 10,000 lines/s) ------------------


def test_a_flush_writes_its_rows_in_a_few_statements_not_one_per_event(tmp_path: Path) -> None:
    # Python's sqlite3 lets go of the GIL at every statement step: one step per row was one wait per row for the busy
    # dispatcher to hand the GIL back.
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, queue_size=2_000)
    history.open()
    steps: list[str] = []
    assert history._db is not None
    history._db.set_trace_callback(steps.append)
    for n in range(1_000):
        history.record(events.reading("temp", n))
    assert history.flush() == 1_000
    history.stop()
    inserts = [sql for sql in steps if sql.startswith("INSERT")]
    assert len(inserts) <= 40, f"{len(inserts)} INSERT statements for 1,000 rows"


@pytest.mark.parametrize("batch", [1, 3, 11, 32, 43, 75])
def test_every_row_of_a_flush_is_kept_in_order_with_every_column_whatever_its_size(tmp_path: Path, batch: int) -> None:
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE)
    history.open()
    recorded: list[Event] = []
    for n in range(batch):
        reading = events.reading(f"temp{n % 3}", n + 0.5, unit="°C" if n % 2 else None)
        state = events.make(Kind.STATE, "heater", n % 2 == 0, rule="warm", cause=reading.id, detail=f"d{n}")
        recorded += (reading, state)
    for event in recorded[:batch]:
        history.record(event)
    assert history.flush() == batch
    history.stop()
    kept = [(r.id, r.ts, r.kind, r.entity, r.value, r.unit, r.rule, r.cause, r.detail) for r in query(
        tmp_path / HISTORY_FILE)]
    assert kept == [(e.id, e.ts, str(e.kind), e.entity, e.value, e.unit, e.rule, e.cause, e.detail)
                    for e in recorded[:batch]]


def test_a_row_names_its_cause_only_while_the_cause_is_among_the_newest_events_remembered(tmp_path: Path) -> None:
    from gateway.history import RECENT_CAUSES

    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, queue_size=3 * RECENT_CAUSES, flush_at=3 * RECENT_CAUSES)
    history.open()
    first = events.reading("temp", 0)
    history.record(first)
    later = [events.reading("temp", n) for n in range(1, RECENT_CAUSES + 1)]
    for event in later:
        history.record(event)
    history.flush()  # ``first`` is now one beyond the newest RECENT_CAUSES: forgotten; ``later[0]`` remembered
    history.record(events.make(Kind.STATE, "heater", True, rule="warm", cause=first.id))
    history.record(events.make(Kind.STATE, "heater", False, rule="warm", cause=later[0].id))
    history.flush()
    history.stop()
    heater = query(tmp_path / HISTORY_FILE, entities=["heater"])
    assert [r.because for r in heater] == [None, "temp=1 (reading)"]


def test_the_statements_a_flush_prepares_hold_little_of_sqlites_memory_for_good(tmp_path: Path) -> None:
    # SQLite keeps each prepared statement for the connection's life (shrink_memory does not free them): the
    # multi-row INSERTs must stay small (64-row statements of ten columns held 107 kB).
    _, events = factory()
    history = History(tmp_path / HISTORY_FILE, queue_size=2_000)
    history.open()
    history.record(events.reading("temp", 0))
    history.flush()
    before = sqlite_memory_used()
    for n in range(1_000):  # every statement size is prepared
        history.record(events.reading("temp", n))
    history.flush()
    held = sqlite_memory_used() - before
    history.stop()
    assert held < 64 * 1024, f"SQLite holds {held:,} bytes more after a 1,000-row flush"
