"""Conditioning steps as specifications, in virtual time (no threads, no sleeps)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from drivers.conditioning import (
    BinaryStep,
    Health,
    NumericStep,
    Out,
    Pipeline,
    Sample,
    build_pipeline,
)


def pipe(*steps: dict[str, Any]) -> Pipeline:
    adapter: TypeAdapter[Any] = TypeAdapter(NumericStep)
    return build_pipeline([adapter.validate_python(s) for s in steps])


def bpipe(*steps: dict[str, Any]) -> Pipeline:
    adapter: TypeAdapter[Any] = TypeAdapter(BinaryStep)
    return build_pipeline([adapter.validate_python(s) for s in steps])


def run(p: Pipeline, timeline: Sequence[tuple[float, Any]], until: float) -> list[tuple[float, Any]]:
    """Feed (time, value) pairs and poll at every deadline up to ``until``; returns (at, value) out."""
    out: list[Out] = []
    for t, v in timeline:
        while (d := p.deadline()) is not None and d <= t:
            out += p.poll(d)
        out += p.feed(Sample(v, t))
    while (d := p.deadline()) is not None and d <= until:
        out += p.poll(d)
    return [(o.at, o.value) if isinstance(o, Sample) else ("health", o.available) for o in out]  # type: ignore[misc]


def test_debounce_turns_chatter_into_one_change() -> None:
    p = bpipe({"step": "debounce", "ms": 50})
    chatter = [(0.0, False)] + [(1.0 + i * 0.005, i % 2 == 0) for i in range(21)]
    assert run(p, chatter, until=2.0) == [(0.0, False), (1.1 + 0.05, True)]


def test_debounce_drops_a_change_that_reverts_before_it_is_stable() -> None:
    p = bpipe({"step": "debounce", "ms": 50})
    assert run(p, [(0.0, False), (1.0, True), (1.03, False)], until=5.0) == [(0.0, False)]


def test_glitch_drops_both_edges_of_a_short_blip_and_counts_it() -> None:
    p = bpipe({"step": "glitch", "ms": 20})
    assert run(p, [(0.0, False), (1.0, True), (1.01, False)], until=5.0) == [(0.0, False)]
    assert p.dropped == 1


def test_glitch_passes_a_long_pulse_with_its_edge_time() -> None:
    p = bpipe({"step": "glitch", "ms": 20})
    assert run(p, [(0.0, False), (1.0, True), (1.5, False)], until=5.0) == [
        (0.0, False), (1.0, True), (1.5, False)
    ]


def test_glitch_samples_after_the_first_edge_without_restarting() -> None:
    p = bpipe({"step": "glitch", "ms": 20})
    out = run(p, [(0.0, False), (1.0, True), (1.01, False), (1.015, True)], until=5.0)
    assert out == [(0.0, False), (1.0, True)]


def test_hold_keeps_motion_on_until_quiet_for_the_clear_time() -> None:
    p = bpipe({"step": "hold", "off_s": 30})
    timeline = [(0.0, False), (10.0, True), (12.0, False), (20.0, True), (21.0, False)]
    assert run(p, timeline, until=100.0) == [(0.0, False), (10.0, True), (51.0, False)]


def test_range_counts_implausible_values_and_drops_them() -> None:
    p = pipe({"step": "range", "min": -40, "max": 85})
    assert run(p, [(0.0, 21.0), (1.0, 85.5), (2.0, -41.0), (3.0, 22.0)], until=5.0) == [(0.0, 21.0), (3.0, 22.0)]
    assert p.dropped == 2


def test_median_removes_a_single_spike() -> None:
    p = pipe({"step": "median", "window": 3})
    out = run(p, [(0, 20.0), (1, 20.0), (2, 99.0), (3, 20.0)], until=5)
    assert [v for _, v in out] == [20.0, 20.0, 20.0, 20.0]


def test_average_is_over_the_last_window_samples() -> None:
    p = pipe({"step": "average", "window": 2})
    assert [v for _, v in run(p, [(0, 10.0), (1, 20.0), (2, 40.0)], until=5)] == [10.0, 15.0, 30.0]


def test_deadband_reports_only_moves_of_at_least_delta() -> None:
    p = pipe({"step": "deadband", "delta": 0.5})
    out = run(p, [(0, 20.0), (1, 20.3), (2, 20.5), (3, 20.6), (4, 19.9)], until=5)
    assert [v for _, v in out] == [20.0, 20.5, 19.9]


def test_deadband_zero_reports_on_change() -> None:
    p = bpipe({"step": "deadband"})
    assert [v for _, v in run(p, [(0, True), (1, True), (2, False)], until=5)] == [True, False]


def test_throttle_sends_the_newest_value_when_the_interval_ends() -> None:
    p = pipe({"step": "throttle", "min_interval_s": 10})
    out = run(p, [(0, 1.0), (1, 2.0), (2, 3.0), (15, 4.0)], until=30)
    assert out == [(0, 1.0), (10, 3.0), (20, 4.0)]
    assert p.dropped == 1


def test_throttle_heartbeat_resends_the_last_value_when_quiet() -> None:
    p = pipe({"step": "deadband", "delta": 1}, {"step": "throttle", "heartbeat_s": 60})
    out = run(p, [(0, 20.0), (30, 20.1)], until=130)
    assert out == [(0, 20.0), (60, 20.0), (120, 20.0)]


def test_stuck_value_makes_the_sensor_unavailable_until_it_moves() -> None:
    p = pipe({"step": "stuck", "after_s": 100, "tolerance": 0.01})
    timeline = [(t, 20.0) for t in range(0, 160, 50)] + [(200, 21.0)]
    out = run(p, timeline, until=300)
    assert out == [(0, 20.0), (50, 20.0), ("health", False), ("health", True), (200, 21.0)]


def test_a_pipeline_applies_steps_in_order() -> None:
    p = pipe({"step": "range", "max": 50}, {"step": "median", "window": 3}, {"step": "deadband", "delta": 0.5})
    out = run(p, [(0, 20.0), (1, 900.0), (2, 20.1), (3, 23.0), (4, 23.0)], until=5)
    assert [v for _, v in out] == [20.0, 23.0]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"step": "range", "min": 5, "max": 1}, "no value could ever pass"),
        ({"step": "range"}, "needs min, max or both"),
        ({"step": "throttle", "min_interval_s": 60, "heartbeat_s": 10}, "heartbeat_s must not be shorter"),
        ({"step": "median", "window": 1}, "greater than or equal to 2"),
        ({"step": "smooth"}, "does not match any of the expected tags"),
    ],
)
def test_bad_steps_are_refused_with_a_reason(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(NumericStep).validate_python(step)


def test_a_binary_input_refuses_numeric_steps() -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(BinaryStep).validate_python({"step": "median", "window": 3})


def test_health_passes_through_later_steps_untouched() -> None:
    p = Pipeline()
    assert p._through(0, [Health(False, "x")]) == [Health(False, "x")]
