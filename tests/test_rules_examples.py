"""The shipped examples pass `gateway check` and do what they say in `gateway simulate`."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import Config
from gateway.rulesets import check_ruleset
from gateway.simulate import simulate
from tests.rules_config import house_config, write_house_config

EXAMPLES = Path(__file__).resolve().parent.parent / "rules" / "examples"


def only(tmp_path: Path, name: str) -> Config:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(EXAMPLES / f"{name}.toml", rules)
    return house_config(tmp_path, rules)


def run(config: Config, script: Path) -> list[dict[str, object]]:
    out = io.StringIO()
    assert simulate(config, script, out) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def actions(lines: list[dict[str, object]], kind: str = "command") -> list[tuple[object, ...]]:
    return [(line["t"], line["rule"], line["entity"], line["value"]) for line in lines if line["kind"] == kind]


EXAMPLE_NAMES = sorted(path.stem for path in EXAMPLES.glob("*.toml"))


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_each_example_passes_gateway_check_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(EXAMPLES / f"{name}.toml", rules)
    path = write_house_config(tmp_path, rules)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.count("\n") == 1 and "OK" in out.out
    ruleset, warnings = check_ruleset(house_config(tmp_path, rules))
    assert ruleset is not None and warnings == []


def test_rules_that_switch_a_controllers_output_cannot_join_that_controller(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The examples are alternatives: frost protection by rules and the thermostat would both drive the
    heater, the leak siren and the alarm the siren. Together, `gateway check` says who owns what."""
    path = write_house_config(tmp_path, EXAMPLES)
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "rule frost_heater_on: actions[0].entity: 'heater' is owned by thermostat living_thermostat" in err
    assert "rule leak_notify: actions[1].entity: 'siren' is owned by alarm house_alarm" in err


def test_motion_light_at_night(tmp_path: Path) -> None:
    lines = run(only(tmp_path, "motion_light_night"), EXAMPLES / "motion_light_night.events.jsonl")
    assert actions(lines) == [
        (120.0, "night_motion_light", "hall_light", True),   # 22:01: night, motion
        (180.0, "night_motion_light", "hall_light", True),   # motion again: extended
        (300.0, "night_motion_light", "hall_light", None),  # 2 min after the last motion
    ]  # the motion at 21:59 did nothing


def test_the_frost_protection_example_heats_when_it_freezes_and_publishes_a_notice(tmp_path: Path) -> None:
    lines = run(only(tmp_path, "frost_protection"), EXAMPLES / "frost_protection.events.jsonl")
    assert actions(lines) == [(600.0, "frost_heater_on", "heater", True), (2400.0, "frost_heater_off", "heater", False)]
    (notice,) = [json.loads(str(line["value"])) for line in lines if line["entity"] == "publish"]
    assert notice["topic"] == "notify/frost" and notice["payload"].startswith("Frost protection: 4.9 °C")


def test_the_thermostat_schedule_example_raises_the_setpoint_on_time_and_refuses_bad_commands(tmp_path: Path) -> None:
    lines = run(only(tmp_path, "thermostat_schedule"), EXAMPLES / "thermostat_schedule.events.jsonl")
    heater = [(t, value) for t, _, entity, value in actions(lines) if entity == "heater"]
    assert heater == [(0.0, False), (1800.0, True), (2100.0, False)]  # 06:30 schedule; min_on holds to 06:35
    setpoints = [(line["t"], line["value"]) for line in lines if line["entity"] == "living_thermostat_setpoint"]
    assert setpoints == [(0.0, 17.0), (1800.0, 21.0)]
    (rejected,) = [line for line in lines if line["kind"] == "rejected"]
    assert (rejected["t"], rejected["entity"]) == (2700.0, "living_thermostat")
    assert rejected["detail"] == "hub command rejected: setpoint 30 outside 7..25"  # down to frost_setpoint
    fault = [line for line in lines if line["entity"] == "living_thermostat_action" and line["value"] == "fault"]
    assert fault and fault[0]["detail"] == "sensor living_temperature silent for 15m"


def test_alarm_with_siren(tmp_path: Path) -> None:
    lines = run(only(tmp_path, "alarm_with_siren"), EXAMPLES / "alarm_with_siren.events.jsonl")
    states = [(line["t"], line["value"]) for line in lines if line["kind"] == "alarm"]
    assert states == [(0.0, "disarmed"), (0.0, "arming"), (30.0, "armed_away"), (600.0, "pending"),
                      (630.0, "triggered"), (810.0, "armed_away")]
    assert actions(lines) == [
        (630.0, "house_alarm", "siren", True),
        (630.0, "light_on_alarm", "hall_light", True),
        (810.0, "house_alarm", "siren", None),   # the 3-minute siren limit
    ]


def test_the_leak_example_notifies_sounds_the_siren_and_reminds_while_still_wet(tmp_path: Path) -> None:
    lines = run(only(tmp_path, "leak_notify"), EXAMPLES / "leak_notify.events.jsonl")
    published = [(line["t"], line["rule"], json.loads(str(line["value"]))) for line in lines
                 if line["entity"] == "publish"]
    assert [(t, rule) for t, rule, _ in published] == [(60.0, "leak_notify"), (660.0, "leak_still_wet")]
    first = json.loads(published[0][2]["payload"])
    assert first["title"] == "Water leak" and first["sensor"] == "water_leak"
    assert actions(lines) == [(60.0, "leak_notify", "siren", True), (90.0, "leak_notify", "siren", None)]


def test_simulation_is_deterministic(tmp_path: Path) -> None:
    config = only(tmp_path, "alarm_with_siren")
    script = EXAMPLES / "alarm_with_siren.events.jsonl"
    assert run(config, script) == run(config, script)


def test_a_five_minute_for_takes_milliseconds(tmp_path: Path) -> None:
    import time

    start = time.perf_counter()
    run(only(tmp_path, "leak_notify"), EXAMPLES / "leak_notify.events.jsonl")
    assert time.perf_counter() - start < 1.0


def test_bad_event_line_is_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "events.jsonl"
    script.write_text('{"at": 0, "entity": "water_leak", "value": true}\n{"at": "soon", "entity": "x"}\n')
    assert simulate(only(tmp_path, "leak_notify"), script, io.StringIO()) == 1
    assert f"{script}:2: at: expected a duration" in capsys.readouterr().err


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(st.text(max_size=40), st.just('{"at": 1, "entity": "x"}'),
                                st.just("[" * 3000 + "]" * 3000)), max_size=4))
def test_any_events_file_reads_or_names_the_bad_line(tmp_path: Path, lines: list[str]) -> None:
    from zoneinfo import ZoneInfo

    from gateway.simulate import read_script

    script = tmp_path / "fuzz.jsonl"
    script.write_text("\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines), encoding="utf-8")
    try:
        read_script(script, ZoneInfo("UTC"))
    except ValueError as exc:
        assert str(exc).startswith(f"{script}:")
