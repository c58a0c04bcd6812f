"""Fault: an event flood at 100x a house's normal rate for 10 s.

A house of 20 sensors reporting 5 times a second posts 100 events/s; the flood
posts 10,000/s from a driver thread, with an alarm and a command in every 100
events. The dispatcher's forwarder is slowed to about 5,000 events/s (a
Pi-class board writing to an SD card), so the bus really overflows. The bus
policy (gateway/bus.py) is what is under test: memory stays bounded, the
readings it coalesces are counted, no alarm or command is ever dropped, and
the newest value of every entity arrives.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from core.clock import SystemClock
from core.events import Event, EventFactory, Kind
from gateway.bus import Bus
from gateway.dispatcher import Dispatcher
from tests.faults_support import Tally

NORMAL_RATE = 100
FLOOD_RATE = 100 * NORMAL_RATE
SECONDS = 10.0
ENTITIES = 20
CAPACITY = 10_000
SLOW_FORWARD = 0.0001


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@dataclass
class Seen:
    """What passed a point, kept small so the process's memory shows the bus, not the test."""

    critical: list[str] = field(default_factory=list)
    readings: int = 0
    last: dict[str, object] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        if event.critical:
            if event.cause is None:  # not the confirmations the dispatcher derives
                self.critical.append(event.id)
        else:
            self.readings += 1
            self.last[event.entity] = event.value


def flood(bus: Bus, events: EventFactory, sent: Seen) -> None:
    started = time.monotonic()
    i = 0
    while (elapsed := time.monotonic() - started) < SECONDS:
        due = int(elapsed * FLOOD_RATE)
        while i < due:
            if i % 100 == 50:
                event = events.make(Kind.ALARM, "alarm_panel", f"triggered-{i}")
            elif i % 100 == 99:
                event = events.make(Kind.COMMAND, "siren", i % 200 == 199)
            else:
                event = events.reading(f"sensor_{i % ENTITIES}", i)
            sent.add(event)
            bus.post(event)
            i += 1
        time.sleep(0.001)


@pytest.mark.slow
def test_a_flood_keeps_memory_bounded_counts_what_it_coalesces_and_never_drops_alarms_or_commands() -> None:
    events = EventFactory(SystemClock())
    bus = Bus(capacity=CAPACITY)
    forwarded = Seen()

    def slow_forward(event: Event) -> None:
        forwarded.add(event)
        time.sleep(SLOW_FORWARD)

    dispatcher = Dispatcher(bus, events, forward=slow_forward)
    consumer = threading.Thread(target=dispatcher.run, kwargs={"tick": 0.1}, daemon=True)
    rss_before = rss()
    peak_len = 0
    consumer.start()
    sent = Seen()
    producer = threading.Thread(target=flood, args=(bus, events, sent))
    producer.start()
    while producer.is_alive():
        peak_len = max(peak_len, len(bus))
        time.sleep(0.05)
    producer.join()
    rss_peak = rss()
    deadline = time.monotonic() + 60
    while len(bus) and time.monotonic() < deadline:
        time.sleep(0.05)
    dispatcher.stop()
    consumer.join(5)

    tally = Tally("flood 100x for 10 s")
    for event_id in sent.critical:
        tally.send(event_id)
    tally.receive(forwarded.critical)
    readings_sent, readings_forwarded = sent.readings, forwarded.readings
    counters = bus.counters
    tally.extra.update(
        posted=counters.posted, readings_sent=readings_sent, readings_forwarded=readings_forwarded,
        coalesced=counters.coalesced, dropped=counters.dropped, bus_high_water=counters.high_water,
        bus_peak_len=peak_len, rss_growth_mb=round((rss_peak - rss_before) / 1e6, 1),
    )
    tally.report()

    tally.assert_nothing_lost()
    assert tally.duplicated == 0
    assert counters.coalesced > 0, "the bus never overflowed: the test proved nothing"
    assert counters.dropped == 0
    assert readings_forwarded + counters.coalesced == readings_sent
    assert peak_len <= CAPACITY + ENTITIES + len(sent.critical)
    assert forwarded.last == sent.last, "the newest value of every entity must arrive"
    assert rss_peak - rss_before < 20e6
