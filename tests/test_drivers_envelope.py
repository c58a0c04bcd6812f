"""The safety envelope: pure decisions, then enforced in the dispatcher in virtual time."""

from __future__ import annotations

from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from pydantic import ValidationError

from drivers.actuators import Relay
from drivers.base import DriverContext
from drivers.envelope import Envelope, EnvelopeConfig
from gateway.bus import Bus
from gateway.clock import VirtualClock
from gateway.dispatcher import Dispatcher
from gateway.events import Event, EventFactory, Kind


def env(**limits: Any) -> Envelope:
    return Envelope({"boiler": EnvelopeConfig(**limits)}, {"boiler": False})


def test_an_early_off_is_deferred_to_the_end_of_the_minimum_on_time() -> None:
    e = env(min_on_s=300)
    e.record("boiler", True, now=1000)
    decision = e.decide("boiler", False, now=1100)
    assert (decision.verdict, decision.until) == ("defer", 1300)
    assert "minimum on time 300 s" in decision.reason


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


def test_switches_beyond_the_hourly_limit_are_refused() -> None:
    e = env(max_switches_per_hour=2)
    e.record("boiler", True, now=0)
    e.record("boiler", False, now=10)
    decision = e.decide("boiler", True, now=20)
    assert decision.verdict == "refuse" and "limit 2" in decision.reason
    assert e.decide("boiler", True, now=3601).allowed  # the first switch left the hour


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
        self.relay = Relay(Relay.Config.model_validate(cfg))
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
