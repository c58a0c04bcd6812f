"""The alarm panel state machine in virtual time."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.events import Kind
from rules.codes import hash_code, verify_code
from tests.rules_kit import House, house

CODE_HASH = hash_code("1234", n=2**10)  # a light hash keeps the tests fast
ALARM = f"""
[[alarms]]
id = "house"
code_hash = "{CODE_HASH}"
exit_delay = "30s"
entry_delay = "20s"
siren = "siren"
siren_time = "3m"
instant = ["water_leak"]
[alarms.sensors]
armed_away = ["front_door", "hall_motion", "water_leak"]
armed_home = ["front_door"]
armed_night = ["front_door", "water_leak"]
"""


def code(action: str, value: str = "1234") -> str:
    return json.dumps({"action": action.upper(), "code": value})


def armed_away(tmp_path: Path, text: str = ALARM, state_dir: Path | None = None) -> House:
    h = house(tmp_path, text, state_dir=state_dir)
    h.command("house", code("arm_away"))
    h.advance(30)
    assert h.engine.alarm_state("house") == "armed_away"
    assert h.value("house") == "armed_away"  # also a state: retained for the hub, readable by conditions
    return h


def test_code_is_stored_hashed_with_salt() -> None:
    # No field of the stored form is the code (a substring test failed whenever the random hex held "1234").
    assert "1234" not in CODE_HASH.split("$") and hash_code("1234", n=2**10) != CODE_HASH
    assert verify_code("1234", CODE_HASH) and not verify_code("1235", CODE_HASH)


def test_arm_goes_through_exit_delay(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM)
    h.command("house", code("arm_away"))
    assert h.alarm_states() == ["disarmed", "arming"]
    h.set("front_door", True)  # leaving through the door during the exit delay
    h.advance(30)
    assert h.alarm_states()[-1] == "armed_away"
    assert h.commands("siren") == []


def test_entry_delay_then_triggered_with_siren(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    h.set("front_door", True)
    assert h.alarm_states()[-1] == "pending"
    h.advance(19)
    assert h.commands("siren") == []
    h.advance(1)
    assert h.alarm_states()[-1] == "triggered"
    assert h.value("siren") is True


def test_the_siren_stops_after_its_siren_time_and_the_alarm_goes_back_to_armed(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    h.set("front_door", True)
    h.advance(20 + 179)
    assert h.value("siren") is True
    h.advance(1)
    assert h.value("siren") is False
    assert h.alarm_states()[-1] == "armed_away"


def test_disarm_during_entry_delay(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    h.set("front_door", True)
    h.advance(10)
    h.command("house", code("disarm"))
    h.advance(60)
    assert h.alarm_states()[-1] == "disarmed"
    assert h.commands("siren") == []


def test_disarm_stops_the_siren(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    h.set("front_door", True)
    h.advance(25)
    h.command("house", code("disarm"))
    assert h.value("siren") is False


def test_instant_sensor_skips_entry_delay(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    h.set("water_leak", True)
    assert h.alarm_states()[-1] == "triggered"


def test_sensors_count_only_in_their_modes(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM)
    h.command("house", code("arm_home"))
    h.advance(30)
    h.set("hall_motion", True)
    assert h.alarm_states()[-1] == "armed_home"
    h.set("front_door", True)
    assert h.alarm_states()[-1] == "pending"


def test_wrong_code_is_rejected_and_never_echoed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = armed_away(tmp_path)
    with caplog.at_level(logging.DEBUG):
        h.command("house", code("disarm", "9999"))
    assert h.engine.alarm_state("house") == "armed_away"
    rejected = [e for e in h.seen if e.kind is Kind.REJECTED][-1]
    assert rejected.detail == "hub command rejected: wrong code"
    assert "9999" not in caplog.text and all("9999" not in str(e) for e in h.seen)


def test_the_code_never_reaches_the_bus(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    h.command("house", code("disarm"))
    assert h.engine.alarm_state("house") == "disarmed"
    assert all("1234" not in str(e.value) for e in h.seen)


def test_missing_code_is_rejected(tmp_path: Path) -> None:
    h = house(tmp_path, ALARM)
    h.command("house", "ARM_AWAY")
    assert h.engine.alarm_state("house") == "disarmed"
    assert [e.detail for e in h.seen if e.kind is Kind.REJECTED] == ["hub command rejected: code required"]


def test_too_many_wrong_codes_lock_the_panel(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(5):
        h.command("house", code("disarm", "0000"))
    h.command("house", code("disarm"))
    assert h.engine.alarm_state("house") == "armed_away"
    assert "locked" in str([e.detail for e in h.seen if e.kind is Kind.REJECTED][-1])
    h.advance(60)
    h.command("house", code("disarm"))
    assert h.engine.alarm_state("house") == "disarmed"


def test_rules_arm_without_code_and_read_the_mode(tmp_path: Path) -> None:
    text = ALARM + """
[[rules]]
id = "arm_at_night"
[[rules.triggers]]
type = "schedule"
at = "23:00"
[[rules.actions]]
type = "alarm"
alarm = "house"
command = "arm_night"

[[rules]]
id = "light_when_armed"
[[rules.triggers]]
type = "state"
entity = "hall_motion"
to = true
[[rules.conditions]]
type = "alarm"
alarm = "house"
mode = "armed_night"
[[rules.actions]]
type = "turn_on"
entity = "hall_light"
"""
    h = house(tmp_path, text, start="2026-01-05T22:59:00")
    h.advance(60 + 30)
    assert h.engine.alarm_state("house") == "armed_night"
    h.set("hall_motion", True)
    assert h.commands("hall_light") == [("hall_light", True)]


def test_every_transition_is_an_alarm_event_with_cause(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    door = h.set("front_door", True)
    pending = [e for e in h.seen if e.kind is Kind.ALARM][-1]
    assert (pending.value, pending.cause, pending.rule) == ("pending", door.id, "house")
    assert "front_door" in str(pending.detail)


def test_mode_and_running_delay_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)
    h = armed_away(tmp_path, state_dir=tmp_path / "state")
    h.set("front_door", True)
    h.advance(5)
    h.engine.stop()
    (tmp_path / "b").mkdir()
    new = house(tmp_path / "b", ALARM, state_dir=tmp_path / "state", begin=False)
    new.clock.set_wall(h.clock.time() + 5)
    new.start()
    assert new.engine.alarm_state("house") == "pending"
    new.advance(9)
    assert new.commands("siren") == []
    new.advance(1)
    assert new.engine.alarm_state("house") == "triggered"


# -- swinger limit: a sensor that keeps setting the alarm off is bypassed until disarm -------------


def alarm_by(h: House, sensor: str) -> None:
    """One full alarm caused by ``sensor``: it opens, the panel triggers, the siren runs out (3 min)."""
    h.set(sensor, False)
    h.set(sensor, True)
    if h.engine.alarm_state("house") == "pending":
        h.advance(20)
    assert h.engine.alarm_state("house") == "triggered"
    h.advance(180)
    assert h.engine.alarm_state("house") == "armed_away"


def bypass_notices(h: House) -> list[str]:
    return [str(e.detail) for e in h.seen if e.kind is Kind.ALARM and "bypassed" in str(e.detail)]


def test_a_sensor_that_set_the_alarm_off_three_times_no_longer_triggers(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(3):
        alarm_by(h, "water_leak")
    sirens = len(h.commands("siren"))
    h.set("water_leak", False)
    h.set("water_leak", True)
    assert h.engine.alarm_state("house") == "armed_away"
    assert len(h.commands("siren")) == sirens


def test_the_bypass_is_announced_once_with_the_reason(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(3):
        alarm_by(h, "water_leak")
    h.set("water_leak", False)
    h.set("water_leak", True)
    assert bypass_notices(h) == ["water_leak bypassed: triggered 3 times since arming (swinger limit)"]
    notice = next(e for e in h.seen if e.kind is Kind.ALARM and "bypassed" in str(e.detail))
    assert (notice.entity, notice.rule) == ("house", "house")


def test_an_entry_delay_sensor_is_counted_and_bypassed_too(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(3):
        alarm_by(h, "front_door")
    h.set("front_door", False)
    h.set("front_door", True)
    assert h.engine.alarm_state("house") == "armed_away"
    assert bypass_notices(h) == ["front_door bypassed: triggered 3 times since arming (swinger limit)"]


def test_other_sensors_still_trigger_while_one_is_bypassed(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(3):
        alarm_by(h, "water_leak")
    h.set("hall_motion", True)
    assert h.engine.alarm_state("house") == "pending"
    h.advance(20)
    assert h.engine.alarm_state("house") == "triggered"


def test_the_count_is_per_sensor(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    alarm_by(h, "water_leak")
    alarm_by(h, "front_door")
    alarm_by(h, "water_leak")
    alarm_by(h, "front_door")
    assert bypass_notices(h) == []
    alarm_by(h, "water_leak")  # the third for this one: it still sounds, then it is bypassed
    assert bypass_notices(h) == ["water_leak bypassed: triggered 3 times since arming (swinger limit)"]
    alarm_by(h, "front_door")


def test_disarming_ends_the_bypass(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(3):
        alarm_by(h, "water_leak")
    h.command("house", code("disarm"))
    h.command("house", code("arm_away"))
    h.advance(30)
    h.set("water_leak", False)
    h.set("water_leak", True)
    assert h.engine.alarm_state("house") == "triggered"


def test_changing_the_armed_mode_without_disarming_keeps_the_bypass(tmp_path: Path) -> None:
    h = armed_away(tmp_path)
    for _ in range(3):
        alarm_by(h, "water_leak")
    h.command("house", code("arm_night"))
    assert h.engine.alarm_state("house") == "armed_night"
    h.set("water_leak", False)
    h.set("water_leak", True)
    assert h.engine.alarm_state("house") == "armed_night"


def test_max_triggers_sets_the_limit_and_zero_means_no_limit(tmp_path: Path) -> None:
    h = armed_away(tmp_path, ALARM.replace('siren = "siren"', 'siren = "siren"\nmax_triggers = 1'))
    alarm_by(h, "water_leak")
    h.set("water_leak", False)
    h.set("water_leak", True)
    assert h.engine.alarm_state("house") == "armed_away"
    (tmp_path / "b").mkdir()
    h = armed_away(tmp_path / "b", ALARM.replace('siren = "siren"', 'siren = "siren"\nmax_triggers = 0'))
    for _ in range(10):
        alarm_by(h, "water_leak")
    assert bypass_notices(h) == []


def test_the_trigger_count_and_the_bypass_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)
    h = armed_away(tmp_path, state_dir=tmp_path / "state")
    for _ in range(3):
        alarm_by(h, "water_leak")
    alarm_by(h, "front_door")
    alarm_by(h, "front_door")
    h.engine.stop()
    (tmp_path / "b").mkdir()
    new = house(tmp_path / "b", ALARM, state_dir=tmp_path / "state", begin=False)
    new.clock.set_wall(h.clock.time() + 5)
    new.start()
    assert new.engine.alarm_state("house") == "armed_away"
    new.set("water_leak", True)
    assert new.engine.alarm_state("house") == "armed_away"  # still bypassed
    alarm_by(new, "front_door")  # its third: it sounds once more, then it is bypassed
    new.set("front_door", False)
    new.set("front_door", True)
    assert new.engine.alarm_state("house") == "armed_away"
