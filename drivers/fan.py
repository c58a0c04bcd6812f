"""PWM outputs that move air or an arm: a fan with a percentage and kick-start, a hobby servo.

Both are actuators like any other output: the dispatcher's authority decides
their value (claims, envelope) and they end in their safe state at start, at
stop and when the driver fails. Wiring (the fan's transistor and flyback
diode, the servo's own 5 V supply) is in ``docs/drivers.md``.

Config examples::

    [[devices]]
    id = "attic_fan"
    driver = "gpio.fan"
    pin = 12
    min_duty = 25          # % below which this fan stalls
    kick_start_ms = 500    # full power this long when starting from off

    [[devices]]
    id = "vent_flap"
    driver = "gpio.servo"
    pin = 13
    limits = [0, 90]       # degrees a command may ask for
    safe_angle = 0         # unset: detach (no pulses) when safe
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from core.entities import Component, EntitySpec
from core.events import Kind, Value
from drivers.actuators import _Output, _OutputConfig, percent_of
from drivers.base import Actuator, DeviceConfig, DriverContext, DriverError
from drivers.gpio import PinName
from drivers.timing import Handle

if TYPE_CHECKING:
    from gpiozero import AngularServo, PWMOutputDevice

log = logging.getLogger(__name__)


class FanConfig(_OutputConfig):
    driver: Literal["gpio.fan"]
    frequency_hz: float = Field(default=100.0, gt=0, le=10_000)
    """PWM frequency; a 2-wire fan behind a MOSFET runs well at 25-200 Hz with software PWM."""
    min_duty: float = Field(default=20.0, ge=0, lt=100)
    """Duty in % of the lowest speed: 1..100 % of the hub's scale maps onto ``min_duty``..100 % duty."""
    kick_start_ms: float = Field(default=500.0, ge=0, le=10_000)
    """From off, full power this long first so the fan starts to turn (0: no kick)."""


class Fan(_Output[FanConfig]):
    """A PWM fan; its value is the speed in % (0 = off). Safe state: off."""

    Config: ClassVar[type[DeviceConfig]] = FanConfig
    _device: PWMOutputDevice | None

    def __init__(self, config: FanConfig) -> None:
        super().__init__(config)
        self._percent = 0.0
        self._last_on = 100.0
        self._kick: Handle | None = None
        self._ctx: DriverContext | None = None

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec(self.id, Component.FAN, unit="%", device_class=self.config.device_class,
                           safe_value=0, minimum=0, maximum=100)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.output_devices import PWMOutputDevice

        self._ctx = ctx
        self._open(ctx, PWMOutputDevice, frequency=self.config.frequency_hz, initial_value=0)

    def confirmed(self) -> Value:
        self._device_or_fail()
        return round(self._percent, 1)

    def duty(self, percent: float) -> float:
        """The PWM duty (0..1) of a speed in %."""
        if percent <= 0:
            return 0.0
        low = self.config.min_duty
        return (low + (100.0 - low) * percent / 100.0) / 100.0

    def apply(self, entity: str, value: Value) -> Value:
        """``True``: the last speed; ``False``: off; a number: that speed in %."""
        percent = percent_of(value, self._last_on)
        with self._lock:
            device = self._device_or_fail()
            kicking = self._kick is not None
            starting = self._percent <= 0 < percent and self.config.kick_start_ms > 0
            if percent <= 0:
                self._cancel_kick()
            self._percent = percent
            if percent > 0:
                self._last_on = percent
            if starting and self._ctx is not None:
                device.value = 1.0
                scheduler = self._ctx.timers()
                self._kick = scheduler.call_at(scheduler.clock.monotonic() + self.config.kick_start_ms / 1000,
                                               self._kicked)
            elif not kicking or percent <= 0:
                device.value = self.duty(percent)
            return self.confirmed()

    def _kicked(self) -> None:
        with self._lock:
            self._kick = None
            if self._device is not None:
                self._device.value = self.duty(self._percent)

    def _cancel_kick(self) -> None:
        if self._kick is not None:
            self._kick.cancel()
            self._kick = None

    def to_safe_state(self) -> None:
        with self._lock:
            self._cancel_kick()
            self._percent = 0.0
            if self._device is not None:
                try:
                    self._device.value = 0
                except Exception:
                    log.exception("%s: could not stop the fan", self.id)


class ServoConfig(DeviceConfig):
    driver: Literal["gpio.servo"]
    pin: PinName
    min_angle: float = Field(default=-90.0, ge=-360, le=360)
    max_angle: float = Field(default=90.0, ge=-360, le=360)
    """The angles at ``min_pulse_ms`` and ``max_pulse_ms`` (the servo's datasheet)."""
    min_pulse_ms: float = Field(default=1.0, gt=0, le=5)
    max_pulse_ms: float = Field(default=2.0, gt=0, le=5)
    frame_ms: float = Field(default=20.0, gt=5, le=100)
    limits: tuple[float, float] | None = None
    """The angles a command may ask for (a flap's end stops); unset: ``min_angle``..``max_angle``."""
    safe_angle: float | None = None
    """Where it goes at start, stop and failure; unset: detach (no pulses, the arm goes limp)."""

    @model_validator(mode="after")
    def _consistent(self) -> ServoConfig:
        if self.min_angle >= self.max_angle:
            raise ValueError("min_angle must be below max_angle")
        if self.min_pulse_ms >= self.max_pulse_ms:
            raise ValueError("min_pulse_ms must be below max_pulse_ms")
        low, high = self.bounds
        if not self.min_angle <= low < high <= self.max_angle:
            raise ValueError(f"limits must be two angles within {self.min_angle:g}..{self.max_angle:g}, low first")
        if self.safe_angle is not None and not low <= self.safe_angle <= high:
            raise ValueError(f"safe_angle must be within the limits {low:g}..{high:g}")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        return self.limits if self.limits is not None else (self.min_angle, self.max_angle)


class Servo(Actuator[ServoConfig]):
    """A hobby servo (gpiozero ``AngularServo``): its value is the angle in degrees, or null when detached."""

    Config: ClassVar[type[DeviceConfig]] = ServoConfig

    def __init__(self, config: ServoConfig) -> None:
        super().__init__(config)
        self._servo: AngularServo | None = None

    def entities(self) -> Sequence[EntitySpec]:
        low, high = self.config.bounds
        return [EntitySpec(self.id, Component.NUMBER, unit="°", safe_value=self.config.safe_angle,
                           minimum=low, maximum=high, step=1.0)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.output_devices import AngularServo

        cfg = self.config
        try:
            self._servo = AngularServo(
                cfg.pin, initial_angle=cfg.safe_angle, min_angle=cfg.min_angle, max_angle=cfg.max_angle,
                min_pulse_width=cfg.min_pulse_ms / 1000, max_pulse_width=cfg.max_pulse_ms / 1000,
                frame_width=cfg.frame_ms / 1000, pin_factory=ctx.pin_factory)
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open GPIO pin {cfg.pin}: {exc}") from exc
        ctx.post(ctx.events.make(Kind.STATE, self.id, self.confirmed(), detail="safe state at start"))

    def confirmed(self) -> Value:
        if self._servo is None:
            raise DriverError(f"{self.id} is not started")
        angle = self._servo.angle
        return None if angle is None else round(float(angle), 1)

    def apply(self, entity: str, value: Value) -> Value:
        if self._servo is None:
            raise DriverError(f"{self.id} is not started")
        if value is None or isinstance(value, bool | str):
            raise DriverError(f"{self.id}: an angle is a number, not {value!r}")
        low, high = self.config.bounds
        self._servo.angle = min(high, max(low, float(value)))
        return self.confirmed()

    def to_safe_state(self) -> None:
        if self._servo is None:
            return
        try:
            if self.config.safe_angle is None:
                self._servo.detach()
            else:
                self._servo.angle = self.config.safe_angle
        except Exception:
            log.exception("%s: could not drive the safe state", self.id)

    def stop(self) -> None:
        if self._servo is not None:
            self.to_safe_state()
            self._servo.close()
            self._servo = None
