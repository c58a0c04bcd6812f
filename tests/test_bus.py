"""The bounded bus: what a flood may and may not cost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from core.events import Kind
from gateway.bus import Bus, waker
from tests.helpers import virtual_events


def drain(bus: Bus) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    while (event := bus.get_nowait()) is not None:
        out.append((event.entity, event.value))
    return out


def test_events_come_out_in_the_order_they_were_posted() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10)
    for i in range(5):
        bus.post(events.reading("t", i))
    assert drain(bus) == [("t", i) for i in range(5)]


def test_a_flood_of_readings_keeps_only_the_newest_value_per_entity_beyond_capacity() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=3)
    for i in range(100):
        bus.post(events.reading("chatter", i))
    assert drain(bus) == [("chatter", 0), ("chatter", 1), ("chatter", 2), ("chatter", 99)]
    assert bus.counters.coalesced == 96


def test_memory_stays_bounded_by_capacity_plus_one_reading_per_entity() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10)
    for i in range(10_000):
        bus.post(events.reading(f"e{i % 5}", i))
    assert len(bus) <= 10 + 5


def test_commands_are_never_dropped_or_coalesced_when_the_bus_is_full() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=2, hard_limit=100)
    for i in range(10):
        bus.post(events.reading("t", i))
    for i in range(20):
        bus.post(events.make(Kind.COMMAND, "siren", i % 2 == 0))
    commands = [v for e, v in drain(bus) if e == "siren"]
    assert len(commands) == 20


def test_a_critical_event_does_not_overtake_an_older_waiting_reading_of_its_entity() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=1)
    bus.post(events.reading("other", 0))
    bus.post(events.reading("door", True))  # waits in the side table
    bus.post(events.availability("door", False))
    assert drain(bus) == [("other", 0), ("door", True), ("door", False)]


def test_the_high_water_counts_a_critical_event_queued_with_the_reading_it_must_not_overtake() -> None:
    """The high water is the longest the queue has been: a critical event that brings its entity's waiting
    reading in with it takes the queue past ``capacity``, and that is the memory the counter is there to show."""
    _, events = virtual_events()
    bus = Bus(capacity=1)
    bus.post(events.reading("other", 0))
    bus.post(events.reading("door", True))  # waits in the side table
    bus.post(events.availability("door", False))  # queued behind that reading: three queued
    assert bus.counters.high_water == 3


def test_events_beyond_the_hard_limit_are_dropped_and_counted() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=1, hard_limit=3)
    for _ in range(5):
        bus.post(events.make(Kind.SYSTEM, "gateway", "x"))
    assert len(drain(bus)) == 3
    assert bus.counters.dropped == 2


def test_get_waits_for_a_post_from_another_thread() -> None:
    _, events = virtual_events()
    bus = Bus()
    threading.Timer(0.01, lambda: bus.post(events.reading("t", 1))).start()
    event = bus.get(timeout=5)
    assert event is not None and event.value == 1


def test_wake_releases_a_waiting_get_with_nothing() -> None:
    bus = Bus()
    threading.Timer(0.01, bus.wake).start()
    assert bus.get(timeout=5) is None


def test_a_flooding_entity_never_has_more_than_its_quota_of_readings_ahead_of_its_newest() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10_000, per_entity=4)
    for i in range(1_000):
        bus.post(events.reading("chatter", i))
    values = [v for _, v in drain(bus)]
    assert values[-1] == 999
    assert len(values) <= 4 + 1
    assert bus.counters.coalesced >= 1_000 - 5


def test_a_burst_within_the_quota_is_delivered_whole() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=100, per_entity=8)
    for i in range(8):
        bus.post(events.reading("t", i))
    assert drain(bus) == [("t", i) for i in range(8)]


def test_other_entities_keep_every_reading_while_one_entity_floods() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10_000, per_entity=4)
    for i in range(500):
        bus.post(events.reading("chatter", i))
        if i % 100 == 0:
            bus.post(events.reading("quiet", i))
    out = drain(bus)
    assert [v for e, v in out if e == "quiet"] == [0, 100, 200, 300, 400]
    assert [v for e, v in out if e == "chatter"][-1] == 499


def test_coalesced_readings_are_counted_by_kind() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10_000, per_entity=2)
    for i in range(10):
        bus.post(events.reading("chatter", i))
    assert bus.counters.coalesced_by_kind == {"reading": bus.counters.coalesced}


def test_readings_of_many_entities_keep_the_memory_bound() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=50, per_entity=4)
    for i in range(20_000):
        bus.post(events.reading(f"e{i % 500}", i))
    assert len(bus) <= 50 + 500
    newest = {e: v for e, v in drain(bus)}
    assert newest == {f"e{k}": 19_500 + k for k in range(500)}


def test_a_batch_takes_the_events_in_order_up_to_its_limit_and_leaves_the_rest() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10)
    for i in range(5):
        bus.post(events.reading("t", i))
    assert [e.value for e in bus.get_batch(0, 3)] == [0, 1, 2]
    assert [e.value for e in bus.get_batch(0, 10)] == [3, 4]
    assert bus.get_batch(0, 10) == []


def test_a_batch_comes_back_empty_when_the_bus_is_woken() -> None:
    bus = Bus(capacity=10)
    bus.wake()
    assert bus.get_batch(5, 10) == []


def test_a_post_wakes_a_get_batch_waiting_in_another_thread() -> None:
    _, events = virtual_events()
    bus = Bus()
    threading.Timer(0.01, lambda: bus.post(events.reading("t", 1))).start()
    assert [e.value for e in bus.get_batch(5, 10)] == [1]


def test_a_wake_releases_a_get_batch_waiting_in_another_thread() -> None:
    bus = Bus()
    threading.Timer(0.01, bus.wake).start()
    assert bus.get_batch(5, 10) == []


def test_every_event_posted_while_the_consumer_times_out_over_and_over_arrives_once_in_order() -> None:
    """The race of a wait that times out just as a producer signals it: the producer must never signal twice
    (it would raise) and no event may be lost or repeated."""
    _, events = virtual_events()
    bus = Bus()
    count = 5_000
    failures: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(count):
                bus.post(events.reading("t", i))
                if i % 7 == 0:
                    threading.Event().wait(0.0001)
        except BaseException as exc:  # pragma: no cover - what the test is there to catch
            failures.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    received: list[object] = []
    while len(received) < count and (producer.is_alive() or len(bus)):
        received += [e.value for e in bus.get_batch(0.00005, 3)]
    producer.join()
    received += [e.value for e in bus.get_batch(0, count)]
    assert failures == []
    assert received == list(range(count))


class _TimesOutAsAPostArrives:
    """The bus's wake-up signal, with the race made certain: the wait runs out, and only then (before the
    consumer has looked again) a producer posts and releases the signal."""

    def __init__(self, bus: Bus, post: Callable[[], None]) -> None:
        self.real, self.post, self.raced = bus._signal, post, False

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self.raced or timeout < 0:
            return self.real.acquire(blocking, timeout)
        self.raced = True
        self.post()
        return False

    def release(self) -> None:
        self.real.release()


def test_a_wait_that_runs_out_as_a_post_arrives_leaves_no_signal_to_cut_the_next_wait_short() -> None:
    _, events = virtual_events()
    bus = Bus()
    bus._signal = _TimesOutAsAPostArrives(bus, lambda: bus.post(events.reading("t", 1)))  # type: ignore[assignment]
    assert [e.value for e in bus.get_batch(0.01, 10)] == [1]
    start = time.monotonic()
    assert bus.get_batch(0.05, 10) == []
    assert time.monotonic() - start >= 0.049
    threading.Timer(0.01, bus.post, (events.reading("t", 2),)).start()
    assert [e.value for e in bus.get_batch(5, 10)] == [2]


class CountingEvent(threading.Event):
    """A real ``threading.Event`` that counts the calls to ``set`` (each takes its lock and walks its waiters)."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def test_a_wake_up_already_signalled_and_not_yet_taken_is_not_signalled_again() -> None:
    event = CountingEvent()
    wake = waker(event)
    wake()
    wake()
    assert event.is_set() and event.sets == 1


def test_a_wake_up_after_the_thread_took_the_last_one_is_signalled() -> None:
    event = CountingEvent()
    wake = waker(event)
    wake()
    event.clear()  # the woken thread took it
    wake()
    assert event.is_set() and event.sets == 2
