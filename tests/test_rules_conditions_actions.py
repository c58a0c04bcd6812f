"""Conditions and actions, in virtual time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.events import Kind
from tests.rules_kit import House, house

MOTION = '[[rules.triggers]]\ntype = "state"\nentity = "hall_motion"\nto = true\n'
LIGHT_ON = '[[rules.actions]]\ntype = "turn_on"\nentity = "hall_light"\n'


def rule(conditions: str = "", actions: str = LIGHT_ON, extra: str = "", trigger: str = MOTION) -> str:
    return f'[[rules]]\nid = "r"\n{extra}\n{trigger}{conditions}\n{actions}'


def fires(h: House, entity: str = "hall_motion") -> bool:
    h.set(entity, False)
    h.clear()
    h.set(entity, True)
    return bool(h.commands())


NIGHT = '[[rules.conditions]]\ntype = "time"\nafter = "22:00"\nbefore = "06:00"\n'


@pytest.mark.parametrize(("start", "expected"), [
    ("2026-01-05T23:30:00", True), ("2026-01-05T03:00:00", True),
    ("2026-01-05T06:00:00", False), ("2026-01-05T12:00:00", False), ("2026-01-05T22:00:00", True),
])
def test_time_window_crossing_midnight(tmp_path: Path, start: str, expected: bool) -> None:
    assert fires(house(tmp_path, rule(NIGHT), start=start)) is expected


def test_time_window_uses_the_configured_zone(tmp_path: Path) -> None:
    # 21:30 UTC is 22:30 in Paris in winter
    h = house(tmp_path, rule(NIGHT), start="2026-01-05T22:30:00", tz="Europe/Paris")
    assert fires(h)


def test_a_weekday_condition_lets_a_rule_fire_only_on_its_days(tmp_path: Path) -> None:
    cond = '[[rules.conditions]]\ntype = "weekday"\ndays = ["sat", "sun"]\n'
    assert not fires(house(tmp_path, rule(cond), start="2026-01-05T12:00:00"))  # Monday
    assert fires(house(tmp_path, rule(cond), start="2026-01-10T12:00:00"))  # Saturday


def test_time_conditions_wait_for_a_synchronised_clock(tmp_path: Path) -> None:
    h = house(tmp_path, rule(NIGHT), start="2026-01-05T23:30:00", begin=False)
    h.engine.wall.check = lambda: False  # a board without RTC, before NTP
    h.start()
    assert not fires(h)
    trace = h.engine.traces.get("r")[-1]
    assert "not synchronised" in trace["notes"][0]


def test_state_equals_and_in(tmp_path: Path) -> None:
    cond = '[[rules.conditions]]\ntype = "state"\nentity = "front_door"\nequals = true\n'
    h = house(tmp_path, rule(cond))
    h.set("front_door", False)
    assert not fires(h)
    h.set("front_door", True)
    assert fires(h)
    cond_in = '[[rules.conditions]]\ntype = "state"\nentity = "front_door"\nin = [true]\n'
    h2 = house(tmp_path, rule(cond_in))
    h2.set("front_door", True)
    assert fires(h2)


def test_a_numeric_condition_lets_a_rule_fire_only_inside_its_range(tmp_path: Path) -> None:
    cond = '[[rules.conditions]]\ntype = "numeric"\nentity = "living_temperature"\nabove = 18\nbelow = 25\n'
    h = house(tmp_path, rule(cond))
    h.set("living_temperature", 17.0)
    assert not fires(h)
    h.set("living_temperature", 20.0)
    assert fires(h)


def test_unknown_value_fails_a_condition(tmp_path: Path) -> None:
    cond = '[[rules.conditions]]\ntype = "numeric"\nentity = "living_temperature"\nbelow = 25\n'
    assert not fires(house(tmp_path, rule(cond)))


def test_a_held_condition_needs_the_state_to_have_lasted_its_time(tmp_path: Path) -> None:
    cond = '[[rules.conditions]]\ntype = "held"\nentity = "front_door"\nequals = true\nfor = "2m"\n'
    h = house(tmp_path, rule(cond))
    h.set("front_door", True)
    h.advance(60)
    assert not fires(h)
    h.advance(60)
    assert fires(h)


def test_nested_any_and_not_conditions_let_a_rule_fire_when_one_branch_holds(tmp_path: Path) -> None:
    cond = """
[[rules.conditions]]
type = "any"
[[rules.conditions.conditions]]
type = "state"
entity = "front_door"
equals = true
[[rules.conditions.conditions]]
type = "not"
[[rules.conditions.conditions.conditions]]
type = "numeric"
entity = "living_temperature"
below = 30
"""
    h = house(tmp_path, rule(cond))
    h.set("front_door", False)
    h.set("living_temperature", 20.0)
    assert not fires(h)
    h.set("living_temperature", 31.0)
    assert fires(h)
    h.set("living_temperature", 20.0)
    h.set("front_door", True)
    assert fires(h)


def test_trace_records_which_condition_failed(tmp_path: Path) -> None:
    cond = '[[rules.conditions]]\ntype = "state"\nentity = "front_door"\nequals = true\n'
    h = house(tmp_path, rule(cond))
    h.set("front_door", False)
    fires(h)
    trace = h.engine.traces.get("r")[-1]
    assert trace["result"] == "conditions failed"
    assert trace["conditions"] == [["front_door == True", False]]
    assert trace["trigger"].startswith("state hall_motion")


# -- actions ------------------------------------------------------------------------------------


def test_every_action_carries_rule_and_cause(tmp_path: Path) -> None:
    h = house(tmp_path, rule())
    cause = h.set("hall_motion", True)
    command = next(e for e in h.actions() if e.kind is Kind.COMMAND)
    assert (command.rule, command.cause) == ("r", cause.id)
    state = next(e for e in h.seen if e.kind is Kind.STATE and e.entity == "hall_light" and e.value is True)
    assert state.cause == command.id


def test_turn_on_for_then_off(tmp_path: Path) -> None:
    h = house(tmp_path, rule(actions='[[rules.actions]]\ntype = "turn_on"\nentity = "hall_light"\nfor = "2m"\n'))
    h.set("hall_motion", True)
    h.advance(119)
    assert h.value("hall_light") is True
    h.advance(1)
    assert h.value("hall_light") is False


def test_retrigger_extends_turn_on_for(tmp_path: Path) -> None:
    h = house(tmp_path, rule(actions='[[rules.actions]]\ntype = "turn_on"\nentity = "hall_light"\nfor = "2m"\n'))
    h.set("hall_motion", True)
    h.advance(90)
    h.set("hall_motion", False)
    h.set("hall_motion", True)
    h.advance(90)
    assert h.value("hall_light") is True
    h.advance(30)
    assert h.value("hall_light") is False
    assert h.commands("hall_light")[-1] == ("hall_light", None)


def test_a_toggle_action_flips_the_output(tmp_path: Path) -> None:
    actions = '[[rules.actions]]\ntype = "toggle"\nentity = "heater"\n'
    h = house(tmp_path, rule(actions=actions))
    h.set("hall_motion", True)
    assert h.value("heater") is True
    h.set("hall_motion", False)
    h.set("hall_motion", True)
    assert h.value("heater") is False


def test_a_set_action_gives_the_entity_its_value(tmp_path: Path) -> None:
    h = house(tmp_path, rule(actions='[[rules.actions]]\ntype = "set"\nentity = "heater"\nvalue = true\n'))
    h.set("hall_motion", True)
    assert h.value("heater") is True


def test_a_delay_action_holds_back_the_next_action_for_its_time(tmp_path: Path) -> None:
    actions = LIGHT_ON + '[[rules.actions]]\ntype = "delay"\nfor = "30s"\n' + (
        '[[rules.actions]]\ntype = "turn_off"\nentity = "hall_light"\n')
    h = house(tmp_path, rule(actions=actions))
    h.set("hall_motion", True)
    h.advance(29)
    assert h.value("hall_light") is True
    h.advance(1)
    assert h.value("hall_light") is False


def test_publish_fills_fields_only(tmp_path: Path) -> None:
    actions = """
[[rules.actions]]
type = "publish"
topic = "notify/leak"
payload = "leak at {entity}: {value} ({rule}) {{literal}} door={state.front_door}"
"""
    h = house(tmp_path, rule(actions=actions))
    h.set("front_door", True)
    h.set("hall_motion", True)
    event = next(e for e in h.actions() if e.kind is Kind.SYSTEM)
    message = json.loads(str(event.value))
    assert event.entity == "publish" and message["topic"] == "notify/leak"
    assert message["payload"] == "leak at hall_motion: true (r) {literal} door=true"


def test_publish_table_payload_is_json(tmp_path: Path) -> None:
    actions = ('[[rules.actions]]\ntype = "publish"\ntopic = "notify"\n'
               '[rules.actions.payload]\nwho = "{entity}"\nlevel = 3\n')
    h = house(tmp_path, rule(actions=actions))
    h.set("hall_motion", True)
    event = next(e for e in h.actions() if e.kind is Kind.SYSTEM)
    assert json.loads(json.loads(str(event.value))["payload"]) == {"who": "hall_motion", "level": 3}


def test_publish_fills_time_in_the_local_zone_in_a_text_and_in_a_table(tmp_path: Path) -> None:
    actions = ('[[rules.actions]]\ntype = "publish"\ntopic = "notify/text"\npayload = "at {time}"\n'
               '[[rules.actions]]\ntype = "publish"\ntopic = "notify/table"\n'
               '[rules.actions.payload]\nwhen = "{time}"\n')
    h = house(tmp_path, rule(actions=actions), start="2026-01-05T23:30:00", tz="Europe/Paris")
    h.set("hall_motion", True)
    text, table = (json.loads(str(e.value))["payload"] for e in h.actions() if e.kind is Kind.SYSTEM)
    assert text == "at 2026-01-05T23:30:00+01:00"
    assert json.loads(table) == {"when": "2026-01-05T23:30:00+01:00"}


def test_publish_of_a_held_trigger_fills_time_with_when_the_state_began(tmp_path: Path) -> None:
    trigger = MOTION + 'for = "1m"\n'
    actions = '[[rules.actions]]\ntype = "publish"\ntopic = "notify"\npayload = "since {time}"\n'
    h = house(tmp_path, rule(actions=actions, trigger=trigger), start="2026-01-05T12:00:00")
    h.set("hall_motion", True)
    h.advance(60)
    event = next(e for e in h.actions() if e.kind is Kind.SYSTEM)
    assert json.loads(str(event.value))["payload"] == "since 2026-01-05T12:00:00+00:00"


def test_virtual_entity_set_and_read(tmp_path: Path) -> None:
    text = """
[[virtuals]]
id = "night_mode"
initial = false
""" + rule(actions='[[rules.actions]]\ntype = "set"\nentity = "night_mode"\nvalue = true\n') + """
[[rules]]
id = "uses_flag"
[[rules.triggers]]
type = "state"
entity = "front_door"
to = true
[[rules.conditions]]
type = "state"
entity = "night_mode"
equals = true
[[rules.actions]]
type = "turn_on"
entity = "siren"
"""
    h = house(tmp_path, text)
    assert h.value("night_mode") is False
    h.set("front_door", True)
    assert h.commands("siren") == []
    h.set("front_door", False)
    h.set("hall_motion", True)
    assert h.value("night_mode") is True
    h.set("front_door", True)
    assert h.commands("siren") == [("siren", True)]


def test_a_cooldown_ignores_triggers_until_it_has_passed(tmp_path: Path) -> None:
    h = house(tmp_path, rule(extra='cooldown = "1m"'))
    assert fires(h)
    assert not fires(h)
    assert h.engine.traces.get("r")[-1]["result"] == "cooldown"
    h.advance(60)
    assert fires(h)


DELAYED = LIGHT_ON + '[[rules.actions]]\ntype = "delay"\nfor = "1m"\n' + (
    '[[rules.actions]]\ntype = "turn_off"\nentity = "hall_light"\n')


def test_mode_single_ignores_while_running(tmp_path: Path) -> None:
    h = house(tmp_path, rule(actions=DELAYED, extra='mode = "single"'))
    h.set("hall_motion", True)
    h.advance(30)
    h.set("hall_motion", False)
    h.set("hall_motion", True)
    h.advance(30)
    assert h.value("hall_light") is False
    assert h.engine.traces.get("r")[-1]["result"] == "skipped: still running"


def test_mode_restart_starts_over(tmp_path: Path) -> None:
    h = house(tmp_path, rule(actions=DELAYED, extra='mode = "restart"'))
    h.set("hall_motion", True)
    h.advance(30)
    h.set("hall_motion", False)
    h.set("hall_motion", True)
    h.advance(30)
    assert h.value("hall_light") is True
    h.advance(30)
    assert h.value("hall_light") is False


def test_mode_queued_runs_each_in_turn(tmp_path: Path) -> None:
    h = house(tmp_path, rule(actions=DELAYED, extra='mode = "queued"'))
    h.set("hall_motion", True)
    h.set("hall_motion", False)
    h.set("hall_motion", True)
    h.advance(61)
    assert h.commands("hall_light") == [("hall_light", True), ("hall_light", False), ("hall_light", True)]
    h.advance(60)
    assert h.commands("hall_light")[-1] == ("hall_light", False)


def test_rules_that_trigger_each_other_forever_are_cut_and_reported(tmp_path: Path) -> None:
    text = """
[[rules]]
id = "ping"
[[rules.triggers]]
type = "state"
entity = "heater"
[[rules.actions]]
type = "toggle"
entity = "hall_light"

[[rules]]
id = "pong"
[[rules.triggers]]
type = "state"
entity = "hall_light"
[[rules.actions]]
type = "toggle"
entity = "heater"
"""
    h = house(tmp_path, text)
    h.command("heater", True)
    status = h.engine.status()["per_rule"]
    assert h.dispatcher.counters.chains_cut >= 1
    assert status["ping"]["chain_cuts"] + status["pong"]["chain_cuts"] >= 1
