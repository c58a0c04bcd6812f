"""Every hub command gets exactly one final outcome (issue 12): ``done``, ``failed`` or ``rejected``.

The inlet (gateway/mqtt/inlet.py) is wired to a real house in a test tube (tests/rules_kit.py: the
dispatcher, the arbiter with a safety envelope, the rules engine, a thermostat and an alarm, echo
actuators, virtual time) exactly as the bridge is in the gateway: outcomes from the dispatcher's
forwarded events, the end of each bus event from :attr:`Dispatcher.settled`. The results are read
where the publisher takes them from, so no broker is needed to judge them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from core.events import Event, Kind
from drivers.envelope import Envelope, EnvelopeConfig
from gateway.mqtt.backlog import OfflineBacklog
from gateway.mqtt.health import BridgeCounters
from gateway.mqtt.inlet import MAX_TRACKED_COMMANDS, TRACK_TIMEOUT, CommandInlet
from gateway.mqtt.topics import Topics
from rules.codes import hash_code
from tests.rules_kit import DEMO_ENTITIES, House, house, living_thermostat

FINAL = {"done", "failed", "rejected"}
ALARM = f"""
[[alarms]]
id = "house"
code_hash = "{hash_code("1234", n=2**10)}"
exit_delay = "30s"
siren = "siren"
[alarms.sensors]
armed_away = ["front_door"]
"""
MIN_OFF = 60.0


class Wired:
    """A house with the hub's inlet wired in as the gateway wires the bridge."""

    def __init__(self, tmp_path: Path, rules: str = living_thermostat() + ALARM) -> None:
        envelope = Envelope({"hall_light": EnvelopeConfig(min_off_s=MIN_OFF)}, {"hall_light": False})
        self.house: House = house(tmp_path, rules, envelope=envelope)
        self.counters = BridgeCounters()
        topics = Topics("gateway/t")
        self.inlet = CommandInlet(
            topics, DEMO_ENTITIES, OfflineBacklog(topics, self.counters, mqtt5=True), self.counters,
            max_bytes=1024, post=self.house.dispatcher.bus.post, events=self.house.events, wake=lambda: None,
            rate=1e9, burst=10**9,
        )
        self.inlet.replace(DEMO_ENTITIES, self.house.validators)
        self.house.dispatcher.settled.append(self.inlet.settle)
        forward: Callable[[Event], None] = self.house.dispatcher.forward

        def observe(event: Event) -> None:
            forward(event)
            if event.cause is not None and event.kind in (Kind.STATE, Kind.REJECTED):
                self.inlet.outcome(event)

        self.house.dispatcher.forward = observe
        self.answers: list[dict[str, Any]] = []

    def send(self, entity: str, payload: str) -> Event | None:
        """One hub command, processed to the end; returns the accepted command, None if rejected."""
        command = self.inlet.handle(entity, payload.encode())
        self.house.dispatcher.drain()
        self.collect()
        return command

    def advance(self, seconds: float) -> None:
        self.house.advance(seconds)
        self.inlet._expire()  # as the publisher does before it sends
        self.collect()

    def collect(self) -> None:
        while self.inlet.results_waiting:
            _, payload, _ = self.inlet._results.popleft()
            self.answers.append(json.loads(payload))

    def finals(self, command_id: str) -> list[dict[str, Any]]:
        return [a for a in self.answers if a.get("command") == command_id and a["status"] in FINAL]


@pytest.fixture
def wired(tmp_path: Path) -> Wired:
    return Wired(tmp_path)


def test_a_thermostat_told_heat_while_already_heating_is_answered_done_at_once(wired: Wired) -> None:
    assert wired.house.value("living") == "heat"
    command = wired.send("living", "heat")
    assert command is not None
    assert [(f["status"], f["value"]) for f in wired.finals(command.id)] == [("done", "heat")]
    assert wired.inlet.tracked == 0


def test_a_command_the_dispatcher_passes_without_an_outcome_is_answered_done_at_once(wired: Wired) -> None:
    wired.inlet.register("guest_mode", lambda raw: raw == "ON")  # nothing in the house reacts to it
    command = wired.send("guest_mode", "ON")
    assert command is not None
    [final] = wired.finals(command.id)
    assert final["status"] == "done"
    assert final["reason"] == "nothing to change: already on"
    assert wired.inlet.tracked == 0


def test_a_setpoint_already_in_force_is_answered_done_at_once(wired: Wired) -> None:
    command = wired.send("living", "20")
    assert command is not None
    assert [f["status"] for f in wired.finals(command.id)] == ["done"]


def test_a_light_told_what_it_already_is_is_answered_done(wired: Wired) -> None:
    command = wired.send("hall_light", "OFF")
    assert command is not None
    assert [(f["status"], f["value"]) for f in wired.finals(command.id)] == [("done", False)]


def test_a_deferred_command_superseded_by_a_later_one_is_answered_failed(wired: Wired) -> None:
    wired.send("hall_light", "ON")
    wired.send("hall_light", "OFF")  # the light is now in its minimum off time
    deferred = wired.send("hall_light", "ON")
    assert deferred is not None
    assert [a["status"] for a in wired.answers if a.get("command") == deferred.id] == ["accepted", "deferred"]
    later = wired.send("hall_light", "OFF")
    assert later is not None
    [final] = wired.finals(deferred.id)
    assert final["status"] == "failed"
    assert final["reason"].startswith("superseded")
    assert [f["status"] for f in wired.finals(later.id)] == ["done"]
    wired.advance(MIN_OFF * 2)
    assert len(wired.finals(deferred.id)) == 1


def test_a_deferred_command_is_answered_done_when_its_deferral_ends(wired: Wired) -> None:
    wired.send("hall_light", "ON")
    wired.send("hall_light", "OFF")
    deferred = wired.send("hall_light", "ON")
    assert deferred is not None and wired.finals(deferred.id) == []
    wired.advance(MIN_OFF)
    assert [(f["status"], f["value"]) for f in wired.finals(deferred.id)] == [("done", True)]


def test_a_deferred_command_evicted_from_tracking_is_answered_failed(wired: Wired) -> None:
    inlet = wired.inlet
    entities = [f"valve_{n}" for n in range(MAX_TRACKED_COMMANDS + 1)]
    for entity in entities:
        inlet.register(entity, lambda raw: True)
    commands = []
    for entity in entities:
        command = inlet.handle(entity, b"ON")
        assert command is not None
        commands.append(command)
        inlet.outcome(wired.house.events.make(Kind.REJECTED, command.entity, True, cause=command.id,
                                              detail="deferred 60 s: minimum off time"))
    wired.collect()
    first = commands[0]
    [final] = wired.finals(first.id)
    assert final["status"] == "failed" and final["reason"].startswith("not tracked")


def test_final_answers_are_never_shed_while_accepted_ones_can_be(wired: Wired) -> None:
    inlet = wired.inlet
    ids = []
    for _ in range(MAX_TRACKED_COMMANDS):
        command = inlet.handle("living", b"heat")  # not processed: the dispatcher is not drained
        assert command is not None
        ids.append(command.id)
    for _ in range(3):  # 3,000 rejections at once, more than the results queue holds
        for _ in range(MAX_TRACKED_COMMANDS):
            inlet.handle("living", b"boil")
    wired.house.dispatcher.drain()
    wired.collect()
    assert all(len(wired.finals(command_id)) == 1 for command_id in ids)
    assert sum(a["status"] == "rejected" for a in wired.answers) == 3 * MAX_TRACKED_COMMANDS


# -- the property: any sequence of commands, each exactly one final outcome ---------------------------

COMMANDS = st.sampled_from([
    ("living", "heat"), ("living", "off"), ("living", "21.5"), ("living", "20"), ("living", "away"),
    ("living", "99"), ("living", "boil"),
    ("heater", "ON"),  # owned by the thermostat: refused at the edge
    ("hall_light", "ON"), ("hall_light", "OFF"), ("hall_light", "maybe"), ("hall_light", ""),
    ("siren", "ON"),  # owned by the alarm
    ("house", json.dumps({"action": "ARM_AWAY", "code": "1234"})),
    ("house", json.dumps({"action": "DISARM", "code": "1234"})),
    ("house", json.dumps({"action": "DISARM", "code": "0000"})),
    ("front_door", "ON"),  # a sensor: not commandable
    ("nowhere", "ON"),
])


class EveryCommandAnsweredOnce(RuleBasedStateMachine):
    """Random histories of hub commands, readings and time; after each step every command has at
    most one final outcome, and every one not deferred has exactly one."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Event | None] = []
        self.rejected_at_edge = 0

    @initialize()
    def build(self) -> None:
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.wired = Wired(Path(self.tmp.name))

    def teardown(self) -> None:
        if hasattr(self, "wired"):
            self.wired.advance(TRACK_TIMEOUT + MIN_OFF * 2)
            for command in self.sent:
                if command is not None:
                    assert len(self.wired.finals(command.id)) == 1, command
            self.tmp.cleanup()

    @rule(command=COMMANDS)
    def hub_command(self, command: tuple[str, str]) -> None:
        before = len(self.wired.answers)
        accepted = self.wired.send(*command)
        self.sent.append(accepted)
        if accepted is None:
            self.rejected_at_edge += 1
            statuses = [a["status"] for a in self.wired.answers[before:]]
            assert statuses.count("rejected") >= 1

    @rule(temperature=st.floats(min_value=10, max_value=30, allow_nan=False))
    def reading(self, temperature: float) -> None:
        self.wired.house.set("living_temperature", round(temperature, 1), "°C")
        self.wired.collect()

    @rule(opened=st.booleans())
    def door(self, opened: bool) -> None:
        self.wired.house.set("front_door", opened)
        self.wired.collect()

    @rule(seconds=st.sampled_from([1.0, 10.0, 31.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.wired.advance(seconds)

    @invariant()
    def each_command_has_at_most_one_final_and_none_is_left_waiting(self) -> None:
        if not hasattr(self, "wired"):
            return
        finals = Counter(a["command"] for a in self.wired.answers if a["status"] in FINAL)
        assert max(finals.values(), default=0) <= 1
        deferred = {a["command"] for a in self.wired.answers if a["status"] == "deferred"}
        for command in self.sent:
            if command is not None:
                assert finals[command.id] == 1 or command.id in deferred
        assert self.wired.inlet.tracked == 0


EveryCommandAnsweredOnce.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_every_command_gets_exactly_one_final_outcome = EveryCommandAnsweredOnce.TestCase
