"""A float's text is its repr, however often and in whatever order values come (core/floattext.py)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from core import floattext
from core.floattext import REMEMBERED, float_text


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50))
def test_every_float_reads_as_its_repr_also_when_it_recurs(values: list[float]) -> None:
    for value in values + values:
        assert float_text(value) == repr(value)


def test_zero_and_negative_zero_keep_their_own_texts_in_either_order() -> None:
    assert [float_text(v) for v in (0.0, -0.0, 0.0, -0.0)] == ["0.0", "-0.0", "0.0", "-0.0"]
    assert [float_text(v) for v in (-0.0, 0.0)] == ["-0.0", "0.0"]


def test_nan_and_infinities_read_as_their_repr() -> None:
    assert [float_text(v) for v in (math.nan, math.inf, -math.inf, math.nan)] == ["nan", "inf", "-inf", "nan"]


def test_values_that_never_recur_keep_the_memory_bounded() -> None:
    for i in range(3 * REMEMBERED):
        assert float_text(i + 0.5) == repr(i + 0.5)
    assert len(floattext._texts) <= REMEMBERED
