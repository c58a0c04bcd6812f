"""GPIO outputs over gpiozero: relays, PWM-dimmed lights, buzzers and sirens with a pattern.

Every actuator declares its **safe state**; it is driven there at start, at
stop, and by :meth:`to_safe_state` when the driver fails (the supervisor and
the dispatcher call it). :meth:`apply` returns what the pin *is* afterwards,
which the dispatcher posts as the confirmed state. Each may declare an
``envelope`` of safety limits (:mod:`drivers.envelope`) that the dispatcher
enforces below the rules.

Config examples::

    [[devices]]
    id = "boiler"
    driver = "gpio.relay"
    pin = 22
    active_high = false       # most relay boards switch on a low input
    safe_state = false
    envelope = { min_off_s = 300, max_on_s = 14400, max_switches_per_hour = 6,
                 interlock = "heat_cool", interlock_wait_s = 120 }

    [[devices]]
    id = "hall_light"
    driver = "gpio.pwm_light"
    pin = 18
    frequency_hz = 200
    safe_brightness = 0

    [[devices]]
    id = "siren"
    driver = "gpio.siren"
    pin = 23
    on_s = 0.5
    off_s = 0.5
    envelope = { max_on_s = 180 }
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator
from typing_extensions import TypeVar

from core.entities import Component, EntitySpec
from core.events import Kind, Value
from core.values import is_on
from drivers.base import Actuator, DeviceConfig, DriverContext, DriverError, Simulator
from drivers.envelope import EnvelopeConfig
from drivers.gpio import PinName
from drivers.timing import Handle, Periodic, every

if TYPE_CHECKING:
    from gpiozero import OutputDevice, PWMOutputDevice

log = logging.getLogger(__name__)


class _OutputConfig(DeviceConfig):
    pin: PinName
    active_high: bool = True
    """False for boards that switch on a low input (most relay boards)."""
    envelope: EnvelopeConfig | None = None
    device_class: str | None = None


class GpioRelayConfig(_OutputConfig):
    driver: Literal["gpio.relay"]
    safe_state: bool = False
    """Where the output goes at start, at stop and when the driver fails."""
    default_state: bool | None = None
    """Where it goes while no rule, controller or hub claims it (gateway/authority.py); unset: ``safe_state``."""
    component: Literal["switch", "light", "siren"] = "switch"

    @model_validator(mode="after")
    def _default_within_the_envelope(self) -> GpioRelayConfig:
        _check_default(self.default_state, self.safe_state, self.envelope)
        return self


class PwmLightConfig(_OutputConfig):
    driver: Literal["gpio.pwm_light"]
    frequency_hz: float = Field(default=200.0, gt=0, le=10_000)
    safe_brightness: float = Field(default=0.0, ge=0, le=100)
    """Brightness in % at start, stop and failure (a stair light might prefer 100)."""
    default_brightness: float | None = Field(default=None, ge=0, le=100)
    """Brightness in % while nothing claims the light; unset: ``safe_brightness``."""

    @model_validator(mode="after")
    def _default_within_the_envelope(self) -> PwmLightConfig:
        _check_default(self.default_brightness, self.safe_brightness, self.envelope)
        return self


def _check_default(default: Value, safe: Value, envelope: EnvelopeConfig | None) -> None:
    """An output whose default is away from safe would switch itself on again after its ``max_on_s``."""
    if default is not None and is_on(default) != is_on(safe) and envelope is not None and envelope.max_on_s:
        raise ValueError("a default away from the safe state cannot go with envelope.max_on_s: the output "
                         "would switch itself on again as soon as the maximum on time ended it")


class SirenConfig(_OutputConfig):
    driver: Literal["gpio.siren"]
    on_s: float = Field(default=0.5, gt=0, le=60)
    off_s: float = Field(default=0.5, ge=0, le=60)
    """0: a continuous tone. Otherwise the output sounds ``on_s``, pauses ``off_s``, and repeats."""
    component: Literal["siren", "switch"] = "siren"


OutputC_co = TypeVar("OutputC_co", bound=_OutputConfig, covariant=True)


def percent_of(value: Value, last_on: float) -> float:
    """A dimmable output's command as a level in %: on -> ``last_on`` (the level it had when last on),
    off -> 0, a number -> that level within 0..100 (a PWM light's brightness, a fan's speed)."""
    if isinstance(value, bool | str) or value is None:
        return last_on if is_on(value) else 0.0
    return min(100.0, max(0.0, float(value)))


class _Output(Actuator[OutputC_co]):
    """Shared life cycle: open in the safe state, post it, close in the safe state."""

    def __init__(self, config: OutputC_co) -> None:
        super().__init__(config)
        self._device: OutputDevice | None = None
        self._lock = threading.RLock()

    def envelope(self) -> Mapping[str, EnvelopeConfig]:
        return {self.id: self.config.envelope} if self.config.envelope is not None else {}

    def _open(self, ctx: DriverContext, factory: Callable[..., OutputDevice], **kwargs: float) -> None:
        try:
            self._device = factory(self.config.pin, active_high=self.config.active_high,
                                   pin_factory=ctx.pin_factory, **kwargs)
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open GPIO pin {self.config.pin}: {exc}") from exc
        self.to_safe_state()
        ctx.post(ctx.events.make(Kind.STATE, self.id, self.confirmed(), detail="safe state at start"))

    def confirmed(self) -> Value:
        raise NotImplementedError

    def _device_or_fail(self) -> OutputDevice:
        if self._device is None:
            raise DriverError(f"{self.id} is not started")
        return self._device

    def stop(self) -> None:
        with self._lock:
            if self._device is not None:
                self.to_safe_state()
                self._device.close()
                self._device = None


class Relay(_Output[GpioRelayConfig]):
    """A relay (or any on/off output) with a declared safe state."""

    Config: ClassVar[type[DeviceConfig]] = GpioRelayConfig

    def entities(self) -> Sequence[EntitySpec]:
        cfg = self.config
        return [EntitySpec(self.id, Component(cfg.component), device_class=cfg.device_class,
                           safe_value=cfg.safe_state, default=cfg.default_state)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.output_devices import OutputDevice

        self._open(ctx, OutputDevice, initial_value=self.config.safe_state)

    def confirmed(self) -> Value:
        return bool(self._device_or_fail().value)

    def apply(self, entity: str, value: Value) -> Value:
        with self._lock:
            self._device_or_fail().value = is_on(value)
            return self.confirmed()

    def to_safe_state(self) -> None:
        with self._lock:
            if self._device is not None:
                try:
                    self._device.value = self.config.safe_state
                except Exception:
                    log.exception("%s: could not drive the safe state", self.id)


class PwmLight(_Output[PwmLightConfig]):
    """A dimmable light or LED strip on a PWM pin; its value is brightness in % (0 = off)."""

    Config: ClassVar[type[DeviceConfig]] = PwmLightConfig
    _device: PWMOutputDevice | None

    def __init__(self, config: PwmLightConfig) -> None:
        super().__init__(config)
        self._last_on = 100.0

    def entities(self) -> Sequence[EntitySpec]:
        cfg = self.config
        return [EntitySpec(self.id, Component.LIGHT, unit="%", device_class=cfg.device_class,
                           safe_value=cfg.safe_brightness, default=cfg.default_brightness, minimum=0, maximum=100)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.output_devices import PWMOutputDevice

        self._open(ctx, PWMOutputDevice, frequency=self.config.frequency_hz,
                   initial_value=self.config.safe_brightness / 100)

    def confirmed(self) -> Value:
        return round(float(self._device_or_fail().value) * 100, 1)

    def apply(self, entity: str, value: Value) -> Value:
        """``True``/``"on"``: the last brightness; ``False``/``"off"``: 0; a number: that brightness in %."""
        percent = percent_of(value, self._last_on)
        with self._lock:
            self._device_or_fail().value = percent / 100
            if percent > 0:
                self._last_on = percent
            return self.confirmed()

    def to_safe_state(self) -> None:
        with self._lock:
            if self._device is not None:
                try:
                    self._device.value = self.config.safe_brightness / 100
                except Exception:
                    log.exception("%s: could not drive the safe state", self.id)


class Siren(_Output[SirenConfig]):
    """A buzzer or siren: while on, it sounds ``on_s`` and pauses ``off_s``, on the driver's timers.

    The confirmed state is whether the pattern runs (not the pin's level at
    that instant); the safe state is always off.
    """

    Config: ClassVar[type[DeviceConfig]] = SirenConfig

    def __init__(self, config: SirenConfig) -> None:
        super().__init__(config)
        self._active = False
        self._pattern: Periodic | None = None
        self._pause: Handle | None = None
        self._ctx: DriverContext | None = None

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec(self.id, Component(self.config.component), device_class=self.config.device_class,
                           safe_value=False)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.output_devices import OutputDevice

        self._ctx = ctx
        self._open(ctx, OutputDevice, initial_value=False)

    def confirmed(self) -> Value:
        self._device_or_fail()
        return self._active

    def apply(self, entity: str, value: Value) -> Value:
        with self._lock:
            device = self._device_or_fail()
            if not is_on(value):
                self.to_safe_state()
            elif not self._active:
                assert self._ctx is not None
                self._active = True
                device.on()
                if self.config.off_s > 0:
                    self._pattern = every(self._ctx.timers(), self.config.on_s + self.config.off_s, self._sound)
            return self.confirmed()

    def _sound(self) -> None:
        with self._lock:
            if self._device is None or not self._active or self._ctx is None:
                return
            self._device.on()
            scheduler = self._ctx.timers()
            self._pause = scheduler.call_at(scheduler.clock.monotonic() + self.config.on_s, self._quiet)

    def _quiet(self) -> None:
        with self._lock:
            if self._device is not None and self._active:
                self._device.off()

    def to_safe_state(self) -> None:
        with self._lock:
            for handle in (self._pattern, self._pause):
                if handle is not None:
                    handle.cancel()
            self._pattern = self._pause = None
            self._active = False
            if self._device is not None:
                try:
                    self._device.off()
                except Exception:
                    log.exception("%s: could not silence", self.id)

    def simulator(self) -> Simulator | None:
        return None
