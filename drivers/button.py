"""A push button with press, double press and long press, as events rules and the hub react to.

The button's entity is an ``event`` (Home Assistant's event entity, with
``event_types`` press, double_press, long_press). Its value is the gesture
for one moment, then null again, so a rule's state trigger fires on every
gesture, the same one twice in a row included::

    [[rules.triggers]]
    type = "state"
    entity = "hall_button"
    to = "double_press"

Both are posted as ``STATE`` events, which the bus never coalesces or drops:
a press is not a reading a newer one may replace.

Timings (defaults like ESPHome's and Zigbee2MQTT's): released within
``double_press_ms`` of a first press and pressed again is a double press;
held ``long_press_ms`` is a long press (sent while still held). A single
press waits ``double_press_ms`` after release to be sure it is not a double
one; ``double_press_ms = 0`` sends it at release instead.

Config example::

    [[devices]]
    id = "hall_button"
    driver = "gpio.button"
    pin = 16                 # to ground, internal pull-up
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from core.entities import Component, EntitySpec
from core.events import Kind
from core.guard import guarded
from drivers.base import DeviceConfig, Driver, DriverContext, DriverError, Simulator
from drivers.gpio import PinName
from drivers.timing import Handle

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice

log = logging.getLogger(__name__)

PRESS, DOUBLE, LONG = "press", "double_press", "long_press"
GESTURES = (PRESS, DOUBLE, LONG)


class ButtonConfig(DeviceConfig):
    driver: Literal["gpio.button"]
    pin: PinName
    pull_up: bool = True
    """True: the button connects the pin to ground (internal pull-up); False: to 3.3 V."""
    debounce_ms: float = Field(default=30.0, ge=0, le=1_000)
    """Edges within this long of the previous one are contact bounce."""
    double_press_ms: float = Field(default=400.0, ge=0, le=5_000)
    long_press_ms: float = Field(default=1_000.0, gt=0, le=60_000)


class Button(Driver[ButtonConfig]):
    """Turns edges into gestures on the context's timers (virtual in tests)."""

    Config: ClassVar[type[DeviceConfig]] = ButtonConfig

    def __init__(self, config: ButtonConfig) -> None:
        super().__init__(config)
        self._lock = threading.RLock()
        self._device: DigitalInputDevice | None = None
        self._ctx: DriverContext | None = None
        self._last_edge = float("-inf")
        self._down = False
        self._presses = 0
        """Presses of the gesture under way (1, or 2 for a double press)."""
        self._long_sent = False
        self._timer: Handle | None = None

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec(self.id, Component.EVENT, device_class="button", options=GESTURES)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.input_devices import DigitalInputDevice

        self._ctx = ctx
        try:
            self._device = DigitalInputDevice(self.config.pin, pull_up=self.config.pull_up,
                                              pin_factory=ctx.pin_factory)
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open GPIO pin {self.config.pin}: {exc}") from exc
        self._device.when_activated = guarded(f"{self.id} press")(self._pressed)
        self._device.when_deactivated = guarded(f"{self.id} release")(self._released)
        ctx.post(ctx.events.reading(self.id, None))

    def stop(self) -> None:
        with self._lock:
            self._cancel()
            if self._device is not None:
                self._device.close()
                self._device = None

    def _pressed(self) -> None:
        self._edge(True)

    def _released(self) -> None:
        self._edge(False)

    def _edge(self, down: bool) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        now = ctx.clock.monotonic()
        with self._lock:
            if (now - self._last_edge) * 1000 < self.config.debounce_ms or down == self._down:
                self._last_edge = now
                return
            self._last_edge = now
            self._down = down
            if down:
                self._cancel()
                self._presses += 1
                self._long_sent = False
                self._arm(self.config.long_press_ms, self._held)
            elif self._long_sent:
                self._presses = 0
            else:
                self._cancel()
                if self._presses >= 2:
                    self._gesture(DOUBLE)
                elif self.config.double_press_ms <= 0:
                    self._gesture(PRESS)
                else:
                    self._arm(self.config.double_press_ms, self._single)

    def _held(self) -> None:
        with self._lock:
            self._timer = None
            if self._down:
                self._long_sent = True
                self._gesture(LONG)

    def _single(self) -> None:
        with self._lock:
            self._timer = None
            if not self._down and self._presses == 1:
                self._gesture(PRESS)

    def _gesture(self, name: str) -> None:
        self._presses = 0
        ctx = self._ctx
        if ctx is not None:
            ctx.post(ctx.events.make(Kind.STATE, self.id, name, detail="button"))
            ctx.post(ctx.events.make(Kind.STATE, self.id, None, detail="button released"))

    def _arm(self, ms: float, fn: Callable[[], None]) -> None:
        assert self._ctx is not None
        scheduler = self._ctx.timers()
        self._timer = scheduler.call_at(scheduler.clock.monotonic() + ms / 1000, fn)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def simulator(self) -> Simulator | None:
        from drivers.sim.gpio import PulseSimulator

        return PulseSimulator(self.config.pin, rests_high=self.config.pull_up, mean_interval=20.0, mean_hold=0.4)
