"""The GPIO inputs' world: a contact or a PIR that now and then leaves its idle level."""

from __future__ import annotations

from typing import Any

from drivers.base import SimWorld
from drivers.gpio import PinName
from drivers.sim.base import ThreadTwin, twin_rng


class PulseSimulator(ThreadTwin):
    """Drives a mock input pin away from its idle level now and then (exponential gaps, seeded)."""

    def __init__(self, pin: PinName, rests_high: bool, *, mean_interval: float, mean_hold: float) -> None:
        super().__init__(f"pin {pin}")
        self._pin_name = pin
        self._rests_high = rests_high
        self._mean_interval = mean_interval
        self._mean_hold = mean_hold

    def start(self, world: SimWorld) -> None:
        pin: Any = world.pin_factory.pin(self._pin_name)
        rng = twin_rng(world)

        idle, busy = (pin.drive_high, pin.drive_low) if self._rests_high else (pin.drive_low, pin.drive_high)

        def run() -> None:
            while not self._stop.wait(rng.expovariate(1 / self._mean_interval)):
                busy()
                if self._stop.wait(rng.expovariate(1 / self._mean_hold)):
                    break
                idle()

        self._spawn(run)


def quadrature(pins: Any, a: PinName, b: PinName, clockwise: bool) -> None:
    """One detent of a rotary encoder on mock pins: A then B pulled low, A then B released (B first:
    counterclockwise), the full cycle gpiozero's ``RotaryEncoder`` counts as one step."""
    first, second = (pins.pin(a), pins.pin(b)) if clockwise else (pins.pin(b), pins.pin(a))
    first.drive_low()
    second.drive_low()
    first.drive_high()
    second.drive_high()


class KnobSimulator(ThreadTwin):
    """A rotary encoder's world: someone turns the knob one to four detents one way now and then."""

    def __init__(self, a: PinName, b: PinName, *, mean_interval: float = 15.0) -> None:
        super().__init__(f"knob {a}/{b}")
        self._a, self._b = a, b
        self._mean_interval = mean_interval

    def start(self, world: SimWorld) -> None:
        rng = twin_rng(world)

        def run() -> None:
            while not self._stop.wait(rng.expovariate(1 / self._mean_interval)):
                clockwise = rng.random() < 0.5
                for _ in range(rng.randint(1, 4)):
                    quadrature(world.pin_factory, self._a, self._b, clockwise)

        self._spawn(run)
