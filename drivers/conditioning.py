"""Input conditioning: what happens to a raw value before it becomes an event.

Declared per sensor in ``config.toml`` as an ordered list of steps; each step
is a small pure object over an injected time (``Sample.at`` and ``poll(now)``
on the monotonic clock), so it is tested in virtual time and knows nothing of
threads. A :class:`Pipeline` chains them; the driver-side
:class:`drivers.channel.Channel` feeds it and runs its timers.

Steps for two-state inputs (contacts, buttons, PIR):

* ``debounce`` - a new level is passed once it has been stable for ``ms``;
  every edge restarts the wait, so a chattering contact gives one event.
* ``glitch`` - a pulse shorter than ``ms`` is removed, both of its edges
  (gpiozero's ``bounce_time`` only drops the *second* edge and leaves the
  input in the wrong state); removed pulses are counted. Unlike ``debounce``
  the wait does not restart: the level is sampled ``ms`` after the first edge.
* ``hold`` - separate delays for the on-going and off-going edge: a PIR's
  "clear after 30 s without motion" is ``off_s = 30``.

Steps for numbers (serial, analog, 1-wire):

* ``range`` - a plausible range; a value outside it is counted, never an event.
* ``median`` / ``average`` - over the last ``window`` samples.
* ``deadband`` - pass a value only when it moved at least ``delta`` from the
  last one passed (``delta = 0``: report on change). Works for booleans too.
* ``throttle`` - at most one value per ``min_interval_s`` (the newest wins
  and is sent when the interval ends), and a ``heartbeat_s`` re-send of the
  last value when nothing was sent for that long.
* ``stuck`` - a sensor whose value has not moved by more than ``tolerance``
  for ``after_s`` while still reporting is declared unavailable (reason
  "stuck"), and available again when it moves.

Typical order: range, stuck, median/average, deadband, throttle.
"""

from __future__ import annotations

import math
import statistics
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Raw = bool | float
"""What a conditioning step carries: a level or a number."""


@dataclass(slots=True, frozen=True)
class Sample:
    value: Raw
    at: float
    """Monotonic seconds when the value was true."""


@dataclass(slots=True, frozen=True)
class Health:
    """A step's verdict on the sensor itself (``stuck``): not a value, an availability change."""

    available: bool
    reason: str | None = None


Out = Sample | Health


class Step(ABC):
    """One conditioning stage; ``feed`` and ``poll`` return what passes on to the next."""

    dropped: int = 0
    """Values this step removed on purpose (glitches, implausible values); shown in health."""

    @abstractmethod
    def feed(self, sample: Sample) -> list[Out]: ...

    def poll(self, now: float) -> list[Out]:
        """Time-driven output; called at (or after) :meth:`deadline`."""
        return []

    def deadline(self) -> float | None:
        return None


class _Unset:
    pass


_UNSET = _Unset()


class Settle(Step):
    """Pass a new value once it has stayed put ``on_s`` (to truthy) / ``off_s`` (to falsy); restartable."""

    def __init__(self, on_s: float, off_s: float) -> None:
        self.on_s, self.off_s = on_s, off_s
        self._passed: Raw | _Unset = _UNSET
        self._pending: Sample | None = None
        self._due: float | None = None

    def feed(self, sample: Sample) -> list[Out]:
        if isinstance(self._passed, _Unset):
            self._passed = sample.value
            return [sample]
        if sample.value == self._passed:
            if self._pending is not None:
                self.dropped += 1
            self._pending = self._due = None
            return []
        wait = self.on_s if sample.value else self.off_s
        if wait <= 0:
            self._pending = self._due = None
            self._passed = sample.value
            return [sample]
        self._pending, self._due = sample, sample.at + wait
        return []

    def poll(self, now: float) -> list[Out]:
        if self._pending is None or self._due is None or now < self._due:
            return []
        value, at = self._pending.value, self._due
        self._passed, self._pending, self._due = value, None, None
        return [Sample(value, at)]

    def deadline(self) -> float | None:
        return self._due


class Glitch(Step):
    """Remove pulses shorter than ``min_s``: sample the level ``min_s`` after the first edge."""

    def __init__(self, min_s: float) -> None:
        self.min_s = min_s
        self._passed: Raw | _Unset = _UNSET
        self._latest: Sample | None = None
        self._edge: Sample | None = None

    def feed(self, sample: Sample) -> list[Out]:
        if isinstance(self._passed, _Unset):
            self._passed = sample.value
            return [sample]
        self._latest = sample
        if self._edge is None and sample.value != self._passed:
            self._edge = sample
        return []

    def poll(self, now: float) -> list[Out]:
        edge, latest = self._edge, self._latest
        if edge is None or latest is None or now < edge.at + self.min_s:
            return []
        self._edge = None
        if latest.value == self._passed:
            self.dropped += 1
            return []
        self._passed = latest.value
        return [Sample(latest.value, edge.at)]

    def deadline(self) -> float | None:
        return None if self._edge is None else self._edge.at + self.min_s


class Range(Step):
    def __init__(self, minimum: float | None, maximum: float | None) -> None:
        self.minimum = -math.inf if minimum is None else minimum
        self.maximum = math.inf if maximum is None else maximum

    def feed(self, sample: Sample) -> list[Out]:
        if self.minimum <= float(sample.value) <= self.maximum:
            return [sample]
        self.dropped += 1
        return []


class Window(Step):
    """Median or mean over the last ``window`` samples (fewer until it fills)."""

    def __init__(self, window: int, how: Literal["median", "average"]) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._reduce = statistics.median if how == "median" else statistics.fmean

    def feed(self, sample: Sample) -> list[Out]:
        self._values.append(float(sample.value))
        return [Sample(float(self._reduce(self._values)), sample.at)]


class Deadband(Step):
    def __init__(self, delta: float) -> None:
        self.delta = delta
        self._last: Raw | _Unset = _UNSET

    def feed(self, sample: Sample) -> list[Out]:
        last = self._last
        if isinstance(last, _Unset) or self._moved(last, sample.value):
            self._last = sample.value
            return [sample]
        return []

    def _moved(self, last: Raw, value: Raw) -> bool:
        if isinstance(value, bool) or isinstance(last, bool) or self.delta == 0:
            return value != last
        return abs(value - last) >= self.delta


class Throttle(Step):
    """At most one value per ``min_interval`` (newest wins, sent when the interval ends); heartbeat re-sends."""

    def __init__(self, min_interval: float, heartbeat: float | None) -> None:
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self._sent_at: float | None = None
        self._sent: Sample | None = None
        self._pending: Sample | None = None

    def feed(self, sample: Sample) -> list[Out]:
        if self._sent_at is None or sample.at - self._sent_at >= self.min_interval:
            return [self._send(sample, sample.at)]
        if self._pending is not None:
            self.dropped += 1
        self._pending = sample
        return []

    def _send(self, sample: Sample, at: float) -> Sample:
        self._pending = None
        self._sent_at = at
        self._sent = Sample(sample.value, at)
        return self._sent

    def poll(self, now: float) -> list[Out]:
        due = self.deadline()
        if due is None or now < due:
            return []
        if self._pending is not None:
            return [self._send(self._pending, due)]
        assert self._sent is not None
        return [self._send(self._sent, due)]

    def deadline(self) -> float | None:
        if self._sent_at is None:
            return None
        if self._pending is not None:
            return self._sent_at + self.min_interval
        if self.heartbeat is not None:
            return self._sent_at + self.heartbeat
        return None


class Stuck(Step):
    """Unavailable while the value has not moved beyond ``tolerance`` for ``after_s``; values then held back."""

    def __init__(self, after_s: float, tolerance: float) -> None:
        self.after_s = after_s
        self.tolerance = tolerance
        self._ref: Sample | None = None
        self.stuck = False

    def feed(self, sample: Sample) -> list[Out]:
        ref = self._ref
        if ref is None or abs(float(sample.value) - float(ref.value)) > self.tolerance:
            self._ref = sample
            if self.stuck:
                self.stuck = False
                return [Health(True), sample]
            return [sample]
        if self.stuck:
            self.dropped += 1
            return []
        if sample.at - ref.at >= self.after_s:
            self.stuck = True
            return [Health(False, f"stuck at {ref.value} for {sample.at - ref.at:.0f} s")]
        return [sample]


class Pipeline:
    """Steps in order; each output of step *i* is fed to step *i + 1*; ``Health`` skips ahead to the end."""

    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self.steps = list(steps)

    def feed(self, sample: Sample) -> list[Out]:
        return self._through(0, [sample])

    def poll(self, now: float) -> list[Out]:
        out: list[Out] = []
        for i, step in enumerate(self.steps):
            due = step.deadline()
            if due is not None and due <= now:
                out.extend(self._through(i + 1, step.poll(now)))
        return out

    def deadline(self) -> float | None:
        deadlines = [d for step in self.steps if (d := step.deadline()) is not None]
        return min(deadlines, default=None)

    @property
    def dropped(self) -> int:
        return sum(step.dropped for step in self.steps)

    def _through(self, start: int, items: Iterable[Out]) -> list[Out]:
        health: list[Out] = []
        current = list(items)
        for step in self.steps[start:]:
            passed: list[Out] = []
            for item in current:
                if isinstance(item, Health):
                    health.append(item)
                else:
                    passed.extend(step.feed(item))
            current = passed
        return health + current


# -- config -----------------------------------------------------------------------------------


class StepConfig(BaseModel):
    # defer_build (inherited by the ~18 steps): built at first use, so a house without conditioning
    # builds none of them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)

    def build(self) -> Step:
        raise NotImplementedError


class DebounceStep(StepConfig):
    """``{ step = "debounce", ms = 50 }``"""

    step: Literal["debounce"]
    ms: float = Field(gt=0, le=60_000)

    def build(self) -> Step:
        return Settle(self.ms / 1000, self.ms / 1000)


class GlitchStep(StepConfig):
    """``{ step = "glitch", ms = 20 }``"""

    step: Literal["glitch"]
    ms: float = Field(gt=0, le=60_000)

    def build(self) -> Step:
        return Glitch(self.ms / 1000)


class HoldStep(StepConfig):
    """``{ step = "hold", on_s = 0, off_s = 30 }``"""

    step: Literal["hold"]
    on_s: float = Field(default=0, ge=0, le=86_400)
    off_s: float = Field(default=0, ge=0, le=86_400)

    def build(self) -> Step:
        return Settle(self.on_s, self.off_s)


class RangeStep(StepConfig):
    """``{ step = "range", min = -40, max = 85 }``"""

    step: Literal["range"]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RangeStep:
        if self.min is None and self.max is None:
            raise ValueError("a range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: no value could ever pass")
        return self

    def build(self) -> Step:
        return Range(self.min, self.max)


class MedianStep(StepConfig):
    """``{ step = "median", window = 5 }``"""

    step: Literal["median"]
    window: int = Field(ge=2, le=1000)

    def build(self) -> Step:
        return Window(self.window, "median")


class AverageStep(StepConfig):
    """``{ step = "average", window = 10 }``"""

    step: Literal["average"]
    window: int = Field(ge=2, le=1000)

    def build(self) -> Step:
        return Window(self.window, "average")


class DeadbandStep(StepConfig):
    """``{ step = "deadband", delta = 0.2 }``; ``delta = 0`` reports on every change."""

    step: Literal["deadband"]
    delta: float = Field(default=0.0, ge=0)

    def build(self) -> Step:
        return Deadband(self.delta)


class ThrottleStep(StepConfig):
    """``{ step = "throttle", min_interval_s = 10, heartbeat_s = 300 }``"""

    step: Literal["throttle"]
    min_interval_s: float = Field(default=0, ge=0, le=86_400)
    heartbeat_s: float | None = Field(default=None, gt=0, le=86_400)

    @model_validator(mode="after")
    def _heartbeat_after_interval(self) -> ThrottleStep:
        if self.heartbeat_s is not None and self.heartbeat_s < self.min_interval_s:
            raise ValueError("heartbeat_s must not be shorter than min_interval_s")
        if self.min_interval_s == 0 and self.heartbeat_s is None:
            raise ValueError("a throttle needs min_interval_s, heartbeat_s or both")
        return self

    def build(self) -> Step:
        return Throttle(self.min_interval_s, self.heartbeat_s)


class StuckStep(StepConfig):
    """``{ step = "stuck", after_s = 3600, tolerance = 0.05 }``"""

    step: Literal["stuck"]
    after_s: float = Field(gt=0)
    tolerance: float = Field(default=0.0, ge=0)

    def build(self) -> Step:
        return Stuck(self.after_s, self.tolerance)


BinaryStep = Annotated[
    DebounceStep | GlitchStep | HoldStep | DeadbandStep | ThrottleStep, Field(discriminator="step")
]
"""Steps allowed on a two-state input."""

NumericStep = Annotated[
    RangeStep | MedianStep | AverageStep | DeadbandStep | ThrottleStep | StuckStep | DebounceStep,
    Field(discriminator="step"),
]
"""Steps allowed on a numeric sensor."""


def build_pipeline(steps: Iterable[StepConfig]) -> Pipeline:
    return Pipeline([step.build() for step in steps])
