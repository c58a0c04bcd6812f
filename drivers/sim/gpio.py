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
