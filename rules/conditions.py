"""Conditions compiled once into small callables, each with a text for traces.

A condition reads the state store, the monotonic clock, the local wall time
and the alarms; it never changes anything. When the wall clock is not trusted
(not synchronised and the policy is to wait), ``ctx.local`` is None and every
time or weekday condition is false, which the trace says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.events import Value
from core.state import StateStore
from rules import model as m


@dataclass(slots=True)
class CondContext:
    state: StateStore
    mono: float
    local: dt.datetime | None
    alarm_state: Callable[[str], str | None]


@dataclass(slots=True, frozen=True)
class Check:
    text: str
    test: Callable[[CondContext], bool]

    def __call__(self, ctx: CondContext) -> bool:
        return self.test(ctx)


def same(a: Value, b: Value) -> bool:
    """Equality as an installer means it: ``true`` is not ``1``, ``21`` is ``21.0``.

    ``type(...) is bool``, not ``isinstance``: ``bool`` has no subclasses, and this runs for every reading a
    trigger watches (issue 14)."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    return a == b


def number(value: Value) -> float | None:
    """``value`` as a float, None when it is no number (a bool is none: ``true`` is not ``1``). A float, what
    sensors send, returns at the first test (issue 14)."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def in_window(now: dt.time, after: dt.time | None, before: dt.time | None) -> bool:
    """``[after, before)``; when ``after > before`` the window crosses midnight."""
    if after is not None and before is not None:
        return after <= now < before if after < before else now >= after or now < before
    if after is not None:
        return now >= after
    return before is None or now < before


def compile_condition(condition: Any) -> Check:  # noqa: PLR0911 - one branch per condition type
    if isinstance(condition, m.StateCondition):
        return _state(condition)
    if isinstance(condition, m.NumericCondition):
        return _numeric(condition)
    if isinstance(condition, m.TimeCondition):
        return _time(condition.after, condition.before, condition.weekdays)
    if isinstance(condition, m.WeekdayCondition):
        return _time(None, None, condition.days)
    if isinstance(condition, m.HeldCondition):
        return _held(condition)
    if isinstance(condition, m.AlarmCondition):
        modes = [condition.mode] if isinstance(condition.mode, str) else list(condition.mode)
        alarm = condition.alarm
        return Check(f"alarm {alarm} in {modes}", lambda ctx: ctx.alarm_state(alarm) in modes)
    if isinstance(condition, m.AllCondition | m.AnyCondition | m.NotCondition):
        return _group(condition.type, [compile_condition(c) for c in condition.conditions])
    raise TypeError(f"unknown condition {condition!r}")


def _state(c: m.StateCondition) -> Check:
    entity = c.entity
    wanted: Sequence[Value] = [c.equals] if c.in_ is None else c.in_
    text = f"{entity} == {c.equals!r}" if c.in_ is None else f"{entity} in {c.in_!r}"

    def test(ctx: CondContext) -> bool:
        value = ctx.state.value(entity)
        return any(same(value, w) for w in wanted)

    return Check(text, test)


def _numeric(c: m.NumericCondition) -> Check:
    entity, above, below = c.entity, c.above, c.below
    text = " and ".join(
        part for part in (f"{entity} > {above:g}" if above is not None else "",
                          f"{entity} < {below:g}" if below is not None else "") if part
    )

    def test(ctx: CondContext) -> bool:
        value = number(ctx.state.value(entity))
        return value is not None and (above is None or value > above) and (below is None or value < below)

    return Check(text, test)


def _time(after: dt.time | None, before: dt.time | None, days: Sequence[str] | None) -> Check:
    parts = []
    if after is not None:
        parts.append(f"after {after:%H:%M:%S}")
    if before is not None:
        parts.append(f"before {before:%H:%M:%S}")
    if days is not None:
        parts.append(f"on {','.join(days)}")
    wanted = frozenset(days) if days is not None else None

    def test(ctx: CondContext) -> bool:
        if ctx.local is None:
            return False
        if wanted is not None and m.local_weekday(ctx.local) not in wanted:
            return False
        return in_window(ctx.local.time(), after, before)

    return Check("time " + " ".join(parts), test)


def _held(c: m.HeldCondition) -> Check:
    entity, seconds, equals = c.entity, c.for_, c.equals
    text = f"{entity} held {'' if equals is None else f'{equals!r} '}for {seconds:g}s"

    def test(ctx: CondContext) -> bool:
        state = ctx.state.get(entity)
        if state is None or not state.available:
            return False
        if equals is not None and not same(state.value, equals):
            return False
        return ctx.mono - state.changed_mono >= seconds

    return Check(text, test)


def _group(kind: str, checks: list[Check]) -> Check:
    text = f"{kind}({'; '.join(c.text for c in checks)})"
    if kind == "all":
        return Check(text, lambda ctx: all(c(ctx) for c in checks))
    if kind == "any":
        return Check(text, lambda ctx: any(c(ctx) for c in checks))
    return Check(text, lambda ctx: not any(c(ctx) for c in checks))
