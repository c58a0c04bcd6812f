"""Pulse meters on MockFactory pins, in virtual time: counting, debounce, rate, a total that survives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from core.clock import VirtualClock
from core.entities import accepts
from core.events import Kind
from drivers.base import DriverError
from drivers.pulse import PulseMeter, PulseMeterConfig
from drivers.timing import VirtualScheduler
from tests.drivers_kit import Recorder, make_context

PIN = 5


def meter(**overrides: Any) -> PulseMeter:
    cfg = {"id": "house_energy", "driver": "gpio.pulse_meter", "pin": PIN, "meter": "energy",
           "pulses_per_unit": 1000, **overrides}
    return PulseMeter(PulseMeterConfig.model_validate(cfg))


class Bench:
    """A meter on mock pins with a virtual clock and scheduler, and a state directory."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.factory = MockFactory()
        self.scheduler = VirtualScheduler(VirtualClock())
        self.rec = Recorder()
        self.ctx = make_context(self.rec, factory=self.factory, scheduler=self.scheduler)
        self.ctx.state_dir = tmp_path
        self.meter = meter(**overrides)
        self.pin = self.factory.pin(PIN)
        self.pin.drive_high()  # idle: pulled up, the S0 transistor open

    def start(self) -> Bench:
        self.meter.start(self.ctx)
        return self

    def pulses(self, count: int, every_s: float, width_s: float = 0.05) -> None:
        for _ in range(count):
            self.pin.drive_low()
            self.scheduler.advance(width_s)
            self.pin.drive_high()
            self.scheduler.advance(every_s - width_s)

    def totals(self) -> list[object]:
        return self.rec.values(Kind.READING, "house_energy")


def saved(tmp_path: Path) -> float:
    return float(json.loads((tmp_path / "pulse_house_energy.json").read_text())["total"])


def test_each_pulse_adds_one_over_pulses_per_unit_to_the_total(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    bench.pulses(250, every_s=0.5)
    assert bench.meter.total() == 0.25
    bench.scheduler.advance(10)
    assert bench.totals()[-1] == 0.25


def test_the_total_is_posted_at_start_and_then_only_when_it_changed(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    bench.scheduler.advance(60)
    assert bench.totals() == [0.0]


def test_a_reed_contact_bouncing_on_closing_and_opening_counts_once(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    for _ in range(3):  # closing bounce: 1 ms apart
        bench.pin.drive_low()
        bench.scheduler.advance(0.001)
        bench.pin.drive_high()
        bench.scheduler.advance(0.001)
    bench.pin.drive_low()
    bench.scheduler.advance(0.2)
    for _ in range(3):  # opening bounce
        bench.pin.drive_high()
        bench.scheduler.advance(0.001)
        bench.pin.drive_low()
        bench.scheduler.advance(0.001)
    bench.pin.drive_high()
    assert bench.meter.total() == 0.001
    assert bench.meter.stats()["ignored_edges"] == 6


def test_an_s0_meter_at_1000_imp_per_kwh_reports_the_power_from_the_pulse_interval(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    bench.pulses(3, every_s=1.8)  # 3600 s/h / 1.8 s = 2000 pulses/h = 2 kW
    assert bench.meter.rate() == pytest.approx(2000.0)


def test_a_water_meter_reports_litres_per_minute(tmp_path: Path) -> None:
    bench = Bench(tmp_path, meter="water", unit="L", pulses_per_unit=1).start()
    bench.pulses(3, every_s=6.0)  # one litre every 6 s
    assert bench.meter.rate() == pytest.approx(10.0)


def test_the_rate_falls_when_pulses_stop_and_is_zero_after_the_timeout(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    bench.pulses(3, every_s=1.8)
    bench.scheduler.advance(3.6 - 1.8)  # 3.6 s since the last pulse: at most half the power
    assert bench.meter.rate() == pytest.approx(1000.0)
    bench.scheduler.advance(300)
    assert bench.meter.rate() == 0.0


def test_the_total_is_saved_once_it_grew_by_save_every_units(tmp_path: Path) -> None:
    bench = Bench(tmp_path, save_every_units=0.1, save_every_s=86_400).start()
    bench.pulses(99, every_s=0.1)
    bench.scheduler.advance(10)
    assert not (tmp_path / "pulse_house_energy.json").exists()
    bench.pulses(1, every_s=0.1)
    bench.scheduler.advance(10)
    assert saved(tmp_path) == 0.1


def test_the_total_is_saved_every_save_every_s_while_it_grows(tmp_path: Path) -> None:
    bench = Bench(tmp_path, save_every_s=60).start()
    bench.pulses(5, every_s=1)
    bench.scheduler.advance(60)
    assert saved(tmp_path) == 0.005
    assert bench.meter.saves == 1


def test_an_idle_meter_never_writes_the_card(tmp_path: Path) -> None:
    bench = Bench(tmp_path, save_every_s=60).start()
    bench.scheduler.advance(6 * 3600)
    assert bench.meter.saves == 0


def test_the_total_is_saved_at_stop_and_continues_after_a_restart(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    bench.pulses(42, every_s=0.5)
    bench.meter.stop()
    again = Bench(tmp_path).start()
    again.pulses(8, every_s=0.5)
    assert again.meter.total() == 0.05
    assert again.totals()[0] == 0.042


def test_the_total_never_goes_backwards_on_start_below_the_initial_total(tmp_path: Path) -> None:
    bench = Bench(tmp_path, initial_total=100).start()
    bench.pulses(1, every_s=0.5)
    bench.meter.stop()
    assert Bench(tmp_path, initial_total=100).start().meter.total() == 100.001
    assert Bench(tmp_path, initial_total=250.5).start().meter.total() == 250.5


def test_an_unreadable_saved_total_starts_from_the_initial_total(tmp_path: Path) -> None:
    (tmp_path / "pulse_house_energy.json").write_text("{not json")
    assert Bench(tmp_path, initial_total=7).start().meter.total() == 7


def test_a_power_cut_loses_at_most_save_every_units(tmp_path: Path) -> None:
    bench = Bench(tmp_path, save_every_units=0.01, save_every_s=86_400).start()
    bench.pulses(137, every_s=0.2)
    bench.scheduler.advance(10)  # then the power goes: no stop()
    restarted = Bench(tmp_path).start()
    assert 0.137 - restarted.meter.total() <= 0.01


def test_the_hub_corrects_the_total_to_the_meters_reading_and_it_is_saved_at_once(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    bench.pulses(3, every_s=0.5)
    assert bench.meter.correct("house_energy", 12345.6) == 12345.6
    assert saved(tmp_path) == 12345.6
    bench.pulses(1, every_s=0.5)
    assert bench.meter.total() == 12345.601


def test_a_correction_must_be_a_number_not_negative(tmp_path: Path) -> None:
    bench = Bench(tmp_path).start()
    spec = bench.meter.entities()[0]
    assert spec.writable
    assert accepts(spec, -1) is not None
    assert accepts(spec, "lots") is not None
    assert accepts(spec, 12.5) is None
    with pytest.raises(DriverError):
        bench.meter.correct("house_energy", -1)


def test_the_total_follows_home_assistants_energy_dashboard_conventions() -> None:
    total, rate = meter().entities()
    assert (total.device_class, total.unit, total.state_class) == ("energy", "kWh", "total_increasing")
    assert (rate.device_class, rate.unit) == ("power", "W")
    water, flow = meter(meter="water").entities()
    assert (water.device_class, water.unit, flow.unit) == ("water", "m³", "L/min")
    assert meter(meter="gas").entities()[0].device_class == "gas"


def test_a_unit_that_does_not_fit_the_meter_is_refused_at_its_key() -> None:
    with pytest.raises(ValidationError, match="a gas meter counts in m³, not kWh"):
        meter(meter="gas", unit="kWh")
    with pytest.raises(ValidationError, match="pulses_per_unit"):
        meter(pulses_per_unit=0)


def test_a_hub_correction_reaches_the_meter_through_the_dispatcher_and_is_confirmed(tmp_path: Path) -> None:
    from gateway.bus import Bus
    from gateway.dispatcher import Dispatcher

    bench = Bench(tmp_path).start()
    dispatcher = Dispatcher(Bus(100), bench.ctx.events)
    dispatcher.corrections["house_energy"] = bench.meter.correct
    seen = Recorder()
    dispatcher.forward = seen
    command = bench.ctx.events.make(Kind.COMMAND, "house_energy", 500.25)
    dispatcher.process(command)
    confirmed = seen.of(Kind.STATE, "house_energy")
    assert [(e.value, e.cause) for e in confirmed] == [(500.25, command.id)]
    dispatcher.process(bench.ctx.events.make(Kind.COMMAND, "house_energy", -3))
    assert seen.of(Kind.REJECTED, "house_energy")
