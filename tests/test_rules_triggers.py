"""Triggers: what makes a rule fire, and what does not."""

from __future__ import annotations

from pathlib import Path

from core.events import Kind
from rules.conditions import number, same
from tests.rules_kit import house

LIGHT_ON = """
[[rules.actions]]
type = "turn_on"
entity = "hall_light"
"""


def rule(trigger: str, actions: str = LIGHT_ON, extra: str = "") -> str:
    return f'[[rules]]\nid = "r"\n{extra}\n[[rules.triggers]]\n{trigger}\n{actions}'


def test_state_trigger_fires_on_change_to_value(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "hall_motion"\nto = true'))
    h.set("hall_motion", False)
    assert h.commands() == []
    h.set("hall_motion", True)
    assert h.commands() == [("hall_light", True)]


def test_state_trigger_ignores_repeated_value(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "hall_motion"\nto = true'))
    h.set("hall_motion", True)
    h.set("hall_motion", True)
    assert h.commands() == [("hall_light", True)]


def test_state_trigger_from_requires_previous_value(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "front_door"\nfrom = true\nto = false'))
    h.set("front_door", False)
    assert h.commands() == []
    h.set("front_door", True)
    h.set("front_door", False)
    assert h.commands() == [("hall_light", True)]


def test_true_is_not_one(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "living_temperature"\nto = true'))
    h.set("living_temperature", 1)
    assert h.commands() == []


def test_state_held_for_fires_after_duration(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "front_door"\nto = true\nfor = "5m"'))
    h.set("front_door", True)
    h.advance(299)
    assert h.commands() == []
    h.advance(1)
    assert h.commands() == [("hall_light", True)]


def test_state_held_for_is_cancelled_when_state_leaves(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "front_door"\nto = true\nfor = "5m"'))
    h.set("front_door", True)
    h.advance(200)
    h.set("front_door", False)
    h.advance(600)
    assert h.commands() == []


def test_numeric_fires_on_crossing_not_while_inside(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "numeric"\nentity = "living_temperature"\nbelow = 5'))
    h.set("living_temperature", 8.0)
    h.set("living_temperature", 4.5)
    h.set("living_temperature", 4.0)
    h.set("living_temperature", 3.0)
    assert h.commands() == [("hall_light", True)]


def test_numeric_does_not_fire_when_already_below(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "numeric"\nentity = "living_temperature"\nbelow = 5'))
    h.set("living_temperature", 3.0)
    h.set("living_temperature", 2.0)
    assert h.commands() == []


def test_numeric_hysteresis_stops_flapping(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "numeric"\nentity = "living_temperature"\nbelow = 5\nhysteresis = 1'))
    h.set("living_temperature", 8.0)
    for value in (4.9, 5.1, 4.9, 5.5, 4.8):
        h.set("living_temperature", value)
    assert len(h.commands()) == 1
    h.set("living_temperature", 6.0)
    h.set("living_temperature", 4.9)
    assert len(h.commands()) == 2


def test_a_numeric_trigger_with_for_fires_once_the_value_has_stayed_in_range_that_long(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "numeric"\nentity = "living_temperature"\nabove = 30\nfor = "10m"'))
    h.set("living_temperature", 20.0)
    h.set("living_temperature", 31.0)
    h.advance(300)
    h.set("living_temperature", 32.0)
    h.advance(299)
    assert h.commands() == []
    h.advance(1)
    assert h.commands() == [("hall_light", True)]


def test_an_unavailable_trigger_fires_once_when_its_entity_goes_unavailable(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "unavailable"\nentity = "living_temperature"'))
    h.set("living_temperature", 20.0)
    h.post("living_temperature", False, Kind.AVAILABILITY)
    h.post("living_temperature", False, Kind.AVAILABILITY)
    assert h.commands() == [("hall_light", True)]


def test_unavailable_for_is_cancelled_by_return(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "unavailable"\nentity = "living_temperature"\nfor = "1m"'))
    h.post("living_temperature", False, Kind.AVAILABILITY)
    h.advance(30)
    h.post("living_temperature", True, Kind.AVAILABILITY)
    h.advance(60)
    assert h.commands() == []


def test_command_trigger_only_from_the_hub(tmp_path: Path) -> None:
    text = rule('type = "command"\nentity = "heater"\nvalue = true') + rule(
        'type = "state"\nentity = "hall_motion"\nto = true',
        '[[rules.actions]]\ntype = "set"\nentity = "heater"\nvalue = true',
    ).replace('id = "r"', 'id = "rule_sets_heater"')
    h = house(tmp_path, text)
    h.set("hall_motion", True)
    assert ("hall_light", True) not in h.commands()
    h.command("heater", True)
    assert ("hall_light", True) in h.commands()


def test_start_trigger_fires_once_at_start(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "start"'))
    assert h.commands() == [("hall_light", True)]
    h.engine.start()
    h.advance(0)
    assert h.commands() == [("hall_light", True)]


def test_a_daily_schedule_fires_at_its_time_every_day(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "schedule"\nat = "06:30"'), start="2026-01-05T06:00:00")
    h.advance(29 * 60)
    assert h.commands() == []
    h.advance(60)
    assert h.commands() == [("hall_light", True)]
    h.advance(86400)
    assert len(h.commands()) == 2


def test_schedule_cron_with_weekdays(tmp_path: Path) -> None:
    # 2026-01-05 is a Monday; "sat,sun" at 08:00 first fires on Saturday the 10th
    h = house(tmp_path, rule('type = "schedule"\ncron = "0 8 * * sat,sun"'), start="2026-01-05T00:00:00")
    h.advance(5 * 86400)
    assert h.commands() == []
    h.advance(8 * 3600 + 1)
    assert h.commands() == [("hall_light", True)]


def test_schedule_event_carries_cause(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "schedule"\nat = "00:00:10"'))
    h.advance(10)
    timer = next(e for e in h.seen if e.kind is Kind.TIMER)
    command = next(e for e in h.actions() if e.kind is Kind.COMMAND)
    assert command.cause == timer.id and command.rule == "r"


def test_state_unchanged_for_restarts_on_every_change(tmp_path: Path) -> None:
    h = house(tmp_path, rule('type = "state"\nentity = "living_temperature"\nfor = "10m"'))
    h.set("living_temperature", 20.0)
    h.advance(300)
    h.set("living_temperature", 20.5)
    h.advance(599)
    assert h.commands() == []
    h.advance(1)
    assert h.commands() == [("hall_light", True)]


def test_a_number_is_an_int_or_a_float_never_a_boolean() -> None:
    assert number(21.5) == 21.5
    assert number(21) == 21.0 and type(number(21)) is float
    assert number(True) is None and number("21") is None and number(None) is None


def test_same_never_equates_a_boolean_with_a_number_but_equates_21_with_21_0() -> None:
    assert same(21, 21.0) and same(21.5, 21.5) and same(True, True) and same("on", "on")
    assert not same(True, 1) and not same(0, False) and not same(True, False)
