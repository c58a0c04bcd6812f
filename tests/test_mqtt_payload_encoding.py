"""The payloads' encoding, made cheaper for 10,000 lines/s (issue 14), says exactly what it said before."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mqtt.topics import dumps, iso_utc

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
