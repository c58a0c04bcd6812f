"""The payloads' encoding, made cheaper for 10,000 lines/s (issue 14), says exactly what it said before."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from enum import IntEnum, StrEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.events import Event, Kind, Value
from gateway.mqtt.topics import dumps, event_payload, iso_utc, state_payload

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def reference_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@settings(max_examples=300)
@given(JSON)
def test_a_payload_is_compact_json_with_its_text_unescaped(data: object) -> None:
    assert dumps(data) == json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def test_a_payload_never_carries_nan_or_infinity() -> None:
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            dumps({"value": bad})


@settings(max_examples=500)
@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_a_timestamp_reads_as_iso_8601_utc_with_milliseconds(ts: float) -> None:
    assert iso_utc(ts) == reference_iso(ts)


@pytest.mark.parametrize("ts", [1_767_225_599.9995, 1_767_225_599.9999996, 1_767_225_600.0, 1_767_225_600.0004999,
                                1_767_225_600.0005, 0.0, 0.9999996, 1_767_225_601.123])
def test_a_timestamp_at_the_edge_of_a_second_or_a_millisecond_reads_as_datetime_reads_it(ts: float) -> None:
    assert iso_utc(ts) == iso_utc(ts - 5.0 + 5.0) == reference_iso(ts)


def test_consecutive_timestamps_in_different_seconds_are_each_right() -> None:
    stamps = [1_767_225_600.5, 1_767_225_601.25, 1_767_225_600.75, 1_767_312_000.0]
    assert [iso_utc(ts) for ts in stamps] == [reference_iso(ts) for ts in stamps]


@settings(max_examples=200)
@given(st.lists(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False), min_size=1, max_size=6),
       st.lists(st.integers(min_value=1, max_value=4), min_size=6, max_size=6))
def test_a_timestamp_repeated_reads_the_same_and_the_next_reads_its_own(stamps: list[float],
                                                                         repeats: list[int]) -> None:
    """The lines of one serial read share their time: each reads right, however often it comes in a row."""
    sequence = [ts for ts, times in zip(stamps, repeats, strict=False) for _ in range(times)]
    assert [iso_utc(ts) for ts in sequence] == [reference_iso(ts) for ts in sequence]


# -- an event's and a state's payload, written without building a dict (issue 14) -----------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text()
           | st.sampled_from([1e-7, -0.0, 1e22, 5e-324, 1.7976931348623157e308, math.nan, math.inf, -math.inf,
                              "°C", "é\u2028\x00\"\\\n", "\U0001f525"]))
"""Every JSON scalar a value can be, the non-finite floats JSON has no word for, and text that needs escaping."""
OPTIONAL_TEXT = st.none() | st.text()


def reference_event_payload(event: Event, seq: int) -> bytes:
    """The payload as a dict through ``json.dumps``: what docs/mqtt.md describes, and what the bridge sent before."""
    value = None if isinstance(event.value, float) and not math.isfinite(event.value) else event.value
    data = {"id": event.id, "seq": seq, "entity": event.entity, "kind": str(event.kind), "value": value,
            "ts": reference_iso(event.ts)}
    for key in ("unit", "rule", "cause", "detail"):
        if getattr(event, key) is not None:
            data[key] = getattr(event, key)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


@settings(max_examples=500)
@given(id_=st.text(), seq=st.integers(min_value=0), entity=st.text(), kind=st.sampled_from(Kind), value=SCALARS,
       ts=st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False), unit=OPTIONAL_TEXT, rule=OPTIONAL_TEXT,
       cause=OPTIONAL_TEXT, detail=OPTIONAL_TEXT)
def test_an_event_payload_is_byte_for_byte_the_json_of_its_fields(
    id_: str, seq: int, entity: str, kind: Kind, value: Value, ts: float, unit: str | None, rule: str | None,
    cause: str | None, detail: str | None,
) -> None:
    event = Event(id=id_, kind=kind, entity=entity, value=value, ts=ts, mono=0.0, unit=unit, rule=rule, cause=cause,
                  detail=detail)
    assert event_payload(event, seq) == reference_event_payload(event, seq)


@settings(max_examples=500)
@given(SCALARS)
def test_a_state_payload_is_byte_for_byte_the_json_of_the_value(value: Value) -> None:
    finite = None if isinstance(value, float) and not math.isfinite(value) else value
    assert state_payload(value) == json.dumps(finite, ensure_ascii=False, allow_nan=False).encode()


class Celsius(float):
    """A float subclass whose own ``repr`` JSON must not use (json writes ``float.__repr__``)."""

    def __repr__(self) -> str:
        return "Celsius(...)"


class Level(IntEnum):
    HIGH = 3


class Mode(StrEnum):
    HEAT = "heat"


@pytest.mark.parametrize("value", [Celsius(21.5), Level.HIGH, Mode.HEAT, True, False, 0, 1])
def test_a_value_of_a_subclass_of_a_json_type_reads_as_json_reads_it(value: Value) -> None:
    event = Event(id="b-1", kind=Kind.READING, entity="x", value=value, ts=0.0, mono=0.0)
    assert event_payload(event, 7) == reference_event_payload(event, 7)
    assert state_payload(value) == json.dumps(value).encode()


def test_an_event_whose_text_cannot_be_utf_8_is_refused_as_before() -> None:
    event = Event(id="b-1", kind=Kind.READING, entity="x", value="\ud800", ts=0.0, mono=0.0)
    with pytest.raises(UnicodeEncodeError):
        event_payload(event, 1)
