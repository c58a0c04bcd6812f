"""A float's shortest text (``repr``), remembered for the values that recur.

``repr(float)`` runs David Gay's shortest-digits algorithm: about 3,000 instructions for ``21.5``, more than the
rest of an event's payload, and the dispatcher writes a reading's value up to three times (its ``event/`` payload,
its retained state, a rule's ``publish`` template). A sensor's values recur (a thermometer with a 0.1° step
sends a few hundred distinct ones), so the text is remembered by value: a dict lookup instead (issue 14).

Equal floats have the same ``repr`` except ``0.0`` and ``-0.0`` (equal, with one hash, but written differently)
and NaN (never equal, so never found): zero and the non-finite values are never remembered. The memory is bounded:
past :data:`REMEMBERED` values it starts again empty. Any thread may call it (a dict's get, set and clear are each
atomic; a race costs at most a text written twice).
"""

from __future__ import annotations

import math

REMEMBERED = 1024
"""Distinct values remembered at most (about 120 kB when full; a few kB for a few sensors). A source whose values
never recur (a computed average) fills it and starts it again: its texts cost a lookup more than ``repr``."""

_texts: dict[float, str] = {}


def float_text(value: float) -> str:
    """``repr(value)`` (which is also ``str(value)``) of a ``float`` (not a subclass: the caller checks the type)."""
    text = _texts.get(value)
    if text is None:
        text = repr(value)
        if value and math.isfinite(value):
            if len(_texts) >= REMEMBERED:
                _texts.clear()
            _texts[value] = text
    return text
