"""Safety invariants, checked over random histories of a house in virtual time (hypothesis, stateful).

The house: a thermostat on the heater (with a hub override allowed), an alarm
with a siren, a motion light and an alarm light on the same hall light, and a
safety envelope on the heater and the siren. Hypothesis interleaves readings,
sensor silence and unavailability, hub commands (to owned and free outputs),
rule triggers, arming and disarming, reloads, restarts and the passing of
time, and after every step checks what must always hold:

* the state the gateway reports for each output equals its pin;
* the heater is off within ``stale_after`` of its sensor going silent (at once
  when it becomes unavailable), unless a hub override claim holds it;
* no output stays on beyond its ``max_on_s``;
* a move to the safe value is applied at once: if the claim in force asks for
  safe, the pin is safe;
* the thermostat reports ``heating`` exactly while the heater relay is on;
* the siren sounds only while the alarm is triggered, never beyond ``siren_time``;
* no output leaves its safe value faster than its envelope allows.

``SAFETY_PROFILE=long pytest tests/test_safety_invariants.py`` runs a longer search by hand.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from core.events import Kind, Value
from core.values import is_on
from drivers.envelope import Envelope, EnvelopeConfig
from gateway.simulate import EchoActuator
from rules.loader import RuleSet, load_rules
from tests.rules_kit import ALARM_LIGHT, DEMO_ENTITIES, HEADER, MOTION_LIGHT, House, living_thermostat

settings.register_profile("ci", max_examples=500, stateful_step_count=60, deadline=None, derandomize=True,
                          database=None)
settings.register_profile("long", max_examples=2000, stateful_step_count=80, deadline=None)

STALE_AFTER = 180.0
SIREN_TIME = 180.0
LIMITS = {
    "heater": EnvelopeConfig(min_off_s=60, max_on_s=600, max_switches_per_hour=3),
    "siren": EnvelopeConfig(max_on_s=120),
}
RULES = HEADER + living_thermostat(stale_after=f"{STALE_AFTER:g}s", override="15m") + f"""
[[alarms]]
id = "house_alarm"
exit_delay = "0s"
entry_delay = "20s"
siren = "siren"
siren_time = "{SIREN_TIME:g}s"
[alarms.sensors]
armed_away = ["front_door"]

""" + MOTION_LIGHT + ALARM_LIGHT
_RULES_DIR = Path(tempfile.mkdtemp(prefix="safety-rules-"))
(_RULES_DIR / "house.toml").write_text(RULES)
RULESET: RuleSet = load_rules(_RULES_DIR, DEMO_ENTITIES)
TICK = 1e-6
WALL_START = 1_767_225_600.0


class SafeHouse(RuleBasedStateMachine):
    """Times are on one timeline across restarts (each process has its own monotonic clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.state_dir = Path(tempfile.mkdtemp(prefix="safety-state-"))
        self.past: dict[str, list[tuple[float, Value]]] = {entity: [] for entity in LIMITS}
        """Switches of earlier processes, on the timeline."""
        self.base = 0.0
        self.house = self._build(WALL_START, 1000.0)
        self.stale_from = -math.inf
        """The instant the heater must be off by (unless overridden): silence or unavailability."""
        self.triggered_at: float | None = None

    def _build(self, wall: float, mono: float) -> House:
        """A gateway process; the monotonic clock goes on from the last one's (the same boot)."""
        house = House(DEMO_ENTITIES, RULESET, start=wall, mono=mono, state_dir=self.state_dir)
        house.dispatcher.outputs.envelope = Envelope(LIMITS, {"heater": False, "siren": False},
                                                     state_file=self.state_dir / "envelope.json", clock=house.clock)
        self.origin = house.clock.monotonic()
        house.start()
        return house

    def teardown(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)

    @property
    def now(self) -> float:
        return self.timeline(self.house.clock.monotonic())

    def timeline(self, mono: float) -> float:
        return self.base + mono - self.origin

    def pin(self, entity: str) -> EchoActuator:
        actuator = self.house.dispatcher.actuators[entity]
        assert isinstance(actuator, EchoActuator)
        return actuator

    def history(self, entity: str) -> list[tuple[float, Value]]:
        """Every switch of ``entity`` on the timeline, earlier processes included."""
        return self.past[entity] + [(self.timeline(t), v) for t, v in self.pin(entity).history]

    @initialize(value=st.floats(5, 30))
    def first_reading(self, value: float) -> None:
        self.reading(value)

    # -- what happens in the house -------------------------------------------------------------------

    @rule(value=st.floats(5, 30))
    def reading(self, value: float) -> None:
        self.house.set("living_temperature", round(value, 1))
        self.stale_from = self.now + STALE_AFTER

    @rule()
    def sensor_unavailable(self) -> None:
        self.house.post("living_temperature", False, Kind.AVAILABILITY)
        self.stale_from = min(self.stale_from, self.now)

    @rule(seconds=st.sampled_from([1, 5, 10, 20, 30, 59, 60, 61, 119, 120, 179, 181, 300, 600, 1800, 3600]))
    def time_passes(self, seconds: float) -> None:
        self.house.advance(seconds)

    @rule(entity=st.sampled_from(["heater", "siren", "hall_light"]), on=st.booleans())
    def hub_command(self, entity: str, on: bool) -> None:
        self.house.command(entity, on)

    @rule(mode=st.sampled_from(["heat", "off"]))
    def hub_thermostat_mode(self, mode: str) -> None:
        self.house.command("living", mode)

    @rule(on=st.booleans())
    def motion(self, on: bool) -> None:
        self.house.set("hall_motion", on)

    @rule(open_=st.booleans())
    def door(self, open_: bool) -> None:
        self.house.set("front_door", open_)

    @rule(action=st.sampled_from(["arm_away", "disarm"]))
    def alarm(self, action: str) -> None:
        self.house.command("house_alarm", action)

    @rule()
    def reload(self) -> None:
        self.house.engine.replace(RULESET)
        self.house.dispatcher.drain()

    @rule(graceful=st.booleans())
    def restart(self, graceful: bool) -> None:
        """A stop (state saved) or a crash (only what was already written survives); the outputs start safe."""
        if graceful:
            self.house.engine.stop()
        now = self.now
        for entity in LIMITS:
            self.past[entity] = self.history(entity)
            if self.pin(entity).value is not False:
                self.past[entity].append((now, False))  # the new process drives it safe at start
        self.base = now
        self.house = self._build(self.house.clock.time(), self.house.clock.monotonic())

    # -- what must always hold -----------------------------------------------------------------------

    @invariant()
    def reported_state_equals_the_pin(self) -> None:
        for entity in self.house.dispatcher.outputs.entities:
            assert self.house.value(entity) == self.pin(entity).value, entity

    @invariant()
    def heater_off_once_the_sensor_is_silent_unless_overridden(self) -> None:
        overridden = self.house.dispatcher.outputs.claim_of("heater", "hub") is not None
        if self.now > self.stale_from + TICK and not overridden:
            assert self.pin("heater").value is False

    @invariant()
    def nothing_stays_on_beyond_its_maximum_on_time(self) -> None:
        for entity, limits in LIMITS.items():
            history = self.history(entity)
            if history and is_on(history[-1][1]) and limits.max_on_s is not None:
                assert self.now - history[-1][0] <= limits.max_on_s + TICK, entity

    @invariant()
    def a_move_to_the_safe_value_is_applied_at_once(self) -> None:
        outputs = self.house.dispatcher.outputs
        for entity in outputs.entities:
            claim = outputs.in_force(entity)
            default = self.house.all_entities[entity].safe_value
            if claim is None or is_on(claim.value) == is_on(default):
                assert is_on(self.pin(entity).value) == is_on(default), entity

    @invariant()
    def the_thermostat_reports_heating_exactly_while_the_relay_is_on(self) -> None:
        if self.house.value("living_action") is not None:
            assert (self.house.value("living_action") == "heating") == (self.pin("heater").value is True)

    @invariant()
    def the_siren_sounds_only_while_triggered_and_never_beyond_siren_time(self) -> None:
        state = self.house.value("house_alarm")
        if state == "triggered" and self.triggered_at is None:
            self.triggered_at = self.now
        elif state != "triggered":
            self.triggered_at = None
        if self.pin("siren").value is True:
            assert state == "triggered"
            assert self.triggered_at is not None and self.now - self.triggered_at <= SIREN_TIME + TICK

    @invariant()
    def no_output_leaves_its_safe_value_faster_than_its_envelope_allows(self) -> None:
        for entity, limits in LIMITS.items():
            history = self.history(entity)
            if not history or not is_on(history[-1][1]):
                continue
            at = history[-1][0]
            earlier = [t for t, _ in history[:-1]]
            if earlier:
                assert at - earlier[-1] >= limits.min_off_s - TICK, entity
            if limits.max_switches_per_hour is not None:
                assert len([t for t in earlier if t > at - 3600]) < limits.max_switches_per_hour, entity


SafeHouse.TestCase.settings = settings.get_profile(os.environ.get("SAFETY_PROFILE", "ci"))
test_safety_invariants = SafeHouse.TestCase
