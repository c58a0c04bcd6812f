"""GPIO inputs over gpiozero: contacts, buttons, generic digital inputs, PIR motion.

Pins come from ``ctx.pin_factory`` (gpiozero's ``MockFactory`` in tests and
``--simulate``), never from gpiozero's global default. gpiozero calls our
callbacks on its own thread: they only build an event and post it.

Config examples::

    [[devices]]
    id = "front_door"
    driver = "gpio.input"
    pin = 27
    pull_up = true            # contact closes to ground
    device_class = "door"     # Home Assistant binary_sensor class
    inverted = true           # closed contact (pin low) = door shut = false

    [[devices]]
    id = "hall_motion"
    driver = "gpio.motion"
    pin = 17

Outputs (relays, dimmed lights, sirens) are in :mod:`drivers.actuators`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator
from typing_extensions import TypeVar

from core.entities import Component, EntitySpec
from core.fields import empty_list
from core.guard import guarded
from drivers.base import DeviceConfig, Driver, DriverContext, DriverError, Simulator
from drivers.channel import Channel
from drivers.conditioning import BinaryStep, HoldStep, StepConfig

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice

log = logging.getLogger(__name__)

PinName = int | str
"""A BCM number (``17``) or a gpiozero pin name (``"GPIO17"``, ``"BOARD11"``)."""


class _InputFields(DeviceConfig):
    pin: PinName
    pull_up: bool | Literal["floating"] | None = False
    """True: internal pull-up (contact to ground); False: pull-down; ``"floating"`` (or None from
    Python): no internal resistor, an external one sets the idle level; then set ``active_high``."""
    active_high: bool | None = None
    """Only with a floating input: which level means active."""
    bounce_ms: float | None = Field(default=None, ge=0, le=10_000)
    """gpiozero's own bounce time (drops edges after an edge); prefer a ``debounce``/``glitch`` step."""
    inverted: bool = False
    """Report the opposite of the electrical state (e.g. a normally-closed contact)."""
    conditioning: list[BinaryStep] = Field(default_factory=empty_list)
    """Steps applied before an event exists, in order (see :mod:`drivers.conditioning`)."""

    @model_validator(mode="after")
    def _floating_needs_level(self) -> _InputFields:
        if self.pull is None and self.active_high is None:
            raise ValueError('a floating input (pull_up = "floating") needs active_high = true or false')
        if self.pull is not None and self.active_high is not None:
            raise ValueError('active_high only applies to a floating input (pull_up = "floating")')
        return self

    @property
    def pull(self) -> bool | None:
        """gpiozero's ``pull_up``: True, False or None (floating)."""
        return None if self.pull_up in (None, "floating") else bool(self.pull_up)


class GpioInputConfig(_InputFields):
    driver: Literal["gpio.input"]
    device_class: str | None = None
    """Home Assistant binary_sensor class: door, window, opening, ... (None for a button or generic input)."""


class GpioMotionConfig(_InputFields):
    driver: Literal["gpio.motion"]
    device_class: str | None = "motion"
    clear_after_s: float = Field(default=0.0, ge=0, le=86_400)
    """Motion stays on until the sensor has been quiet this long (a hold/clear time after the PIR's own)."""


InputC_co = TypeVar(
    "InputC_co", bound=GpioInputConfig | GpioMotionConfig, default=GpioInputConfig, covariant=True
)


class DigitalInput(Driver[InputC_co]):
    """A two-state input; posts ``True``/``False`` readings on every (conditioned) change and once at start.

    Generic over its model only so that :class:`MotionSensor` can be one with a motion model;
    ``DigitalInput`` alone is ``DigitalInput[GpioInputConfig]``.
    """

    Config: ClassVar[type[DeviceConfig]] = GpioInputConfig

    def __init__(self, config: InputC_co) -> None:
        super().__init__(config)
        self._device: DigitalInputDevice | None = None
        self.channel: Channel | None = None

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec(self.id, Component.BINARY_SENSOR, device_class=self.config.device_class)]

    def steps(self) -> list[StepConfig]:
        return list(self.config.conditioning)

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.input_devices import DigitalInputDevice

        cfg = self.config
        try:
            self._device = DigitalInputDevice(
                cfg.pin,
                pull_up=cfg.pull,
                active_state=cfg.active_high if cfg.pull is None else None,
                bounce_time=cfg.bounce_ms / 1000 if cfg.bounce_ms else None,
                pin_factory=ctx.pin_factory,
            )
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open GPIO pin {cfg.pin}: {exc}") from exc
        channel = self.channel = Channel(ctx, self.id, steps=self.steps())

        @guarded(f"{self.id} edge")
        def edge(active: bool) -> None:
            channel.feed(active != cfg.inverted)

        self._device.when_activated = lambda: edge(True)
        self._device.when_deactivated = lambda: edge(False)
        edge(bool(self._device.value))

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self._device is not None:
            self._device.close()
            self._device = None

    def simulator(self) -> Simulator | None:
        from drivers.sim.gpio import PulseSimulator

        return PulseSimulator(self.config.pin, self._rests_high(), mean_interval=90.0, mean_hold=20.0)

    def stats(self) -> dict[str, int]:
        return {"dropped": self.channel.pipeline.dropped if self.channel is not None else 0}

    def _rests_high(self) -> bool:
        """The electrical level of the pin when the contact is idle."""
        cfg = self.config
        return cfg.pull if cfg.pull is not None else not cfg.active_high


class MotionSensor(DigitalInput[GpioMotionConfig]):
    """A PIR motion sensor: active while it sees motion, and ``clear_after_s`` longer."""

    Config: ClassVar[type[DeviceConfig]] = GpioMotionConfig

    def steps(self) -> list[StepConfig]:
        steps = super().steps()
        clear = self.config.clear_after_s
        return [*steps, HoldStep(step="hold", off_s=clear)] if clear else steps

    def simulator(self) -> Simulator | None:
        from drivers.sim.gpio import PulseSimulator

        return PulseSimulator(self.config.pin, self._rests_high(), mean_interval=30.0, mean_hold=5.0)
