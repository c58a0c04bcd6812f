"""A serial read's lines reach the bus as one batch: the clocks read once, one lock round, nothing else changed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import Event, Kind
from drivers.base import DriverContext
from drivers.channel import Channel, feed_read
from drivers.conditioning import AverageStep, ThrottleStep
from drivers.serial_line import KeyValueSensor
from drivers.timing import VirtualScheduler
from gateway.bus import Bus
from tests.drivers_kit import Recorder, make_context, pty_pair
from tests.helpers import virtual_events


def drain(bus: Bus) -> list[tuple[str, object, Kind]]:
    out: list[tuple[str, object, Kind]] = []
    while (event := bus.get_nowait()) is not None:
        out.append((event.entity, event.value, event.kind))
    return out


def batching_context(recorder: Recorder, batches: list[list[Event]],
                     scheduler: VirtualScheduler | None = None) -> DriverContext:
    """A driver context whose ``post_many`` records each batch (and posts its events to ``recorder``)."""
    ctx = make_context(recorder, scheduler=scheduler)

    def post_many(events: list[Event]) -> None:
        batches.append(list(events))
        for event in events:
            recorder(event)

    ctx.post_many = post_many
    return ctx


_posts = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([Kind.READING, Kind.STATE])),
                  max_size=40)


@settings(max_examples=60)
@given(posts=_posts, take=st.integers(min_value=0, max_value=6))
def test_posting_a_batch_leaves_the_bus_exactly_as_posting_its_events_one_by_one(
    posts: list[tuple[str, Kind]], take: int,
) -> None:
    _, events = virtual_events()
    made = [events.make(kind, entity, i) for i, (entity, kind) in enumerate(posts)]
    one_by_one, batched = (Bus(capacity=4, hard_limit=8, per_entity=2, quotas={"a": 3}) for _ in range(2))
    for bus in (one_by_one, batched):  # what the consumer took before: the coalescing table may hold readings
        for event in made[:take]:
            bus.post(event)
        bus.get_batch(0, take // 2)
    for event in made[take:]:
        one_by_one.post(event)
    batched.post_many(made[take:])
    # what is queued, what waits coalesced and the quota counts, before the consumer refills from the side table
    assert list(batched._queue) == list(one_by_one._queue) and batched._overflow == one_by_one._overflow
    assert batched._queued == one_by_one._queued
    assert drain(batched) == drain(one_by_one)
    assert batched.counters == one_by_one.counters


def test_a_batch_wakes_a_consumer_waiting_in_another_thread() -> None:
    _, events = virtual_events()
    bus = Bus()
    got: list[list[Event]] = []
    consumer = threading.Thread(target=lambda: got.append(bus.get_batch(10.0, 100)))
    consumer.start()
    while not bus._sleeping:  # the consumer is waiting (or about to): a real wait, not a race with the post
        threading.Event().wait(0.001)
    bus.post_many([events.reading("t", 1), events.reading("t", 2)])
    consumer.join(timeout=10)
    assert [[e.value for e in batch] for batch in got] == [[1, 2]]


def test_an_event_stamped_with_given_clock_readings_keeps_them_and_gets_a_fresh_id() -> None:
    _, events = virtual_events()
    first = events.make_at(Kind.READING, "t", 21.5, ts=1_700_000_000.5, mono=42.0, unit="°C")
    second = events.make_at(Kind.READING, "t", 21.6, ts=1_700_000_000.5, mono=42.0, unit="°C")
    assert (first.ts, first.mono, first.unit, first.kind, first.entity, first.value) == (
        1_700_000_000.5, 42.0, "°C", Kind.READING, "t", 21.5)
    assert (first.rule, first.cause, first.detail, first.hold_s) == (None, None, None, None)
    assert first.id != second.id


def test_the_values_of_one_read_are_posted_as_one_batch_in_the_order_they_came() -> None:
    rec, batches = Recorder(), list[list[Event]]()
    ctx = batching_context(rec, batches)
    t, h = Channel(ctx, "temperature"), Channel(ctx, "humidity")
    feed_read(ctx, [t, h], [(t, 20.0), (h, 40.0), (t, 21.0), (h, 41.0)])
    assert [[(e.entity, e.value) for e in batch] for batch in batches] == [
        [("temperature", 20.0), ("humidity", 40.0), ("temperature", 21.0), ("humidity", 41.0)]]


def test_the_values_of_one_read_are_stamped_with_the_time_of_the_read() -> None:
    rec, batches = Recorder(), list[list[Event]]()
    ctx = batching_context(rec, batches)
    t = Channel(ctx, "temperature")
    feed_read(ctx, [t], [(t, 20.0), (t, 21.0)])
    clock = ctx.clock
    assert [(e.ts, e.mono) for e in batches[0]] == [(clock.time(), clock.monotonic())] * 2


def test_an_unavailable_entity_is_available_again_before_its_first_reading_of_a_read() -> None:
    rec, batches = Recorder(), list[list[Event]]()
    ctx = batching_context(rec, batches)
    t = Channel(ctx, "temperature")
    t.set_available(False, "port gone")
    feed_read(ctx, [t], [(t, 20.0)])
    assert [(e.kind, e.value) for e in batches[0]] == [(Kind.AVAILABILITY, True), (Kind.READING, 20.0)]


def test_a_closed_channel_takes_no_value_of_a_read_and_arms_no_timer() -> None:
    rec, batches = Recorder(), list[list[Event]]()
    clock, _ = virtual_events()
    scheduler = VirtualScheduler(clock)
    ctx = batching_context(rec, batches, scheduler)
    t = Channel(ctx, "temperature", steps=[ThrottleStep(step="throttle", min_interval_s=10, heartbeat_s=300)])
    feed_read(ctx, [t], [(t, 20.0)])
    t.close()
    feed_read(ctx, [t], [(t, 21.0), (t, 22.0)])
    assert [e.value for e in rec.events] == [20.0]
    assert scheduler.pending() == 0


def test_a_value_its_conditioning_refuses_costs_that_value_not_the_rest_of_the_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two 1e308 in an average window overflow the mean: the values before and after it in the same read are posted,
    and the entity that came back is announced available before its reading (its state moved with that event)."""
    rec, batches = Recorder(), list[list[Event]]()
    ctx = batching_context(rec, batches)
    t = Channel(ctx, "temperature", steps=[AverageStep(step="average", window=3)])
    h = Channel(ctx, "humidity")
    h.set_available(False, "port gone")
    rec.events.clear()
    feed_read(ctx, [t, h], [(h, 40.0), (t, 1e308), (t, 1e308), (h, 41.0)])
    assert [(e.entity, e.kind, e.value) for e in rec.events if e.entity == "humidity"] == [
        ("humidity", Kind.AVAILABILITY, True), ("humidity", Kind.READING, 40.0), ("humidity", Kind.READING, 41.0)]
    assert "temperature: value 1e+308 refused by its conditioning (OverflowError" in caplog.text


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    with pty_pair() as pair:
        yield pair


def test_a_read_of_many_lines_keeps_the_order_of_its_lines_across_entities(pty: tuple[int, str]) -> None:
    master, path = pty
    rec, batches = Recorder(), list[list[Event]]()
    cfg = {"id": "climate", "driver": "serial.kv", "port": path,
           "fields": {"t": {"entity": "temperature"}, "h": {"entity": "humidity"}}}
    driver = KeyValueSensor(KeyValueSensor.Config.model_validate(cfg))
    driver.start(batching_context(rec, batches))
    os.write(master, b"".join(b"t=%d h=%d\n" % (i, 100 + i) for i in range(50)))
    rec.wait_for(lambda: len(rec.of(Kind.READING)) == 100)
    driver.stop()
    assert [e.value for e in rec.of(Kind.READING)] == [float(v) for i in range(50) for v in (i, 100 + i)]
    assert len(batches) < 100  # a read of many lines is one batch


@settings(max_examples=60)
@given(posts=_posts, limit=st.integers(min_value=1, max_value=10))
def test_taking_a_batch_gives_what_taking_its_events_one_by_one_gives(
    posts: list[tuple[str, Kind]], limit: int,
) -> None:
    _, events = virtual_events()
    made = [events.make(kind, entity, i) for i, (entity, kind) in enumerate(posts)]
    batched, one_by_one = (Bus(capacity=4, hard_limit=8, per_entity=2) for _ in range(2))
    for bus in (batched, one_by_one):
        bus.post_many(made)
    while True:  # each batch against the same number of single takes, with the quota counts left the same
        batch = batched.get_batch(0, limit)
        singles = [e for e in (one_by_one.get_nowait() for _ in range(limit)) if e is not None]
        assert batch == singles
        assert batched._queued == one_by_one._queued and batched.counters == one_by_one.counters
        if not batch:
            break


def test_a_batch_of_critical_events_stops_at_the_hard_limit_as_posting_them_one_by_one_does() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=2, hard_limit=4)
    bus.post_many([events.make(Kind.STATE, f"relay{i}", True) for i in range(6)])  # the batch's fast path
    assert len(bus) == 4 and bus.counters.dropped == 2
