"""Edge validators the MQTT bridge registers for thermostats and alarms."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import VirtualClock
from gateway.app import Gateway
from gateway.config import load_config
from rules import model as m
from rules.codes import hash_code
from rules.commands import (
    LOCKOUT_FILE,
    AlarmCommandValidator,
    CodeGuard,
    Validator,
    command_validators,
    thermostat_validator,
)
from tests.helpers import write_config
from tests.rules_kit import ruleset

THERMO = m.Thermostat(id="living", sensor="t", heater="heater", min_setpoint=10, max_setpoint=25)
CODE_HASH = hash_code("1234", n=2**10)  # a light hash keeps the tests fast
ALARM = m.Alarm(id="house", code_hash=CODE_HASH, code_arm_required=False)
WRONG = "open-sesame"


@pytest.mark.parametrize(("raw", "value"), [(21, 21.0), ("21.5", 21.5), (" HEAT ", "heat"), ("away", "away")])
def test_a_thermostat_accepts_a_setpoint_as_number_or_text_and_a_mode_in_any_case(raw: object, value: object) -> None:
    assert thermostat_validator(THERMO)(raw) == value


@pytest.mark.parametrize("raw", [30, "cool", True, None, float("nan"), {"x": 1}])
def test_a_thermostat_rejects_setpoints_out_of_range_unknown_modes_and_other_types(raw: object) -> None:
    with pytest.raises(ValueError):
        thermostat_validator(THERMO)(raw)


def test_alarm_returns_the_action_only() -> None:
    validate = AlarmCommandValidator(ALARM, CodeGuard(VirtualClock()))
    assert validate({"action": "DISARM", "code": "1234"}) == "disarm"
    assert validate("ARM_AWAY") == "arm_away"  # code_arm_required = false


def test_alarm_lockout_runs_on_the_injected_clock() -> None:
    clock = VirtualClock()
    validate = AlarmCommandValidator(ALARM, CodeGuard(clock))
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
        AlarmCommandValidator(ALARM, CodeGuard(VirtualClock()))(raw)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["action", "code", "x"]),
                                                                      children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(raw=JSONISH)
def test_validators_return_a_value_or_a_reason(raw: object) -> None:
    for validate in (thermostat_validator(THERMO), AlarmCommandValidator(ALARM, CodeGuard(VirtualClock()))):
        try:
            value = validate(raw)
        except ValueError as exc:
            assert str(exc)
        else:
            assert isinstance(value, str | float)


# -- wrong-code lockout: escalating, kept across reloads and restarts --------------------------


def wrong(validate: Validator, times: int = 5) -> None:
    for _ in range(times):
        with pytest.raises(ValueError, match="wrong code"):
            validate({"action": "disarm", "code": WRONG})


def refused(validate: Validator) -> str:
    with pytest.raises(ValueError, match="locked") as info:
        validate({"action": "disarm", "code": "1234"})
    return str(info.value)


def accepted(validate: Validator) -> bool:
    return validate({"action": "disarm", "code": "1234"}) == "disarm"


def test_five_wrong_codes_lock_out_even_the_right_code() -> None:
    validate = AlarmCommandValidator(ALARM, CodeGuard(VirtualClock()))
    wrong(validate, 4)
    assert accepted(validate)  # four wrong codes then the right one: no lockout
    wrong(validate, 5)
    assert refused(validate) == "locked for 60s after wrong codes"


def test_each_further_lockout_lasts_twice_as_long() -> None:
    clock = VirtualClock()
    validate = AlarmCommandValidator(ALARM, CodeGuard(clock))
    wrong(validate)
    clock.advance(60)
    wrong(validate)
    assert refused(validate) == "locked for 120s after wrong codes"
    clock.advance(119)
    refused(validate)
    clock.advance(1)
    wrong(validate)
    assert refused(validate) == "locked for 240s after wrong codes"


def test_the_doubling_stops_at_max_lockout() -> None:
    clock = VirtualClock()
    validate = AlarmCommandValidator(ALARM.model_copy(update={"max_lockout": 200.0}), CodeGuard(clock))
    lengths = []
    for _ in range(4):
        wrong(validate)
        lengths.append(refused(validate))
        clock.advance(1000)
    assert lengths == [f"locked for {s}s after wrong codes" for s in (60, 120, 200, 200)]


def test_a_correct_code_after_the_lockout_starts_the_count_afresh() -> None:
    clock = VirtualClock()
    validate = AlarmCommandValidator(ALARM, CodeGuard(clock))
    wrong(validate)
    clock.advance(60)
    assert accepted(validate)
    wrong(validate, 4)
    assert accepted(validate)  # the four before did not add to an old count
    wrong(validate)
    assert refused(validate) == "locked for 60s after wrong codes"  # not 120: the escalation was reset


def test_a_reload_keeps_the_lockout(tmp_path: Path) -> None:
    clock = VirtualClock()
    guard = CodeGuard(clock)
    rules = ruleset(tmp_path, ALARM_RULES)
    wrong(command_validators(rules, clock, guard)["house"])
    reloaded = command_validators(ruleset(tmp_path, ALARM_RULES), clock, guard)["house"]
    assert refused(reloaded) == "locked for 60s after wrong codes"


def test_a_reload_keeps_the_count_of_wrong_codes(tmp_path: Path) -> None:
    clock = VirtualClock()
    guard = CodeGuard(clock)
    wrong(command_validators(ruleset(tmp_path, ALARM_RULES), clock, guard)["house"], 3)
    reloaded = command_validators(ruleset(tmp_path, ALARM_RULES), clock, guard)["house"]
    wrong(reloaded, 2)
    refused(reloaded)


def restarted(path: Path, before: VirtualClock, *, after: float) -> tuple[VirtualClock, Validator]:
    """A new process ``after`` seconds of wall-clock time later: a fresh monotonic clock, the same state file."""
    clock = VirtualClock(wall=before.time() + after, mono=5.0)
    return clock, AlarmCommandValidator(ALARM, CodeGuard(clock, path))


def test_a_restart_keeps_the_rest_of_the_lockout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)  # another boot: measured on the wall clock
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    wrong(AlarmCommandValidator(ALARM, CodeGuard(clock, path)))
    clock, validate = restarted(path, clock, after=10)
    assert refused(validate) == "locked for 50s after wrong codes"
    clock.advance(50)
    assert accepted(validate)


def test_a_restart_keeps_the_escalation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    wrong(AlarmCommandValidator(ALARM, CodeGuard(clock, path)))
    clock, validate = restarted(path, clock, after=3600)
    wrong(validate)
    assert refused(validate) == "locked for 120s after wrong codes"


def test_a_restart_keeps_wrong_codes_short_of_a_lockout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    wrong(AlarmCommandValidator(ALARM, CodeGuard(clock, path)), 4)
    _, validate = restarted(path, clock, after=10)
    wrong(validate, 1)
    refused(validate)


def test_a_wall_clock_stepped_back_never_lengthens_a_lockout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    wrong(AlarmCommandValidator(ALARM, CodeGuard(clock, path)))
    clock, validate = restarted(path, clock, after=-86400)  # a board without a clock battery, before NTP
    assert refused(validate) == "locked for 60s after wrong codes"
    clock.advance(60)
    assert accepted(validate)


def test_a_lockout_in_the_file_longer_than_the_alarm_allows_is_cut_to_max_lockout(tmp_path: Path) -> None:
    path = tmp_path / LOCKOUT_FILE
    path.write_text('{"version": 1, "anchor": {"wall": 0, "mono": 0, "boot": null},'
                    ' "alarms": {"house": {"failed": 0, "lockouts": 40, "remaining": 1e12}}}')
    clock = VirtualClock(wall=0.0)
    validate = AlarmCommandValidator(ALARM, CodeGuard(clock, path))
    assert refused(validate) == "locked for 3600s after wrong codes"


def test_the_state_file_is_written_only_when_a_code_fails(tmp_path: Path) -> None:
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    validate = AlarmCommandValidator(ALARM, CodeGuard(clock, path))
    assert accepted(validate) and accepted(validate)
    assert not path.exists()
    wrong(validate, 1)
    assert path.exists()


def test_a_correct_code_clears_the_saved_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    validate: Validator = AlarmCommandValidator(ALARM, CodeGuard(clock, path))
    wrong(validate, 4)
    assert accepted(validate)
    _, validate = restarted(path, clock, after=10)
    wrong(validate, 4)
    assert accepted(validate)


def test_the_code_never_reaches_the_state_file_or_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / LOCKOUT_FILE
    clock = VirtualClock()
    with caplog.at_level(logging.DEBUG):
        validate = AlarmCommandValidator(ALARM, CodeGuard(clock, path))
        wrong(validate)
        refused(validate)
        clock.advance(60)
        assert accepted(validate)
        CodeGuard(clock, path)
    assert "locked out" in caplog.text  # the lockout is logged...
    for secret in (WRONG, "1234", CODE_HASH):
        assert secret not in caplog.text  # ...but never a code
        assert secret not in path.read_text()


def test_a_state_file_that_cannot_be_written_still_locks_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / LOCKOUT_FILE
    path.mkdir()  # the file's place is taken: every write fails, as on a full or read-only card
    validate = AlarmCommandValidator(ALARM, CodeGuard(VirtualClock(), path))
    wrong(validate)
    refused(validate)
    assert "cannot save" in caplog.text


def test_an_unreadable_state_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / LOCKOUT_FILE
    path.write_text("{not json")
    validate = AlarmCommandValidator(ALARM, CodeGuard(VirtualClock(), path))
    assert accepted(validate)
    assert "ignoring unreadable" in caplog.text


def test_commands_from_many_threads_are_counted_exactly(tmp_path: Path) -> None:
    """paho's thread (and, across a reload, two validators) share one count: five wrong codes, not more."""
    clock = VirtualClock()
    guard = CodeGuard(clock)
    validators = [command_validators(ruleset(tmp_path, ALARM_RULES), clock, guard)["house"] for _ in range(2)]
    reasons: list[str] = []
    lock = threading.Lock()

    def send(validate: Validator) -> None:
        try:
            validate({"action": "disarm", "code": WRONG})
        except ValueError as exc:
            with lock:
                reasons.append(str(exc))

    threads = [threading.Thread(target=send, args=(validators[i % 2],)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(reasons) == ["locked for 60s after wrong codes"] * 7 + ["wrong code"] * 5


ALARM_RULES = f"""
[[alarms]]
id = "house"
code_hash = "{CODE_HASH}"
[alarms.sensors]
armed_away = ["front_door"]
"""

GATEWAY = """
[gateway]
id = "lockout"
state_dir = "state"

[mqtt]
host = "127.0.0.1"

[[devices]]
id = "front_door"
driver = "gpio.input"
pin = 27
"""


class Topics:
    def state(self, entity: str) -> str:
        return f"state/{entity}"

    def command(self, entity: str) -> str:
        return f"set/{entity}"


class Registrations:
    """Stands in for the MQTT bridge: keeps the validators each reload hands it."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Validator]] = []
        self.topics = Topics()

    def update_registrations(self, entities: Any, commands: dict[str, Validator], discovery: Any) -> None:
        self.commands.append(dict(commands))

    def start(self) -> None: ...

    def forward(self, event: Any) -> None: ...

    def stop(self, timeout: float = 1.5) -> None: ...


def test_the_gateway_keeps_a_lockout_across_a_reload_and_a_restart(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, GATEWAY, rules="version = 1\n" + ALARM_RULES))
    hub = Registrations()
    gateway = Gateway(config, forwarder=hub)
    assert gateway.reload()
    wrong(hub.commands[-1]["house"])
    assert gateway.reload()
    assert refused(hub.commands[-1]["house"]).startswith("locked for")
    restarted_hub = Registrations()
    again = Gateway(config, forwarder=restarted_hub)
    assert again.reload()
    assert refused(restarted_hub.commands[-1]["house"]).startswith("locked for")
    assert (config.gateway.state_dir / LOCKOUT_FILE).exists()
