"""A rotary encoder (a knob with detents, KY-040 style): a position within limits, and each turn as an event.

Two entities:

* ``<id>``: a ``sensor`` of the knob's position, from ``initial`` (default
  ``minimum``), ``step`` per detent, held within ``minimum``..``maximum``
  (turning past a limit does nothing) or, with ``wrap = true``, going round
  (past ``maximum`` to ``minimum`` and back), like a dial. It is a reading,
  so a fast spin may be coalesced to its newest position on a busy bus.
* ``<id>_turn``: an ``event`` with ``clockwise`` / ``counterclockwise``, one per
  detent, for one moment, then null (like a button's gestures), so a rule's
  state trigger fires on every detent::

      [[rules.triggers]]
      type = "state"
      entity = "lounge_knob_turn"
      to = "clockwise"

The position is not kept across restarts: a knob has no end stops, so it
starts at ``initial`` again.

Decoding is gpiozero's ``RotaryEncoder`` (a state machine over the A/B
quadrature: a step counts only when the full four-edge cycle completes, so
contact bounce cannot count one detent twice); gpiozero's own step counter and
limits are not used.

Config example::

    [[devices]]
    id = "lounge_knob"
    driver = "gpio.rotary_encoder"
    a_pin = 23           # CLK on a KY-040
    b_pin = 25           # DT
    minimum = 0
    maximum = 100
    step = 5             # per detent
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from core.entities import Component, EntitySpec
from core.events import Kind
from core.guard import guarded
from drivers.base import DeviceConfig, Driver, DriverContext, DriverError, Simulator
from drivers.gpio import PinName

if TYPE_CHECKING:
    from gpiozero import RotaryEncoder as GpiozeroEncoder

log = logging.getLogger(__name__)

CLOCKWISE, COUNTERCLOCKWISE = "clockwise", "counterclockwise"
TURNS = (CLOCKWISE, COUNTERCLOCKWISE)


class RotaryEncoderConfig(DeviceConfig):
    driver: Literal["gpio.rotary_encoder"]
    a_pin: PinName
    """The encoder's A (CLK) output; A and C (common) to ground, internal pull-ups."""
    b_pin: PinName
    """The encoder's B (DT) output."""
    minimum: float = 0.0
    maximum: float = 100.0
    step: float = Field(default=1.0, gt=0)
    """How far one detent moves the position."""
    initial: float | None = None
    """The position at start; unset: ``minimum``."""
    wrap: bool = False
    """Past ``maximum`` to ``minimum`` (and back) instead of stopping at the limit."""
    unit: str | None = None
    bounce_ms: float | None = Field(default=None, ge=0, le=100)
    """Edges within this of the previous one are ignored by the pin (unset: none; the quadrature
    state machine already rejects most bounce)."""

    @model_validator(mode="after")
    def _consistent(self) -> RotaryEncoderConfig:
        if self.minimum >= self.maximum:
            raise ValueError(f"minimum {self.minimum:g} must be below maximum {self.maximum:g}")
        if self.step > self.maximum - self.minimum:
            raise ValueError(f"step {self.step:g} is more than the whole range {self.minimum:g}..{self.maximum:g}")
        if self.initial is not None and not self.minimum <= self.initial <= self.maximum:
            raise ValueError(f"initial {self.initial:g} is outside minimum..maximum "
                             f"({self.minimum:g}..{self.maximum:g})")
        return self


class RotaryEncoder(Driver[RotaryEncoderConfig]):
    """Counts detents into a position and posts each turn (see the module docstring)."""

    Config: ClassVar[type[DeviceConfig]] = RotaryEncoderConfig

    def __init__(self, config: RotaryEncoderConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._device: GpiozeroEncoder | None = None
        self._ctx: DriverContext | None = None
        self.position = config.minimum if config.initial is None else config.initial

    @property
    def turn_entity(self) -> str:
        return f"{self.id}_turn"

    def entities(self) -> Sequence[EntitySpec]:
        cfg = self.config
        return [EntitySpec(self.id, Component.SENSOR, unit=cfg.unit, minimum=cfg.minimum, maximum=cfg.maximum,
                           icon="mdi:knob"),
                EntitySpec(self.turn_entity, Component.EVENT, options=TURNS, icon="mdi:rotate-right")]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.input_devices import RotaryEncoder as GpiozeroEncoder

        cfg = self.config
        self._ctx = ctx
        try:
            self._device = GpiozeroEncoder(
                cfg.a_pin, cfg.b_pin, max_steps=0, pin_factory=ctx.pin_factory,
                bounce_time=None if cfg.bounce_ms is None else cfg.bounce_ms / 1000)
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open GPIO pins {cfg.a_pin}, {cfg.b_pin}: {exc}") from exc
        self._device.when_rotated_clockwise = guarded(f"{self.id} clockwise")(self._clockwise)
        self._device.when_rotated_counter_clockwise = guarded(f"{self.id} counterclockwise")(self._counterclockwise)
        ctx.post(ctx.events.reading(self.id, self.position))
        ctx.post(ctx.events.reading(self.turn_entity, None))

    def stop(self) -> None:
        with self._lock:
            if self._device is not None:
                self._device.close()
                self._device = None

    def _clockwise(self) -> None:
        self._turned(+1)

    def _counterclockwise(self) -> None:
        self._turned(-1)

    def _turned(self, direction: int) -> None:
        cfg = self.config
        with self._lock:
            ctx = self._ctx
            if ctx is None or self._device is None:
                return
            before = self.position
            position = round(before + direction * cfg.step, 9)
            if position > cfg.maximum:
                position = cfg.minimum if cfg.wrap else cfg.maximum
            elif position < cfg.minimum:
                position = cfg.maximum if cfg.wrap else cfg.minimum
            self.position = position
            turn = CLOCKWISE if direction > 0 else COUNTERCLOCKWISE
            ctx.post(ctx.events.make(Kind.STATE, self.turn_entity, turn, detail="encoder"))
            ctx.post(ctx.events.make(Kind.STATE, self.turn_entity, None, detail="encoder at rest"))
            if position != before:
                ctx.post(ctx.events.reading(self.id, position))

    def simulator(self) -> Simulator | None:
        from drivers.sim.gpio import KnobSimulator

        return KnobSimulator(self.config.a_pin, self.config.b_pin)
