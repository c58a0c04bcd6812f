"""Analog inputs through a Microchip MCP3008 (10-bit) or MCP3208 (12-bit) ADC on SPI.

gpiozero's ``MCP3008``/``MCP3208`` read the chip; the pins come from
``ctx.pin_factory`` like every GPIO driver. The driver polls at a fixed rate
(``poll_s``, no drift), maps the 0-1 reading linearly onto
``min_value``-``max_value`` in ``unit``, and hands the number to its
conditioning steps (smoothing, deadband, throttle with heartbeat...). A read
that fails makes the entity unavailable until a read succeeds.

On mock pins (tests, ``--simulate``) :class:`drivers.sim.analog.McpEmulator` plays the
chip's side of the SPI conversation on the same pins, so the real gpiozero code runs.

Config example::

    [[devices]]
    id = "tank_level"
    driver = "analog.mcp3008"
    channel = 0
    min_value = 0
    max_value = 100
    unit = "%"
    poll_s = 2
    conditioning = [{ step = "average", window = 5 }, { step = "deadband", delta = 1 },
                    { step = "throttle", heartbeat_s = 300 }]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from core.entities import Component, EntitySpec
from core.fields import empty_list
from core.guard import guarded
from drivers.base import DeviceConfig, Driver, DriverContext, DriverError, Simulator
from drivers.channel import Channel
from drivers.conditioning import NumericStep
from drivers.timing import Periodic, every

if TYPE_CHECKING:
    from gpiozero import AnalogInputDevice

FAILURES_BEFORE_RESTART = 5
"""Consecutive failed reads after which the driver asks its supervisor for a restart (re-open SPI)."""

SPI_PINS = {0: (11, 10, 9, 8), 1: (11, 10, 9, 7)}
"""Hardware SPI0 (clock, MOSI, MISO, select) for chip-select 0 and 1, as gpiozero maps them."""


class AnalogConfig(DeviceConfig):
    channel: int = Field(ge=0, le=7)
    differential: bool = False
    """Read ``channel`` relative to its pair (0-1, 2-3, ...) instead of ground."""
    spi_device: Literal[0, 1] = 0
    """Chip select: CE0 (GPIO8) or CE1 (GPIO7) on SPI0."""
    poll_s: float = Field(default=1.0, ge=0.05, le=3600)
    min_value: float = 0.0
    """What a reading of 0 V means."""
    max_value: float = 1.0
    """What a reading of the reference voltage means."""
    unit: str | None = None
    device_class: str | None = None
    conditioning: list[NumericStep] = Field(default_factory=empty_list)
    stale_after: float | None = Field(default=None, gt=0)

    bits: ClassVar[int] = 10

    def spi_select(self) -> int | None:
        return self.spi_device

    @model_validator(mode="after")
    def _distinct_ends(self) -> AnalogConfig:
        if self.min_value == self.max_value:
            raise ValueError("min_value and max_value are equal: every reading would be the same")
        return self


class Mcp3008Config(AnalogConfig):
    driver: Literal["analog.mcp3008"]


class Mcp3208Config(AnalogConfig):
    driver: Literal["analog.mcp3208"]
    bits: ClassVar[int] = 12


class AnalogInput(Driver[AnalogConfig]):
    Config: ClassVar[type[DeviceConfig]] = Mcp3008Config

    def __init__(self, config: AnalogConfig) -> None:
        super().__init__(config)
        self._device: AnalogInputDevice | None = None
        self._poll: Periodic | None = None
        self.channel: Channel | None = None
        self.read_errors = 0
        self._failures_in_a_row = 0
        self._ctx: DriverContext | None = None

    def entities(self) -> Sequence[EntitySpec]:
        cfg = self.config
        return [EntitySpec(self.id, Component.SENSOR, unit=cfg.unit, device_class=cfg.device_class,
                           report_interval=cfg.poll_s)]

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.spi_devices import MCP3008, MCP3208

        cfg = self.config
        chip = MCP3208 if cfg.bits == 12 else MCP3008
        try:
            self._device = chip(channel=cfg.channel, differential=cfg.differential, port=0,
                                device=cfg.spi_device, pin_factory=ctx.pin_factory)
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open the ADC on SPI0.{cfg.spi_device}: {exc}") from exc
        self._ctx = ctx
        self.channel = Channel(ctx, self.id, unit=cfg.unit, steps=cfg.conditioning, stale_after=cfg.stale_after)
        self._poll = every(ctx.timers(), cfg.poll_s, guarded(f"{self.id} read")(self.read))

    def read(self) -> None:
        device, channel, cfg = self._device, self.channel, self.config
        if device is None or channel is None:
            return
        try:
            raw = float(device.value)
        except Exception as exc:
            self.read_errors += 1
            self._failures_in_a_row += 1
            channel.set_available(False, f"ADC read failed: {exc}")
            if self._failures_in_a_row == FAILURES_BEFORE_RESTART and self._ctx is not None:
                self._ctx.fail(f"{FAILURES_BEFORE_RESTART} ADC reads failed in a row: {exc}")
            return
        self._failures_in_a_row = 0
        channel.feed(cfg.min_value + raw * (cfg.max_value - cfg.min_value))

    def stats(self) -> dict[str, int]:
        return {
            "read_errors": self.read_errors,
            "skipped_polls": self._poll.skipped if self._poll is not None else 0,
            "dropped": self.channel.pipeline.dropped if self.channel is not None else 0,
        }

    def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self.channel is not None:
            self.channel.close()
        if self._device is not None:
            self._device.close()
            self._device = None

    def simulator(self) -> Simulator | None:
        from drivers.sim.analog import AnalogTwin

        return AnalogTwin(self.config)


class Mcp3208Input(AnalogInput):
    Config = Mcp3208Config
