"""Loading rule files: exact, located errors; all or nothing; never a traceback."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.entities import Component, EntitySpec, accepts
from core.values import parse_on_off
from gateway.mqtt.commands import CommandRejected, decode, validate, validator_for
from rules import model as m
from rules.commands import thermostat_validator
from rules.loader import RulesError, load_rules, thermostat_entities
from tests import toml_kit as toml
from tests.rules_kit import DEMO_ENTITIES, HEADER, house, ruleset

GOOD = toml.state_rule("night_light", "hall_motion", True, "turn_on", "hall_light", for_="2m")


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        ruleset(tmp_path, text)
    return info.value.problems


def test_a_good_file_loads(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, GOOD)
    assert [r.rule.id for r in rules] == ["night_light"]
    action = rules.rules[0].rule.actions[0]
    assert isinstance(action, m.TurnOnAction) and action.for_ == 120


def test_error_names_file_rule_field_and_what_was_found(tmp_path: Path) -> None:
    found = problems(tmp_path, GOOD.replace('for = "2m"', 'for = "2 minutes"'))
    assert found == [
        f"{tmp_path / 'rules.d' / 'test.toml'}: rule night_light: actions[0].for: "
        "expected a duration such as '30s', '5m' or '1h30m' (got '2 minutes')"
    ]


def test_unknown_type_lists_the_known_ones(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, GOOD.replace('type = "turn_on"', 'type = "switch_on"'))
    assert "rule night_light: actions[0].type: unknown type 'switch_on'" in line
    assert "'turn_on'" in line


def test_a_misspelt_type_gets_a_did_you_mean(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, GOOD.replace('type = "turn_on"', 'type = "turnon"'))
    assert "rule night_light: actions[0].type: unknown type 'turnon'; did you mean 'turn_on'?" in line


def test_a_value_the_validator_does_not_quote_is_shown_after_got(tmp_path: Path) -> None:
    text = GOOD.replace('type = "state"\nentity = "hall_motion"\nto = true', 'type = "schedule"\ncron = "not a cron"')
    (line,) = problems(tmp_path, text)
    assert line.startswith(f"{tmp_path / 'rules.d' / 'test.toml'}: rule night_light: triggers[0].cron: not a cron")
    assert line.endswith("(got 'not a cron')")


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, GOOD.replace('to = true', 'to = true\ncolour = "red"'))
    assert line.endswith("rule night_light: triggers[0].colour: unknown key")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('entity = "hall_motion"', 'entity = "hall_motoin"').replace(
        'entity = "hall_light"', 'entity = "living_temperature"')
    found = problems(tmp_path, text)
    assert len(found) == 2
    assert "triggers[0].entity: unknown entity 'hall_motoin'; did you mean 'hall_motion'?" in found[0]
    assert "actions[0].entity: 'living_temperature' is a sensor, it cannot be commanded" in found[1]


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    directory = tmp_path / "rules.d"
    directory.mkdir()
    (directory / "a.toml").write_text(HEADER + GOOD)
    (directory / "b.toml").write_text(HEADER + GOOD)
    with pytest.raises(RulesError) as info:
        load_rules(directory, DEMO_ENTITIES)
    assert info.value.problems == [
        f"{directory / 'b.toml'}: rule night_light: id: duplicate id (also in {directory / 'a.toml'})"
    ]


def test_impossible_numeric_range_talks_to_a_person(tmp_path: Path) -> None:
    text = GOOD.replace("to = true", "").replace('type = "state"', 'type = "numeric"\nabove = 10\nbelow = 5')
    (line,) = problems(tmp_path, text)
    assert "can never be above 10 and below 5" in line


def test_bad_toml_is_located(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "[[rules]\n")
    assert "test.toml: not valid TOML" in line and "line 2" in line


def test_version_is_required(tmp_path: Path) -> None:
    directory = tmp_path / "rules.d"
    directory.mkdir()
    (directory / "a.toml").write_text(GOOD)
    with pytest.raises(RulesError) as info:
        load_rules(directory, DEMO_ENTITIES)
    assert info.value.problems == [f"{directory / 'a.toml'}: version: Field required"]


def test_unknown_template_field(tmp_path: Path) -> None:
    text = GOOD.replace('type = "turn_on"\nentity = "hall_light"\nfor = "2m"',
                        'type = "publish"\ntopic = "x"\npayload = "{value.__class__}"')
    (line,) = problems(tmp_path, text)
    assert "actions[0].payload: unknown field {value.__class__}" in line


def test_alarm_must_be_declared(tmp_path: Path) -> None:
    text = GOOD.replace('type = "turn_on"\nentity = "hall_light"\nfor = "2m"',
                        'type = "alarm"\nalarm = "house"\ncommand = "arm_away"')
    (line,) = problems(tmp_path, text)
    assert "actions[0].alarm: no alarm 'house' is declared" in line


def test_unreachable_rule_is_a_warning(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, GOOD.replace("to = true", "to = true\nfrom = true"))
    assert any("can never fire" in w for w in rules.warnings)


def test_disabled_rules_are_checked_but_not_loaded(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, GOOD.replace('id = "night_light"', 'id = "night_light"\nenabled = false'))
    assert len(rules) == 0 and rules.disabled == ("night_light",)


def test_declared_entities_for_the_mqtt_side(tmp_path: Path) -> None:
    text = """
[[virtuals]]
id = "night_mode"
[[thermostats]]
id = "living"
sensor = "living_temperature"
heater = "heater"
[[alarms]]
id = "house"
"""
    specs = {s.id: s.component.value for s in ruleset(tmp_path, text).entities()}
    assert specs == {"night_mode": "switch", "living": "climate", "living_setpoint": "sensor",
                     "living_preset": "sensor", "living_action": "sensor", "house": "alarm_control_panel"}


def test_thermostat_heater_must_be_an_actuator(tmp_path: Path) -> None:
    text = '[[thermostats]]\nid = "living"\nsensor = "living_temperature"\nheater = "front_door"\n'
    (line,) = problems(tmp_path, text)
    assert "thermostats living: heater: 'front_door' is a binary_sensor, expected a switch, light or siren" in line


SCALARS = st.one_of(st.booleans(), st.integers(-5, 100), st.floats(allow_nan=False, width=32),
                    st.sampled_from(["state", "numeric", "turn_on", "5m", "x", "hall_motion", "06:30", "1h30m"]))
KEYS = st.sampled_from(["type", "entity", "to", "from", "for", "above", "below", "id", "actions", "triggers",
                        "conditions", "value", "rules", "version", "at", "cron", "mode", "payload", "topic"])
TREES = st.recursive(SCALARS, lambda children: st.one_of(st.lists(children, max_size=3),
                                                       st.dictionaries(KEYS, children, max_size=4)), max_leaves=20)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(KEYS, TREES, max_size=5))
def test_any_structured_toml_loads_or_gives_a_located_error(tmp_path: Path, data: dict[str, object]) -> None:
    _load_or_located(tmp_path, "\n".join(f"{k} = {_toml_value(v)}" for k, v in data.items()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_loads_or_gives_a_located_error(tmp_path: Path, text: str) -> None:
    _load_or_located(tmp_path, text)


def _load_or_located(tmp_path: Path, text: str) -> None:
    directory = tmp_path / "fuzz"
    directory.mkdir(exist_ok=True)
    path = directory / "f.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_rules(directory, DEMO_ENTITIES)
    except RulesError as exc:
        assert exc.problems
        assert all(p.startswith(f"{path}: ") for p in exc.problems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(["rule", "trigger", "action"]), patch=st.dictionaries(KEYS, TREES, max_size=3))
def test_a_valid_rule_with_random_fields_loads_or_gives_a_located_error(
    tmp_path: Path, where: str, patch: dict[str, object]
) -> None:
    data = tomllib.loads(HEADER + GOOD)
    rule = data["rules"][0]
    target = {"rule": rule, "trigger": rule["triggers"][0], "action": rule["actions"][0]}[where]
    target.update(patch)
    body = "\n".join(f"{k} = {_toml_value(v)}" for k, v in data.items())
    _load_or_located(tmp_path, body)


def test_conditions_that_contradict_the_trigger_are_a_warning(tmp_path: Path) -> None:
    text = GOOD + '[[rules.conditions]]\ntype = "state"\nentity = "hall_motion"\nequals = false\n'
    rules = ruleset(tmp_path, text)
    assert any("can never run" in w for w in rules.warnings)


def test_a_rule_may_not_share_its_id_with_a_controller(tmp_path: Path) -> None:
    text = GOOD.replace('id = "night_light"', 'id = "house"') + '[[alarms]]\nid = "house"\n'
    (line,) = problems(tmp_path, text)
    assert "rule house: id: also the id of a thermostat or alarm" in line


# -- what each target takes -----------------------------------------------------------------

DIMMABLE = {**DEMO_ENTITIES,
            "hall_light": EntitySpec("hall_light", Component.LIGHT, unit="%", safe_value=0.0, minimum=0, maximum=100)}
THERMOSTAT = '[[thermostats]]\nid = "living"\nsensor = "living_temperature"\nheater = "heater"\n' \
             "min_setpoint = 10\nmax_setpoint = 25\nfrost_setpoint = 10\n"  # limits 10..25 (frost below: lower)


def set_rule(entity: str, value: str) -> str:
    """A rule whose one action is ``set entity = value`` (``value`` as TOML)."""
    return GOOD.replace('type = "turn_on"\nentity = "hall_light"\nfor = "2m"',
                        f'type = "set"\nentity = "{entity}"\nvalue = {value}')


def test_a_switch_set_to_a_word_is_refused_with_the_located_reason(tmp_path: Path) -> None:
    found = problems(tmp_path, set_rule("heater", '"OFF"'))
    assert found == [
        f"{tmp_path / 'rules.d' / 'test.toml'}: rule night_light: actions[0].value: "
        "'heater' is a switch: use true or false, not \"OFF\""
    ]


def test_a_siren_takes_only_true_or_false(tmp_path: Path) -> None:
    ruleset(tmp_path, set_rule("siren", "false"))
    (line,) = problems(tmp_path, set_rule("siren", '"on"'))
    assert line.endswith("actions[0].value: 'siren' is a siren: use true or false, not \"on\"")


def test_a_dimmable_light_takes_a_brightness_within_its_limits(tmp_path: Path) -> None:
    rules = ruleset(tmp_path, set_rule("hall_light", "50"), DIMMABLE)
    action = rules.rules[0].rule.actions[0]
    assert isinstance(action, m.SetAction) and action.value == 50
    (line,) = problems_with(tmp_path, set_rule("hall_light", "150"), DIMMABLE)
    assert line.endswith("actions[0].value: 'hall_light' is a dimmable light: "
                         "use true, false or a brightness 0..100, not 150")


def test_a_switch_set_to_a_number_is_refused(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, set_rule("heater", "50"))
    assert line.endswith("actions[0].value: 'heater' is a switch: use true or false, not 50")


def test_an_on_off_light_takes_no_brightness(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, set_rule("hall_light", "50"))
    assert line.endswith("actions[0].value: 'hall_light' is an on/off light: use true or false, not 50")


@pytest.mark.parametrize("value", ["22", "10", "25.0", '"heat"', '"off"', '"away"', '"home"', '"Heat"', '"21.5"'])
def test_a_thermostat_takes_a_setpoint_within_its_limits_or_a_mode_or_preset(tmp_path: Path, value: str) -> None:
    ruleset(tmp_path, THERMOSTAT + set_rule("living", value))


@pytest.mark.parametrize(("value", "reason"), [
    ("26", "'living' is a thermostat: setpoint 26 is outside its limits 10..25"),
    ('"cool"', "'living' is a thermostat: use a setpoint 10..25 or one of off, heat, away, home, not \"cool\""),
    ("true", "'living' is a thermostat: use a setpoint 10..25 or one of off, heat, away, home, not true"),
])
def test_a_thermostat_refuses_a_setpoint_beyond_its_limits_and_modes_it_has_no_output_for(
    tmp_path: Path, value: str, reason: str
) -> None:
    (line,) = problems(tmp_path, THERMOSTAT + set_rule("living", value))
    assert line.endswith(f"actions[0].value: {reason}")


@pytest.mark.parametrize("action", ["turn_on", "turn_off", "toggle"])
def test_a_sensor_cannot_be_switched(tmp_path: Path, action: str) -> None:
    text = GOOD.replace('type = "turn_on"\nentity = "hall_light"\nfor = "2m"',
                        f'type = "{action}"\nentity = "front_door"')
    (line,) = problems(tmp_path, text)
    assert line.endswith("actions[0].entity: 'front_door' is a binary_sensor, it cannot be commanded")


VIRTUALS = '[[virtuals]]\nid = "night_mode"\ninitial = false\n[[virtuals]]\nid = "scene"\ninitial = "day"\n'


@pytest.mark.parametrize("value", ['"evening"', "3", "2.5", "true"])
def test_a_virtual_value_takes_any_scalar(tmp_path: Path, value: str) -> None:
    ruleset(tmp_path, VIRTUALS + set_rule("scene", value))


def test_a_virtual_flag_is_a_switch_and_takes_true_or_false(tmp_path: Path) -> None:
    ruleset(tmp_path, VIRTUALS + set_rule("night_mode", "true"))
    (line,) = problems(tmp_path, VIRTUALS + set_rule("night_mode", '"OFF"'))
    assert line.endswith("actions[0].value: 'night_mode' is a switch: use true or false, not \"OFF\"")


def test_a_virtual_value_is_set_not_switched(tmp_path: Path) -> None:
    text = VIRTUALS + GOOD.replace('entity = "hall_light"', 'entity = "scene"')
    (line,) = problems(tmp_path, text)
    assert line.endswith("actions[0].entity: 'scene' is a virtual value, not a switch: use type = \"set\"")


def problems_with(tmp_path: Path, text: str, entities: dict[str, EntitySpec]) -> list[str]:
    with pytest.raises(RulesError) as info:
        ruleset(tmp_path, text, entities)
    return info.value.problems


# The hub and the rule loader agree: a value the loader takes, the hub takes as it is; a value the
# loader refuses, the hub refuses too, or its edge turns it into one the component takes (ON -> true).
AGREEMENT = [
    # entity, value (a bare word or JSON on the wire; TOML in the rule file), the loader takes it
    ("cooler", True, True), ("cooler", False, True), ("cooler", "OFF", False), ("cooler", "on", False),
    ("cooler", 50, False), ("cooler", 2.5, False), ("cooler", "banana", False),
    ("siren", True, True), ("siren", False, True), ("siren", "ON", False), ("siren", 7, False),
    ("hall_light", True, True), ("hall_light", False, True), ("hall_light", 50, False), ("hall_light", "off", False),
    ("dimmer", True, True), ("dimmer", False, True), ("dimmer", 50, True), ("dimmer", 0, True),
    ("dimmer", 100, True), ("dimmer", 100.5, False), ("dimmer", -1, False), ("dimmer", "OFF", False),
    ("dimmer", "bright", False),
    ("living", 22, True), ("living", 10, True), ("living", 25, True), ("living", 9.5, False), ("living", 26, False),
    ("living", "heat", True), ("living", "off", True), ("living", "away", True), ("living", "home", True),
    ("living", "cool", False), ("living", "warm", False), ("living", True, False),
]


@pytest.mark.parametrize(("entity", "value", "loader_takes"), AGREEMENT)
def test_the_hub_and_the_rule_loader_agree_on_what_each_component_takes(
    tmp_path: Path, entity: str, value: bool | float | str, loader_takes: bool
) -> None:
    entities = {**DEMO_ENTITIES, "dimmer": EntitySpec(
        "dimmer", Component.LIGHT, unit="%", safe_value=0.0, minimum=0, maximum=100)}
    toml = json.dumps(value)
    try:
        ruleset(tmp_path, THERMOSTAT + set_rule(entity, toml), entities)
    except RulesError:
        loaded = False
    else:
        loaded = True
    assert loaded is loader_takes

    thermostat = m.Thermostat.model_validate(tomllib.loads(THERMOSTAT)["thermostats"][0])
    spec = {**entities, **{s.id: s for s in thermostat_entities(thermostat)}}[entity]
    hub = thermostat_validator(thermostat) if entity == "living" else validator_for(spec)
    wire = value.encode() if isinstance(value, str) else toml.encode()
    try:
        commanded = validate(hub, decode(wire, 1024))
    except CommandRejected:
        assert not loader_takes, f"the hub refuses {value!r}, which the loader takes"
        return
    if loader_takes:
        assert commanded == value and isinstance(commanded, bool) == isinstance(value, bool)
    else:
        assert accepts(spec, commanded) is None, f"the hub turned {value!r} into {commanded!r}"
        assert isinstance(value, str) and parse_on_off(value) is commanded, "only ON/OFF words change at the edge"


def test_a_rule_stores_text_in_a_virtual_value(tmp_path: Path) -> None:
    h = house(tmp_path, VIRTUALS + set_rule("scene", '"evening"'))
    h.set("hall_motion", True)
    assert h.value("scene") == "evening"
