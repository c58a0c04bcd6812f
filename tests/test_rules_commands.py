"""Edge validators the MQTT bridge registers for thermostats and alarms."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clock import VirtualClock
from rules import model as m
from rules.codes import hash_code
from rules.commands import AlarmCommandValidator, thermostat_validator

THERMO = m.Thermostat(id="living", sensor="t", heater="heater", min_setpoint=10, max_setpoint=25)
ALARM = m.Alarm(id="house", code_hash=hash_code("1234", n=2**10), code_arm_required=False)


@pytest.mark.parametrize(("raw", "value"), [(21, 21.0), ("21.5", 21.5), (" HEAT ", "heat"), ("away", "away")])
def test_thermostat_accepts(raw: object, value: object) -> None:
    assert thermostat_validator(THERMO)(raw) == value


@pytest.mark.parametrize("raw", [30, "cool", True, None, float("nan"), {"x": 1}])
def test_thermostat_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        thermostat_validator(THERMO)(raw)


def test_alarm_returns_the_action_only() -> None:
    validate = AlarmCommandValidator(ALARM, VirtualClock())
    assert validate({"action": "DISARM", "code": "1234"}) == "disarm"
    assert validate("ARM_AWAY") == "arm_away"  # code_arm_required = false


def test_alarm_lockout_runs_on_the_injected_clock() -> None:
    clock = VirtualClock()
    validate = AlarmCommandValidator(ALARM, clock)
    for _ in range(5):
        with pytest.raises(ValueError, match="wrong code"):
            validate({"action": "disarm", "code": "0000"})
    with pytest.raises(ValueError, match="locked for 60s"):
        validate({"action": "disarm", "code": "1234"})
    clock.advance(60)
    assert validate({"action": "disarm", "code": "1234"}) == "disarm"


@pytest.mark.parametrize("raw", ["dance", 3, ["disarm"], {"action": "open_sesame", "code": "1234"}])
def test_alarm_rejects_what_is_not_a_command(raw: object) -> None:
    with pytest.raises(ValueError, match="expected arm_home"):
        AlarmCommandValidator(ALARM, VirtualClock())(raw)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["action", "code", "x"]),
                                                                      children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(raw=JSONISH)
def test_validators_return_a_value_or_a_reason(raw: object) -> None:
    for validate in (thermostat_validator(THERMO), AlarmCommandValidator(ALARM, VirtualClock())):
        try:
            value = validate(raw)
        except ValueError as exc:
            assert str(exc)
        else:
            assert isinstance(value, str | float)
