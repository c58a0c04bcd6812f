"""Hub commands: only writable entities, only valid values, always an answer, never a crash."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter

from core.entities import Component, EntitySpec
from core.events import Kind
from core.values import OFF_WORDS, ON_WORDS, is_on
from gateway.mqtt.commands import CommandRejected, decode, validate, validator_for
from tests.conftest import Broker
from tests.mqtt_support import ENTITIES, Harness, Recorder, make_bridge, make_config, recorder, wait_until

LIGHT = validator_for(ENTITIES["hall_light"])


@pytest.fixture
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """A bridge that is never started: commands are handled as paho would hand them over."""
    gateway_id = re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", 1))
    yield harness
    harness.bridge.stop()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(b"ON", True), (b"off", False), (b"true", True), (b"false", False), (b"1", True), (b"0", False),
     (b'{"state": "ON"}', True), (b'{"state": false}', False), (b" On \n", True)],
)
def test_switches_and_lights_take_the_usual_on_off_spellings(payload: bytes, expected: bool) -> None:
    assert validate(LIGHT, decode(payload, 1024)) is expected


@pytest.mark.parametrize("payload", [b"maybe", b"2", b"{\"state\": \"ON\", \"x\": 1}", b"[true]", b"null", b"NaN"])
def test_anything_else_for_a_switch_is_rejected_with_a_reason(payload: bytes) -> None:
    with pytest.raises(CommandRejected, match=r"\w"):
        validate(LIGHT, decode(payload, 1024))


def test_a_dimmable_light_takes_a_brightness_within_its_range_or_on_off() -> None:
    dimmer = validator_for(EntitySpec("dimmer", Component.LIGHT, safe_value=0, minimum=0, maximum=100))
    assert validate(dimmer, decode(b"42", 1024)) == 42
    assert validate(dimmer, decode(b"1", 1024)) == 1  # a number here, not ON
    assert validate(dimmer, decode(b"ON", 1024)) is True
    assert validate(dimmer, decode(b"false", 1024)) is False
    for bad in (b"101", b"-1", b"1e999", b"Infinity", b"abc"):
        with pytest.raises(CommandRejected):
            validate(dimmer, decode(bad, 1024))


def test_a_sensor_takes_no_command_whatever_its_range() -> None:
    sensor = validator_for(EntitySpec("valve", Component.SENSOR, safe_value=0.0, minimum=0, maximum=10))
    for payload in (b" 2.5 ", b"true", b"ON"):
        with pytest.raises(CommandRejected, match="'valve' is a sensor, it cannot be commanded"):
            validate(sensor, decode(payload, 1024))


@pytest.mark.parametrize("word", sorted(ON_WORDS | OFF_WORDS))
def test_a_switch_reads_the_hubs_words_as_the_gateway_defines_them(word: str) -> None:
    switch = validator_for(ENTITIES["heater"])
    assert validate(switch, decode(word.upper().encode(), 1024)) is is_on(word)


def test_a_switch_told_a_number_other_than_1_or_0_says_what_it_takes() -> None:
    with pytest.raises(CommandRejected, match="'heater' is a switch: use true or false, not 50"):
        validate(validator_for(ENTITIES["heater"]), decode(b"50", 1024))


def test_a_payload_over_the_size_limit_is_rejected_unread() -> None:
    with pytest.raises(CommandRejected, match="larger than the 16 allowed"):
        decode(b"ON" + b" " * 100, 16)


def test_an_accepted_command_is_posted_as_a_command_event_and_answered(gw: Harness) -> None:
    command = gw.bridge.handle_command("hall_light", b"ON")
    assert command is not None and gw.posted == [command]
    assert (command.kind, command.entity, command.value) == (Kind.COMMAND, "hall_light", True)
    assert gw.bridge.counters.commands_accepted == 1


@pytest.mark.parametrize(("entity", "reason"), [("living_temp", "not an entity the hub may command"),
                                                ("no_such_thing", "not an entity the hub may command"),
                                                ("hall_light", "expected ON or OFF")])
def test_a_rejected_command_posts_a_rejection_with_the_reason(gw: Harness, entity: str, reason: str) -> None:
    assert gw.bridge.handle_command(entity, b"maybe") is None
    [rejection] = gw.posted
    assert rejection.kind is Kind.REJECTED and reason in (rejection.detail or "")
    assert gw.bridge.counters.commands_rejected == 1


def test_a_rejected_command_never_echoes_its_payload_which_may_hold_a_code(gw: Harness) -> None:
    def wrong_code(raw: object) -> str:
        raise ValueError("wrong code")

    gw.bridge.register_command("house_alarm", wrong_code)
    assert gw.bridge.handle_command("house_alarm", b'{"action": "DISARM", "code": "9999"}') is None
    [rejection] = gw.posted
    assert "9999" not in repr(rejection)


def test_other_code_can_register_a_command_target_with_its_own_validator(gw: Harness) -> None:
    gw.bridge.register_command("thermostat_setpoint", TypeAdapter(Annotated[float, Field(ge=5, le=30)]).validate_python)
    gw.bridge.register_command("thermostat_mode", TypeAdapter(Literal["heat", "off"]).validate_python)
    assert gw.bridge.handle_command("thermostat_setpoint", b"21.5") is not None
    assert gw.bridge.handle_command("thermostat_mode", b"heat") is not None
    assert gw.bridge.handle_command("thermostat_setpoint", b"35") is None
    assert gw.bridge.handle_command("thermostat_mode", b"warm") is None
    assert [e.value for e in gw.posted if e.kind is Kind.COMMAND] == [21.5, "heat"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entity=st.sampled_from([*ENTITIES, "thermostat", "", "a/b", "x" * 300]), payload=st.binary(max_size=2048))
def test_fuzzed_payloads_are_only_ever_accepted_or_rejected(gw: Harness, entity: str, payload: bytes) -> None:
    gw.posted.clear()
    command = gw.bridge.handle_command(entity, payload)
    [event] = gw.posted
    if command is None:
        assert event.kind is Kind.REJECTED
    else:
        assert event.kind is Kind.COMMAND and isinstance(event.value, bool)


@settings(max_examples=300, deadline=None)
@given(raw=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                    max_size=3), max_leaves=8))
def test_fuzzed_json_values_are_only_ever_accepted_or_rejected(raw: object) -> None:
    try:
        value = validate(LIGHT, raw)
    except CommandRejected:
        return
    assert isinstance(value, bool)


def test_over_the_broker_a_command_is_answered_on_its_result_topic(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("cmd-live", tmp_path / "state", broker.port))
    with recorder(broker.host, broker.port, "gateway/cmd-live/result/#") as hub:
        harness.bridge.start()
        wait_until(lambda: harness.bridge.connected, what="connection")
        wait_until(lambda: _subscribed(hub, "gateway/cmd-live/set/hall_light", harness), what="subscription")
        hub.publish("gateway/cmd-live/set/heater", "banana")
        answers = hub.wait_for("gateway/cmd-live/result/heater", count=1)
        harness.bridge.stop()
    statuses = [m.json()["status"] for m in answers]
    assert "rejected" in statuses and "expected ON or OFF" in answers[-1].json()["reason"]


def _subscribed(hub: Recorder, topic: str, harness: Harness) -> bool:
    """Send a probe until the bridge has seen one (its subscription is asynchronous)."""
    hub.publish(topic, "OFF")
    return harness.bridge.counters.commands_accepted > 0


def test_the_outcome_of_an_accepted_command_follows_the_actuators_confirmation(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("cmd-outcome", tmp_path / "state", broker.port))
    with recorder(broker.host, broker.port, "gateway/cmd-outcome/result/#", "gateway/cmd-outcome/state/#") as hub:
        harness.bridge.start()
        command = harness.bridge.handle_command("hall_light", b"ON")
        assert command is not None
        confirmed = harness.events.make(Kind.STATE, "hall_light", True, cause=command.id)
        harness.bridge.forward(command)
        harness.bridge.forward(confirmed)
        results = hub.wait_for("gateway/cmd-outcome/result/hall_light", count=2)
        state = hub.wait_for("gateway/cmd-outcome/state/hall_light")
        harness.bridge.stop()
    assert [(r.json()["status"], r.json()["command"]) for r in results] == [("accepted", command.id),
                                                                           ("done", command.id)]
    assert state[-1].json() is True


def test_a_retained_command_left_on_the_broker_is_not_replayed_on_start(broker: Broker, tmp_path: Path) -> None:
    with recorder(broker.host, broker.port, "gateway/cmd-retained/#") as hub:
        hub.publish("gateway/cmd-retained/set/siren", "ON", retain=True)
        harness = make_bridge(make_config("cmd-retained", tmp_path / "state", broker.port))
        harness.bridge.start()
        wait_until(lambda: harness.bridge.counters.commands_retained_ignored == 1, what="retained command seen")
        harness.bridge.stop()
        hub.publish("gateway/cmd-retained/set/siren", "", retain=True)  # clean the broker for later tests
    assert not [e for e in harness.posted if e.kind is Kind.COMMAND]
    assert harness.bridge.counters.commands_accepted == 0


def test_a_real_paho_message_with_any_topic_goes_through_the_guarded_callback(gw: Harness) -> None:
    message = mqtt.MQTTMessage(topic=f"{gw.base}/set/heater".encode())
    message.payload = b"\xff\xfe"
    gw.bridge.inlet.on_message(gw.bridge.link.client, None, message)
    assert gw.posted[0].kind is Kind.REJECTED and "UTF-8" in (gw.posted[0].detail or "")


def test_a_controller_without_a_registered_validator_takes_no_commands() -> None:
    thermostat = validator_for(EntitySpec("thermostat", Component.CLIMATE, safe_value="heat"))
    with pytest.raises(CommandRejected, match="registers a validator"):
        validate(thermostat, decode(b"ON", 1024))
