"""The outbox under overload: what is shed first when its bound is reached, and a burst with the broker up.

The policy (docs/mqtt.md, "What is lost first, and when"): above ``outbox.max_events`` readings go first,
coalesced to the newest per entity; alarm, availability, fail-safe, command and state transitions are kept
up to ``max_events + reserve``; whatever is shed is counted by kind.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from core.events import Kind
from gateway.control import format_status
from gateway.mqtt.connection import MAX_QUEUED
from gateway.mqtt.outbox import Outbox
from tests.conftest import Broker, free_port
from tests.mqtt_support import make_bridge, make_config, wait_until


def text(value: str) -> Callable[[int], bytes]:
    return lambda seq: value.encode()


def kinds_left(path: Path) -> list[tuple[str, str]]:
    """(kind, entity) of every row still in the outbox file, in seq order."""
    with sqlite3.connect(path) as db:
        payloads = [json.loads(row[0]) for row in db.execute("SELECT payload FROM outbox ORDER BY seq")]
    return [(p["kind"], p["entity"]) for p in payloads]


def test_with_the_broker_down_alarm_transitions_and_commands_survive_and_readings_are_shed_first(
    tmp_path: Path,
) -> None:
    # Nothing listens on this port: the broker is down for the whole test.
    harness = make_bridge(make_config("gw-over-1", tmp_path, free_port(), outbox={"max_events": 100}))
    bridge, events = harness.bridge, harness.events
    bridge.start()
    bridge.forward(events.make(Kind.ALARM, "house_alarm", "arming"))
    for i in range(400):  # a rule toggles the light on every reading
        bridge.forward(events.make(Kind.READING, "living_temp", 20.0 + i / 100, unit="°C"))
        bridge.forward(events.make(Kind.COMMAND, "hall_light", i % 2 == 0, rule="toggle"))
        bridge.forward(events.make(Kind.STATE, "hall_light", i % 2 == 0))
        if i == 200:
            bridge.forward(events.make(Kind.ALARM, "house_alarm", "armed_away"))
        if i % 50 == 0:
            bridge.outbox.commit()
    bridge.stop(timeout=1.0)

    left = kinds_left(tmp_path / "outbox.sqlite3")
    assert [k for k in left if k[0] == "alarm"] == [("alarm", "house_alarm")] * 2
    assert sum(1 for k in left if k[0] == "command") == 400
    assert sum(1 for k in left if k[0] == "state") == 400
    assert ("reading", "living_temp") in left  # the newest reading is kept
    shed = bridge.outbox.counters.shed_by_kind
    assert set(shed) == {"reading"}
    assert shed["reading"] == 400 - sum(1 for k in left if k[0] == "reading")
    assert bridge.health()["outbox"]["shed_by_kind"] == shed


def test_readings_are_coalesced_to_the_newest_per_entity_before_any_other_reading_goes(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_events=100, reserve=0)
    for i in range(60):
        outbox.add("gw/event/a", text(f"a{i}"), kind="reading", ts=0.0)
        outbox.add("gw/event/b", text(f"b{i}"), kind="reading", ts=0.0)
    outbox.add("gw/event/c", text("c0"), kind="reading", ts=0.0)  # the oldest entity, one reading
    outbox.commit()
    payloads = [row.payload for row in outbox.fetch(0, 1000)]
    assert len(payloads) == 100
    assert payloads[-3:] == [b"a59", b"b59", b"c0"]  # the newest of every entity is still there, in order
    assert outbox.counters.shed_by_kind == {"reading": 21}


def test_past_the_reserve_the_oldest_commands_go_before_any_alarm_transition_and_are_counted(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_events=100, reserve=50)
    outbox.add("gw/event/alarm", lambda seq: b"arming", kind="alarm", ts=0.0)
    for i in range(200):
        outbox.add("gw/event/light", text(f"c{i}"), kind="command", ts=0.0)
    outbox.commit()
    payloads = [row.payload for row in outbox.fetch(0, 1000)]
    assert len(payloads) == 150
    assert payloads[0] == b"arming"
    assert payloads[1] == b"c51"  # the oldest commands went, in order
    assert outbox.counters.shed_by_kind == {"command": 51}
    assert outbox.counters.dropped == 51


def test_a_burst_with_the_broker_up_is_absorbed_without_a_drop_and_pahos_queue_stays_bounded(
    tmp_path: Path, broker: Broker,
) -> None:
    harness = make_bridge(make_config("gw-over-2", tmp_path, broker.port, outbox={"max_events": 100}))
    bridge, events = harness.bridge, harness.events
    bridge.start()
    wait_until(lambda: bridge.connected, what="connected")
    client = bridge.link.client
    peak = 0
    for i in range(20_000):  # far faster than the window drains it: the outbox grows past max_events
        kind = Kind.COMMAND if i % 2 else Kind.STATE
        bridge.forward(events.make(kind, "hall_light", i % 4 < 2))
        if i % 500 == 0:
            peak = max(peak, len(client._out_messages))
    wait_until(lambda: bridge.outbox.counters.delivered == 20_000, timeout=30, what="all delivered")
    assert bridge.outbox.counters.dropped == 0
    assert bridge.outbox.counters.shed_by_kind == {}
    assert peak <= MAX_QUEUED
    assert client.max_queued_messages == MAX_QUEUED
    bridge.stop()


def test_status_shows_what_the_outbox_shed_by_kind_in_one_line_only_when_something_was_shed() -> None:
    mqtt = {"enabled": True, "connection": "unreachable", "outbox_depth": 120, "outbox_dropped": 403,
            "events_out": 0}
    quiet = format_status({"mqtt": {**mqtt, "outbox_shed_by_kind": {}}}, now=0.0)
    assert "shed" not in quiet
    text = format_status({"mqtt": {**mqtt, "outbox_shed_by_kind": {"reading": 400, "timer": 3}}}, now=0.0)
    assert [line for line in text.splitlines() if "shed" in line] == [
        "outbox shed (never sent): 400 reading, 3 timer"
    ]


def test_a_reading_kept_as_the_newest_is_coalesced_once_a_newer_one_of_its_entity_arrives(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_events=100, reserve=1000)
    outbox.add("gw/event/a", text("a-old"), kind="reading", ts=0.0)
    for i in range(150):
        outbox.add("gw/event/light", text(f"c{i}"), kind="command", ts=0.0)
    outbox.commit()  # over max_events: nothing to coalesce yet, a-old is its entity's newest
    outbox.add("gw/event/a", text("a-new"), kind="reading", ts=0.0)
    outbox.commit()
    payloads = [row.payload for row in outbox.fetch(0, 1000)]
    assert b"a-old" not in payloads and payloads[-1] == b"a-new"
    assert outbox.counters.shed_by_kind == {"reading": 1}


def test_while_the_disk_refuses_writes_the_rows_in_memory_are_shed_by_the_same_table(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.db", max_events=100, reserve=1000)
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own 'disk full'
    outbox.add("gw/event/alarm", text("arming"), kind="alarm", ts=0.0)
    for i in range(300):
        outbox.add("gw/event/temp", text(f"r{i}"), kind="reading", ts=0.0)
        outbox.add("gw/event/light", text(f"c{i}"), kind="command", ts=0.0)
    assert outbox.commit() == 0
    payloads = [row.payload for row in outbox.fetch(0, 1000)]
    assert payloads[0] == b"arming"
    assert [p for p in payloads if p.startswith(b"c")] == [f"c{i}".encode() for i in range(300)]
    assert [p for p in payloads if p.startswith(b"r")] == [b"r299"]
    assert outbox.counters.shed_by_kind == {"reading": 299}
