"""Pulse meters: water, gas and S0 electricity meters counted on a GPIO input.

Each pulse is ``1 / pulses_per_unit`` of the meter's unit. The driver counts
active edges on gpiozero's thread (an increment under a lock, nothing more)
and, every ``report_s`` seconds on its timer, posts the running total and the
rate, and saves the total when it is due. Wiring and the figures are in
``docs/drivers.md`` (``gpio.pulse_meter``).

Debounce: an edge counts only if the input was quiet (no edge either way) for
``debounce_ms`` before it. A reed contact bounces on closing *and* opening, and
a slow water-meter magnet makes it chatter; S0 outputs are clean but their
pulses are at least 30 ms long, so the default 20 ms loses none up to 25 Hz.

The total survives restarts and power cuts without wearing the SD card:
``<state_dir>/pulse_<id>.json`` is written atomically (temporary file, fsync,
rename, fsync of the directory), only when the total changed, every
``save_every_s`` seconds or as soon as it grew by ``save_every_units``,
whichever comes first, and at stop. A power cut therefore loses at most the
smaller of the two, plus one ``report_s``. On start the total is the larger of
the saved one and ``initial_total``: it never goes backwards (set
``initial_total`` to the meter's dial to catch up after a long power cut).

The hub may correct the total to the meter's reading: a number, not
negative, sent to ``<base>/set/<id>`` (:meth:`PulseMeter.correct`); it is
saved at once.

Config example::

    [[devices]]
    id = "house_energy"
    driver = "gpio.pulse_meter"
    pin = 5
    meter = "energy"            # energy (kWh), water (m³) or gas (m³)
    pulses_per_unit = 1000      # printed on the meter: 1000 imp/kWh
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from core.entities import Component, EntitySpec
from core.events import Value
from core.files import write_atomically
from core.guard import guarded
from drivers.base import DeviceConfig, Driver, DriverContext, DriverError, Simulator
from drivers.gpio import PinName
from drivers.timing import Periodic, every

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

Meter = Literal["energy", "water", "gas"]
Unit = Literal["kWh", "Wh", "m³", "L"]

_UNITS: dict[str, tuple[str, ...]] = {"energy": ("kWh", "Wh"), "water": ("m³", "L"), "gas": ("m³",)}
_DEFAULT_UNIT: dict[str, str] = {"energy": "kWh", "water": "m³", "gas": "m³"}
_RATE: dict[str, tuple[str, str]] = {"energy": ("W", "power"), "water": ("L/min", "volume_flow_rate"),
                                     "gas": ("m³/h", "volume_flow_rate")}
"""The rate's unit and Home Assistant device class, per kind of meter."""
_PER_SECOND: dict[tuple[str, str], float] = {
    ("energy", "kWh"): 3_600_000.0,  # kWh/s -> W
    ("energy", "Wh"): 3_600.0,
    ("water", "m³"): 60_000.0,  # m³/s -> L/min
    ("water", "L"): 60.0,
    ("gas", "m³"): 3_600.0,  # m³/s -> m³/h
}
"""One unit per second of the total, in the rate's unit."""


class PulseMeterConfig(DeviceConfig):
    driver: Literal["gpio.pulse_meter"]
    pin: PinName
    meter: Meter
    """What the meter counts: Home Assistant's ``device_class`` (energy, water, gas) of the total."""
    unit: Unit | None = None
    """The total's unit: kWh or Wh (energy), m³ or L (water), m³ (gas); unset: kWh or m³."""
    pulses_per_unit: float = Field(gt=0, le=1_000_000)
    """Pulses per unit of the total, as printed on the meter (1000 imp/kWh; 1 pulse per litre is 1000 per m³)."""
    pull_up: bool = True
    """True: the contact or S0 transistor pulls the pin to ground (internal pull-up); False: to 3.3 V."""
    debounce_ms: float = Field(default=20.0, ge=0, le=1_000)
    """An edge counts only after this long without any edge (reed bounce, S0 is clean)."""
    initial_total: float = Field(default=0.0, ge=0)
    """The meter's reading when nothing larger is saved: set it to the dial at installation."""
    report_s: float = Field(default=10.0, ge=0.1, le=3_600)
    """How often the total and the rate are posted (only when changed) and the save is considered."""
    save_every_s: float = Field(default=600.0, ge=1, le=86_400)
    """Save the total at least this often while it grows (the bound on what a power cut loses)."""
    save_every_units: float = Field(default=1.0, gt=0)
    """... or as soon as it grew by this much, whichever comes first."""
    rate_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    """No pulse for this long: the rate is 0 (until then it decays as one pulse over the time since the last)."""

    @model_validator(mode="after")
    def _unit_fits_the_meter(self) -> PulseMeterConfig:
        if self.unit is not None and self.unit not in _UNITS[self.meter]:
            raise ValueError(f"a {self.meter} meter counts in {' or '.join(_UNITS[self.meter])}, not {self.unit}")
        return self

    @property
    def total_unit(self) -> str:
        return self.unit or _DEFAULT_UNIT[self.meter]


class PulseMeter(Driver[PulseMeterConfig]):
    """A running total (``<id>``) and a rate (``<id>_rate``) from pulses on one input."""

    Config: ClassVar[type[DeviceConfig]] = PulseMeterConfig

    def __init__(self, config: PulseMeterConfig) -> None:
        super().__init__(config)
        self._lock = threading.Lock()
        self._device: DigitalInputDevice | None = None
        self._ctx: DriverContext | None = None
        self._tick: Periodic | None = None
        self._offset = 0.0
        """The total (in units) at the last start or correction; the total is ``offset + pulses / ppu``."""
        self._pulses = 0
        self._last_edge = float("-inf")
        self._last_pulse: float | None = None
        self._interval: float | None = None
        self._ignored = 0
        self._saved_total = 0.0
        self._saved_at = 0.0
        self._posted: tuple[float | None, float | None] = (None, None)
        self.saves = 0
        """Files written (the SD card's share of the meter)."""

    @property
    def rate_entity(self) -> str:
        return f"{self.id}_rate"

    def entities(self) -> Sequence[EntitySpec]:
        cfg = self.config
        rate_unit, rate_class = _RATE[cfg.meter]
        return [
            EntitySpec(self.id, Component.SENSOR, unit=cfg.total_unit, device_class=cfg.meter,
                       state_class="total_increasing", minimum=0, correctable=True),
            EntitySpec(self.rate_entity, Component.SENSOR, unit=rate_unit, device_class=rate_class),
        ]

    # -- the life cycle ---------------------------------------------------------------------

    def start(self, ctx: DriverContext) -> None:
        from gpiozero.input_devices import DigitalInputDevice

        cfg = self.config
        self._ctx = ctx
        self._offset = max(self._load(ctx), cfg.initial_total)
        self._pulses = 0
        self._saved_total = self._offset
        self._saved_at = ctx.clock.monotonic()
        try:
            self._device = DigitalInputDevice(cfg.pin, pull_up=cfg.pull_up, pin_factory=ctx.pin_factory)
        except Exception as exc:
            raise DriverError(f"{self.id}: cannot open GPIO pin {cfg.pin}: {exc}") from exc
        self._device.when_activated = guarded(f"{self.id} pulse")(self.pulse)
        self._device.when_deactivated = guarded(f"{self.id} edge")(self._release)
        self._report(force=True)
        self._tick = every(ctx.timers(), cfg.report_s, self._on_tick, first_delay=cfg.report_s)

    def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._device is not None:
            self._device.close()
            self._device = None
            self._save()

    # -- gpiozero's thread: as little as possible ------------------------------------------

    def pulse(self) -> None:
        """An active edge: counted unless it came within ``debounce_ms`` of the previous edge."""
        assert self._ctx is not None
        now = self._ctx.clock.monotonic()
        with self._lock:
            quiet = now - self._last_edge
            self._last_edge = now
            if quiet * 1000 < self.config.debounce_ms:
                self._ignored += 1
                return
            self._pulses += 1
            if self._last_pulse is not None:
                self._interval = now - self._last_pulse
            self._last_pulse = now

    def _release(self) -> None:
        assert self._ctx is not None
        now = self._ctx.clock.monotonic()
        with self._lock:
            self._last_edge = now

    # -- the timer's thread ------------------------------------------------------------------

    def total(self) -> float:
        with self._lock:
            return self._total()

    def _total(self) -> float:
        return round(self._offset + self._pulses / self.config.pulses_per_unit, 6)

    def rate(self) -> float:
        """In W, L/min or m³/h: one pulse over the last interval; once the time since the last pulse is
        longer, one pulse over that time (a tap closed shows falling flow), and 0 after ``rate_timeout_s``."""
        assert self._ctx is not None
        now = self._ctx.clock.monotonic()
        with self._lock:
            last, interval = self._last_pulse, self._interval
        if last is None or interval is None or now - last >= self.config.rate_timeout_s:
            return 0.0
        seconds = max(interval, now - last)
        cfg = self.config
        return round(_PER_SECOND[(cfg.meter, cfg.total_unit)] / cfg.pulses_per_unit / seconds, 2)

    def _on_tick(self) -> None:
        self._report(force=False)
        assert self._ctx is not None
        total = self.total()
        grown = total - self._saved_total
        due = self._ctx.clock.monotonic() - self._saved_at >= self.config.save_every_s
        if grown >= self.config.save_every_units or (grown > 0 and due):
            self._save()

    def _report(self, *, force: bool) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        total, rate = self.total(), self.rate()
        last_total, last_rate = self._posted
        if force or total != last_total:
            ctx.post(ctx.events.reading(self.id, total, self.config.total_unit))
        if force or rate != last_rate:
            ctx.post(ctx.events.reading(self.rate_entity, rate, _RATE[self.config.meter][0]))
        self._posted = (total, rate)

    # -- the hub's correction ----------------------------------------------------------------

    def correct(self, entity: str, value: Value) -> Value:
        """The total set to the meter's own reading (validated: a number, not negative); saved at once."""
        if entity != self.id or isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise DriverError(f"{self.id}: the total is corrected with a number, not negative, not {value!r}")
        with self._lock:
            self._offset = float(value)
            self._pulses = 0
        self._save()
        total = self.total()
        self._posted = (total, self._posted[1])
        return total

    # -- the file ------------------------------------------------------------------------------

    def path(self, ctx: DriverContext | None = None) -> Path | None:
        ctx = ctx or self._ctx
        state_dir = ctx.state_dir if ctx is not None else None
        return None if state_dir is None else Path(state_dir) / f"pulse_{self.id}.json"

    def _load(self, ctx: DriverContext) -> float:
        path = self.path(ctx)
        if path is None:
            log.warning("%s: no state directory: the total starts at initial_total and is not saved", self.id)
            return 0.0
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            total = float(data["total"]) if data.get("version") == FORMAT_VERSION else 0.0
        except FileNotFoundError:
            return 0.0
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("%s: saved total in %s unreadable (%s): starting at initial_total", self.id, path, exc)
            return 0.0
        return total if total >= 0 else 0.0

    def _save(self) -> None:
        """Write the total if it changed since the last save; a failure is logged, counting goes on."""
        path = self.path()
        assert self._ctx is not None
        total = self.total()
        self._saved_at = self._ctx.clock.monotonic()
        if path is None or (total == self._saved_total and path.exists()):
            self._saved_total = total
            return
        record = {"version": FORMAT_VERSION, "meter": self.id, "total": total, "unit": self.config.total_unit,
                  "saved_at": datetime.fromtimestamp(self._ctx.clock.time(), UTC).isoformat(timespec="seconds")}
        try:
            write_atomically(path, json.dumps(record))
        except OSError as exc:
            log.error("%s: cannot save the total to %s: %s", self.id, path, exc.strerror or exc)
            return
        self._saved_total = total
        self.saves += 1

    def stats(self) -> dict[str, int]:
        return {"ignored_edges": self._ignored, "saves": self.saves}

    def simulator(self) -> Simulator | None:
        from drivers.sim.gpio import PulseSimulator

        return PulseSimulator(self.config.pin, rests_high=self.config.pull_up, mean_interval=1.0, mean_hold=0.06)


