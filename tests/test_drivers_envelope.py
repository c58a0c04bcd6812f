"""The safety envelope: pure decisions, then enforced in the dispatcher in virtual time."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from core.clock import VirtualClock
from core.events import Event, EventFactory, Kind
from drivers.actuators import GpioRelayConfig, Relay
from drivers.base import DriverContext
from drivers.envelope import DEFAULT_LIMITS, HOUR, Envelope, EnvelopeConfig
from gateway.app import Gateway
from gateway.bus import Bus
from gateway.config import load_config
from gateway.dispatcher import Dispatcher
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder, write_config


def env(**limits: Any) -> Envelope:
    return Envelope({"boiler": EnvelopeConfig(**limits)}, {"boiler": False})


def test_an_early_on_is_deferred_to_the_end_of_the_minimum_off_time() -> None:
    e = env(min_off_s=120)
    e.record("boiler", True, now=0)
    e.record("boiler", False, now=1000)
    assert e.decide("boiler", True, now=1060).until == 1120
    assert e.decide("boiler", True, now=1120).allowed


def test_asking_for_the_current_value_is_always_allowed() -> None:
    e = env(min_on_s=300, max_switches_per_hour=1)
    e.record("boiler", True, now=1000)
    assert e.decide("boiler", True, now=1001).allowed


def test_switches_beyond_the_hourly_limit_are_deferred_not_refused() -> None:
    e = env(max_switches_per_hour=2)
    e.record("boiler", True, now=0)
    e.record("boiler", False, now=10)
    decision = e.decide("boiler", True, now=20)
    assert decision.verdict == "defer" and "limit 2" in decision.reason
    assert e.decide("boiler", True, now=3600).allowed  # the first switch left the hour


def test_the_switch_limit_never_blocks_the_way_to_the_safe_state() -> None:
    e = env(max_switches_per_hour=1)
    e.record("boiler", True, now=0)
    assert e.decide("boiler", False, now=5).allowed


def test_the_maximum_on_time_gives_a_deadline() -> None:
    e = env(max_on_s=600)
    assert e.max_on_deadline("boiler") is None
    e.record("boiler", True, now=100)
    assert e.max_on_deadline("boiler") == 700


def interlocked(wait: float = 0) -> Envelope:
    cfg = EnvelopeConfig(interlock="motor", interlock_wait_s=wait)
    return Envelope({"up": cfg, "down": cfg})


def test_two_interlocked_outputs_are_never_on_together() -> None:
    e = interlocked()
    e.record("up", True, now=0)
    decision = e.decide("down", True, now=5)
    assert decision.verdict == "refuse" and "up is on" in decision.reason


def test_an_interlocked_output_waits_after_the_other_went_off() -> None:
    e = interlocked(wait=2)
    e.record("up", True, now=0)
    e.record("up", False, now=10)
    assert e.decide("down", True, now=11).until == 12
    assert e.decide("down", True, now=12).allowed


def test_entities_without_limits_are_always_allowed() -> None:
    assert env(min_on_s=10).decide("lamp", True, now=0).allowed


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"min_on_s": 600, "max_on_s": 60}, "shorter than min_on_s"),
        ({"interlock_wait_s": 5}, "needs an interlock group"),
        ({"max_switches_per_hour": 0}, "greater than or equal to 1"),
    ],
)
def test_inconsistent_limits_are_refused(limits: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EnvelopeConfig(**limits)


# -- in the dispatcher -------------------------------------------------------------------------


class House:
    """A dispatcher with one enveloped relay on mock pins, recording what it forwards."""

    def __init__(self, **limits: Any) -> None:
        self.clock = VirtualClock(mono=0)
        self.events = EventFactory(self.clock, boot="t")
        self.seen: list[Event] = []
        cfg = {"id": "boiler", "driver": "gpio.relay", "pin": 22, "envelope": limits}
        self.relay = Relay(GpioRelayConfig.model_validate(cfg))
        self.pins = MockFactory()
        self.relay.start(DriverContext(post=lambda e: None, events=self.events, pin_factory=self.pins))
        self.dispatcher = Dispatcher(Bus(), self.events, actuators={"boiler": self.relay}, forward=self.seen.append,
                                     envelope=Envelope.from_drivers([self.relay]))

    def command(self, value: bool, rule: str = "thermostat") -> None:
        self.dispatcher.process(self.events.make(Kind.COMMAND, "boiler", value, rule=rule))

    def kinds(self) -> list[tuple[str, object]]:
        return [(e.kind.value, e.value) for e in self.seen if e.kind is not Kind.COMMAND]


def test_a_deferred_on_is_rejected_with_a_reason_then_applied_on_time() -> None:
    house = House(min_off_s=300)
    house.command(True)
    house.command(False)
    house.dispatcher.advance(100)
    house.command(True)
    [rejected] = [e for e in house.seen if e.kind is Kind.REJECTED]
    assert rejected.detail is not None and rejected.detail.startswith("deferred 200 s: minimum off time 300 s")
    assert rejected.rule == "thermostat"
    house.dispatcher.advance(199)
    assert house.pins.pin(22).state is False
    house.dispatcher.advance(1)
    assert house.pins.pin(22).state is True
    assert house.kinds() == [("state", True), ("state", False), ("rejected", True), ("state", True)]


def test_a_move_to_the_safe_value_is_never_deferred_by_the_minimum_on_time() -> None:
    house = House(min_on_s=300)
    house.command(True)
    house.dispatcher.advance(10)
    house.command(False)
    assert house.pins.pin(22).state is False
    assert house.kinds() == [("state", True), ("state", False)]


def test_a_newer_command_replaces_a_deferred_one() -> None:
    house = House(min_off_s=300)
    house.command(True)
    house.command(False)
    house.command(True)  # deferred to t=300
    house.command(False)  # the thermostat changed its mind
    house.dispatcher.advance(400)
    assert house.pins.pin(22).state is False


def test_the_envelope_switches_off_at_the_maximum_on_time_and_names_whose_claim_it_ended() -> None:
    house = House(max_on_s=600)
    house.command(True)
    house.dispatcher.advance(600)
    assert house.pins.pin(22).state is False
    forced = [e for e in house.seen if e.kind is Kind.STATE and e.rule == "envelope"]
    assert forced and forced[0].detail is not None
    assert forced[0].detail.startswith("maximum on time reached: released thermostat")


def test_a_command_over_the_switch_budget_never_reaches_the_pin() -> None:
    house = House(max_switches_per_hour=2)
    house.command(True)
    house.command(False)
    house.command(True)
    assert house.pins.pin(22).state is False
    assert house.dispatcher.counters.rejected == 1
    assert house.kinds()[-1] == ("rejected", True)


# -- a move to the safe value is never delayed or refused --------------------------------------


def test_a_move_to_the_safe_value_is_never_delayed_by_the_minimum_on_time() -> None:
    e = env(min_on_s=120)
    e.record("boiler", True, now=1000)
    assert e.decide("boiler", False, now=1010).allowed  # the sensor vanished: off now, not in 110 s


def test_a_move_to_a_safe_on_value_is_never_delayed_by_the_minimum_off_time() -> None:
    e = Envelope({"stair_light": EnvelopeConfig(min_off_s=120)}, {"stair_light": 100.0})
    e.record("stair_light", 0.0, now=1000)
    assert e.decide("stair_light", 100.0, now=1010).allowed


def test_leaving_a_safe_on_value_waits_for_the_minimum_on_time() -> None:
    e = Envelope({"stair_light": EnvelopeConfig(min_on_s=120)}, {"stair_light": 100.0})
    e.record("stair_light", 0.0, now=1000)
    e.record("stair_light", 100.0, now=1010)
    decision = e.decide("stair_light", 0.0, now=1020)
    assert (decision.verdict, decision.until) == ("defer", 1130)


def test_a_move_to_the_safe_value_is_never_refused_by_the_switch_budget() -> None:
    e = env(max_switches_per_hour=2)
    for second in range(0, 40, 10):  # four switches: two beyond the budget were moves to safe
        e.record("boiler", second % 20 == 0, now=second)
    e.record("boiler", True, now=40)
    assert e.decide("boiler", False, now=41).allowed


def test_a_move_to_the_safe_value_is_never_refused_by_an_interlock() -> None:
    cfg = EnvelopeConfig(interlock="attic")
    e = Envelope({"heater": cfg, "vent": cfg}, {"heater": False, "vent": True})
    e.record("vent", False, now=0)
    e.record("heater", True, now=10)
    assert e.decide("vent", True, now=11).allowed  # the vent's safe state is on: it goes there at once


def test_a_move_to_the_safe_value_is_never_delayed_by_an_interlock_wait() -> None:
    cfg = EnvelopeConfig(interlock="attic", interlock_wait_s=60)
    e = Envelope({"heater": cfg, "vent": cfg}, {"heater": False, "vent": True})
    e.record("vent", False, now=0)
    e.record("heater", True, now=10)
    e.record("heater", False, now=20)
    assert e.decide("vent", True, now=21).allowed


def test_on_words_are_read_with_the_gateways_one_definition_of_on() -> None:
    e = env(min_off_s=120)
    e.record("boiler", True, now=0)
    e.record("boiler", False, now=10)
    assert e.decide("boiler", "OFF", now=11).allowed  # "OFF" is off, already the current value
    assert e.decide("boiler", "ON", now=11).verdict == "defer"


# -- the switch budget defers ------------------------------------------------------------------


def test_leaving_safe_beyond_the_hourly_budget_is_deferred_until_the_oldest_switch_leaves_the_hour() -> None:
    e = env(max_switches_per_hour=2)
    e.record("boiler", True, now=100)
    e.record("boiler", False, now=110)
    decision = e.decide("boiler", True, now=120)
    assert (decision.verdict, decision.until) == ("defer", 100 + 3600)
    assert "limit 2" in decision.reason


def test_the_budget_deferral_waits_for_enough_switches_to_leave_the_hour() -> None:
    e = env(max_switches_per_hour=2)
    for second in (100, 110, 120, 130):  # on, off, on, off: the two offs went beyond the budget
        e.record("boiler", second in (100, 120), now=second)
    assert e.decide("boiler", True, now=140).until == 120 + 3600  # two must leave the hour, not one


def test_an_output_still_wanted_on_follows_when_the_hour_allows() -> None:
    house = House(max_switches_per_hour=2)
    house.command(True)
    house.command(False)
    house.command(True)  # beyond the budget: deferred, not refused
    [rejected] = [e for e in house.seen if e.kind is Kind.REJECTED]
    assert rejected.detail is not None and rejected.detail.startswith("deferred 3600 s: switched 2 times")
    house.dispatcher.advance(3599)
    assert house.pins.pin(22).state is False
    house.dispatcher.advance(1)
    assert house.pins.pin(22).state is True


# -- the history survives a restart ------------------------------------------------------------

WALL = 1_767_225_600.0


def persistent(path: Path, clock: VirtualClock, **limits: Any) -> Envelope:
    return Envelope({"boiler": EnvelopeConfig(**limits)}, {"boiler": False}, state_file=path, clock=clock)


def test_a_restarted_envelope_counts_the_minimum_off_time_from_the_previous_process(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    first = VirtualClock(wall=WALL, mono=1000)
    e = persistent(path, first, min_off_s=120)
    e.record("boiler", True, now=1000)
    e.record("boiler", False, now=1030)
    restarted = VirtualClock(wall=WALL + 60, mono=7)  # 30 s off, then a reboot: monotonic starts afresh
    decision = persistent(path, restarted, min_off_s=120).decide("boiler", True, now=7)
    assert (decision.verdict, decision.until) == ("defer", 7 + 90)


def test_an_output_that_was_on_when_the_process_died_counts_its_off_time_from_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    e = persistent(path, VirtualClock(wall=WALL, mono=1000), min_off_s=120)
    e.record("boiler", True, now=1000)
    restarted = VirtualClock(wall=WALL + 500, mono=20)  # the start drove it off at 20
    again = persistent(path, restarted, min_off_s=120)
    assert again.decide("boiler", True, now=20).until == 140
    assert again.decide("boiler", True, now=140).allowed


def test_a_crash_loop_cannot_short_cycle_an_output(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    clock = VirtualClock(wall=WALL, mono=1000)
    switched_on = []
    for _ in range(5):  # each process wants the heater on at once, and dies 5.5 s later
        e = persistent(path, clock, min_off_s=120)
        now = clock.monotonic()
        if e.decide("boiler", True, now=now).allowed:
            e.record("boiler", True, now=now)
            switched_on.append(clock.time())
        clock.advance(5.5)
    assert switched_on == [WALL]  # once, then at least 120 s off after the restart drove it off


def test_the_switch_budget_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    clock = VirtualClock(wall=WALL, mono=1000)
    e = persistent(path, clock, max_switches_per_hour=2)
    e.record("boiler", True, now=1000)
    e.record("boiler", False, now=1010)
    clock.advance(20)
    decision = persistent(path, clock, max_switches_per_hour=2).decide("boiler", True, now=1020)
    assert (decision.verdict, decision.until) == ("defer", 1000 + 3600)


def test_a_corrupt_history_means_no_history_and_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "envelope.json"
    path.write_bytes(b'{"version": 1, "outputs": {"boiler": {"on": tru')  # cut short by a power loss
    with caplog.at_level(logging.WARNING, logger="drivers.envelope"):
        e = persistent(path, VirtualClock(), min_off_s=120)
    assert e.decide("boiler", True, now=1000).allowed
    assert "no switch history" in caplog.text and str(path) in caplog.text


def test_a_missing_history_means_no_history(tmp_path: Path) -> None:
    e = persistent(tmp_path / "nowhere" / "envelope.json", VirtualClock(), min_off_s=120)
    assert e.decide("boiler", True, now=1000).allowed


def test_switch_times_from_the_future_count_as_now(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    e = persistent(path, VirtualClock(wall=WALL, mono=1000), min_off_s=120)
    e.record("boiler", True, now=1000)
    e.record("boiler", False, now=1010)
    behind = VirtualClock(wall=WALL - 86_400, mono=5)  # no RTC: the board woke up a day in the past
    assert persistent(path, behind, min_off_s=120).decide("boiler", True, now=5).until == 125


def test_the_history_is_written_on_a_switch_only(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    e = Envelope({"light": EnvelopeConfig()}, {"light": 0.0}, state_file=path, clock=VirtualClock())
    e.record("light", 0.0, now=1000)
    assert not path.exists()
    e.record("light", 40.0, now=1000)
    written = path.read_text()
    e.record("light", 80.0, now=1001)  # dimmer, still on: no switch, no write
    assert path.read_text() == written
    assert json.loads(written)["outputs"]["light"]["on"] is True


def test_a_history_that_cannot_be_written_is_a_warning_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    e = persistent(blocker / "envelope.json", VirtualClock(), min_off_s=120)
    with caplog.at_level(logging.WARNING, logger="drivers.envelope"):
        e.record("boiler", True, now=1000)
    assert "cannot save the switch history" in caplog.text
    assert e.decide("boiler", False, now=1001).allowed


# -- default limits ----------------------------------------------------------------------------


def relay(**config: Any) -> Relay:
    return Relay(GpioRelayConfig.model_validate({"id": "lamp", "driver": "gpio.relay", "pin": 22, **config}))


def test_a_relay_without_an_envelope_gets_the_default_limits() -> None:
    e = Envelope.from_drivers([relay()])
    assert "lamp" in e
    e.record("lamp", True, now=0)
    e.record("lamp", False, now=0.2)
    assert e.decide("lamp", True, now=0.5).until == 0.2 + DEFAULT_LIMITS.min_off_s


def test_a_relay_without_an_envelope_cannot_be_chattered() -> None:
    e = Envelope.from_drivers([relay()])
    switches = 0
    now = 0.0
    while now < HOUR:
        value = switches % 2 == 0
        if e.decide("lamp", value, now=now).allowed:
            e.record("lamp", value, now=now)
            switches += 1
        now += 0.01  # a hub asking a hundred times a second
    assert switches == DEFAULT_LIMITS.max_switches_per_hour


def test_a_device_envelope_overrides_the_defaults_key_by_key() -> None:
    e = Envelope.from_drivers([relay(envelope={"min_off_s": 0, "max_on_s": 60})])
    e.record("lamp", True, now=0)
    e.record("lamp", False, now=0.2)
    assert e.decide("lamp", True, now=0.2).allowed  # min_off_s = 0 said on purpose
    assert e.max_on_deadline("lamp") is None
    assert DEFAULT_LIMITS.max_switches_per_hour is not None
    for second in range(1, DEFAULT_LIMITS.max_switches_per_hour - 1):  # 240 switches in all, ending off
        e.record("lamp", second % 2 == 1, now=second)
    assert e.decide("lamp", True, now=500).verdict == "defer"  # the default budget still holds


def test_from_drivers_persists_in_the_state_dir(tmp_path: Path) -> None:
    clock = VirtualClock()
    e = Envelope.from_drivers([relay()], state_dir=tmp_path, clock=clock)
    e.record("lamp", True, now=clock.monotonic())
    assert json.loads((tmp_path / "envelope.json").read_text())["outputs"]["lamp"]["since"] == clock.time()


# -- in the gateway ----------------------------------------------------------------------------

HEATER = toml.config(toml.gateway("envelope"), toml.relay("heater", 22, envelope={"min_off_s": 120}))


def test_a_restarted_gateway_keeps_the_heater_off_for_its_minimum_off_time(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, HEATER, rules="version = 1\n"))
    for attempt in range(2):  # the gateway crashes and comes straight back
        pins = MockFactory()
        gateway = Gateway(config, pin_factory=pins, forwarder=RecordingForwarder())
        gateway.start()
        try:
            gateway.dispatcher.drain()
            gateway.dispatcher.process(gateway.events.make(Kind.COMMAND, "heater", True, rule="thermostat"))
            assert pins.pin(22).state is (attempt == 0)
        finally:
            gateway.shutdown()
    assert (tmp_path / "state" / "envelope.json").exists()


# -- what the envelope holds, for `gateway status` and the page -------------------------------


def test_the_snapshot_of_an_output_at_rest_shows_the_time_left_of_its_minimum_off_time() -> None:
    e = env(min_off_s=300, max_switches_per_hour=6)
    e.record("boiler", True, now=0)
    e.record("boiler", False, now=100)
    state = e.snapshot("boiler", now=160)
    assert state is not None
    assert (state.on, state.hold, state.hold_left_s) == (False, "min_off", 240)
    assert (state.switches, state.switch_limit) == (2, 6)
    assert state.describe() == "min off 300 s: 240 s left; 2/6 switches this hour"


def test_the_snapshot_reports_no_minimum_away_from_the_safe_value_but_the_time_left_of_max_on() -> None:
    e = env(min_on_s=60, max_on_s=600)
    e.record("boiler", True, now=0)
    state = e.snapshot("boiler", now=100)
    assert state is not None and state.hold is None and state.max_on_left_s == 500
    assert state.describe() == "max on: 500 s left; 1 switch this hour"


def test_the_snapshot_decides_and_counts_nothing() -> None:
    e = env(min_off_s=300)
    e.record("boiler", True, now=0)
    e.record("boiler", False, now=10)
    e.snapshot("boiler", now=20)
    assert (e.deferred, e.refused) == (0, 0)
    assert e.snapshot("lamp", now=20) is None


def test_the_default_limits_are_what_validating_them_gives() -> None:
    # DEFAULT_LIMITS is constructed without validation (no validator of its own built at import)
    validated = EnvelopeConfig.model_validate(DEFAULT_LIMITS.model_dump(exclude_unset=True))

    assert validated == DEFAULT_LIMITS
    assert validated.model_fields_set == DEFAULT_LIMITS.model_fields_set
