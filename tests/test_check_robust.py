"""``gateway check`` on any input: every problem at once, located; never a traceback, never a hang.

The rule loader validates each rule, thermostat, alarm and virtual on its own, so one structural
mistake does not hide the cross-checks of the others; it reads only regular files of a bounded size
from inside the rules directory; deep nesting is refused with a located error. ``config.toml`` gets
the same treatment, and the settings that would make a running gateway misbehave (a rule publishing
on the gateway's own command topics, infinite intervals, an alarm code that cannot be verified) are
refused with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import ConfigError, load_config, state_dir_problems
from gateway.mqtt.topics import Topics
from rules import codes
from rules import model as m
from rules.loader import MAX_FILE_BYTES, MAX_NESTING, RulesError, check_rules, load_rules
from tests import toml_kit as toml
from tests.helpers import write_config
from tests.rules_kit import DEMO_ENTITIES, HEADER

GOOD = toml.state_rule("night_light", "hall_motion", True, "turn_on", "hall_light", for_="2m")
LIGHT_HASH = codes.hash_code("1234", n=2**10)


def rules_dir(tmp_path: Path, **files: str) -> Path:
    directory = tmp_path / "rules.d"
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / f"{name}.toml").write_text(text)
    return directory


def problems_in(directory: Path) -> list[str]:
    with pytest.raises(RulesError) as info:
        load_rules(directory, DEMO_ENTITIES)
    return info.value.problems


# -- one structural error hides nothing ------------------------------------------------------

def test_a_structural_error_in_one_rule_does_not_hide_the_cross_checks_of_the_others(tmp_path: Path) -> None:
    bad_duration = GOOD.replace('for = "2m"', 'for = "2 minutes"')
    unknown_entity = toml.state_rule("porch", "porch_motion", True, "turn_on", "hall_light")
    two_targets = (
        '[[thermostats]]\nid = "living"\nsensor = "hall_light"\nheater = "heater"\n\n'
        '[[thermostats]]\nid = "bedroom"\nsensor = "front_door"\nheater = "cooler"\n'
    )
    directory = rules_dir(tmp_path, house=HEADER + bad_duration + "\n" + unknown_entity + "\n" + two_targets)
    path = directory / "house.toml"
    assert problems_in(directory) == [
        f"{path}: rule night_light: actions[0].for: expected a duration such as '30s', '5m' or '1h30m' "
        "(got '2 minutes')",
        f"{path}: rule porch: triggers[0].entity: unknown entity 'porch_motion'; did you mean 'hall_motion'?",
        f"{path}: thermostats living: sensor: 'hall_light' is a light, expected a sensor",
        f"{path}: thermostats bedroom: sensor: 'front_door' is a binary_sensor, expected a sensor",
    ]


def test_a_broken_alarm_is_reported_once_not_again_by_every_rule_that_names_it(tmp_path: Path) -> None:
    rule = GOOD.replace('type = "turn_on"\nentity = "hall_light"\nfor = "2m"',
                        'type = "alarm"\nalarm = "house"\ncommand = "arm_away"')
    directory = rules_dir(tmp_path, house=HEADER + rule + '\n[[alarms]]\nid = "house"\nexit_delay = "soon"\n')
    (line,) = problems_in(directory)
    assert line.startswith(f"{directory / 'house.toml'}: alarms house: exit_delay: expected a duration")


def test_a_broken_thermostat_hides_no_problem_but_adds_none_for_its_own_entities(tmp_path: Path) -> None:
    rule = GOOD.replace('entity = "hall_motion"', 'entity = "living_setpoint"').replace(
        'entity = "hall_light"', 'entity = "hal_light"')
    thermostat = '[[thermostats]]\nid = "living"\nsensor = "living_temperature"\n'  # neither heater nor cooler
    found = problems_in(rules_dir(tmp_path, house=HEADER + rule + "\n" + thermostat))
    assert len(found) == 2
    assert "thermostats living: set 'heater', 'cooler' or both" in found[0]
    assert "rule night_light: actions[0].entity: unknown entity 'hal_light'" in found[1]


def test_a_wrong_version_is_reported_with_the_problems_of_the_rules(tmp_path: Path) -> None:
    text = "version = 2\n" + GOOD.replace('entity = "hall_light"', 'entity = "hal_light"')
    found = problems_in(rules_dir(tmp_path, house=text))
    assert any(line.endswith("version: Input should be 1 (got 2)") for line in found)
    assert any("actions[0].entity: unknown entity 'hal_light'" in line for line in found)


def test_a_table_that_should_be_a_list_of_tables_is_located(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path, house=HEADER + 'rules = "everything"\n')
    assert problems_in(directory) == [
        f"{directory / 'house.toml'}: rules: expected an array of tables ([[rules]]) (got 'everything')"
    ]


# -- files that are not rule files -----------------------------------------------------------

def test_a_fifo_named_like_a_rule_file_is_refused_without_being_opened(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path, house=HEADER + GOOD)
    os.mkfifo(directory / "pipe.toml")  # opening it for reading would wait for a writer forever
    assert problems_in(directory) == [f"{directory / 'pipe.toml'}: not a regular file (a FIFO): remove it"]


def test_a_link_to_a_device_is_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    (directory / "zero.toml").symlink_to("/dev/zero")
    (line,) = problems_in(directory)
    assert line.startswith(f"{directory / 'zero.toml'}: a link out of the rules directory (to /dev/zero)")


def test_a_device_node_is_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    os.mknod(directory / "null.toml", 0o600 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
    assert problems_in(directory) == [f"{directory / 'null.toml'}: not a regular file (a device): remove it"]


def test_a_socket_is_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(directory / "s.toml"))
        assert problems_in(directory) == [f"{directory / 's.toml'}: not a regular file (a socket): remove it"]


def test_a_directory_named_like_a_rule_file_is_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    (directory / "old.toml").mkdir()
    assert problems_in(directory) == [f"{directory / 'old.toml'}: not a regular file (a directory): remove it"]


def test_a_link_to_a_rule_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    (tmp_path / "elsewhere.toml").write_text(HEADER + GOOD)
    (directory / "house.toml").symlink_to(tmp_path / "elsewhere.toml")
    (line,) = problems_in(directory)
    target = tmp_path / "elsewhere.toml"
    assert line == (f"{directory / 'house.toml'}: a link out of the rules directory (to {target}): "
                    "copy the file into the directory instead")


def test_a_link_to_a_rule_file_inside_the_directory_loads(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    (directory / "real").mkdir()
    (directory / "real" / "house.toml").write_text(HEADER + GOOD)
    (directory / "house.toml").symlink_to(directory / "real" / "house.toml")
    assert [r.rule.id for r in load_rules(directory, DEMO_ENTITIES)] == ["night_light"]


def test_a_dangling_link_is_located(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    (directory / "gone.toml").symlink_to(directory / "nowhere.toml")
    (line,) = problems_in(directory)
    assert line.startswith(f"{directory / 'gone.toml'}: cannot read:")


def test_a_huge_file_is_refused_after_reading_no_more_than_the_bound(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path)
    (directory / "huge.toml").write_text(HEADER + "# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    assert problems_in(directory) == [
        f"{directory / 'huge.toml'}: too large (over {MAX_FILE_BYTES // 1024} KiB); a rule file is a few KiB"
    ]


def test_an_unreadable_file_is_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, whom file permissions do not stop: the refusal comes from the kernel's answer.
    directory = rules_dir(tmp_path, house=HEADER + GOOD)
    real_open = os.open

    def refuse(path: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        if str(path).endswith("house.toml"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert problems_in(directory) == [f"{directory / 'house.toml'}: cannot read: Permission denied"]


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 5000])
def test_deeply_nested_rule_files_are_refused_with_a_located_error(tmp_path: Path, depth: int) -> None:
    directory = rules_dir(tmp_path, deep=HEADER + "x = " + "[" * depth + "]" * depth + "\n")
    (line,) = problems_in(directory)
    assert line.startswith(f"{directory / 'deep.toml'}: ")
    assert "nested too deeply" in line


def test_deeply_nested_conditions_are_refused_with_a_located_error(tmp_path: Path) -> None:
    condition = '{ type = "state", entity = "hall_motion", equals = true }'
    for _ in range(MAX_NESTING):
        condition = '{ type = "not", conditions = [' + condition + "] }"
    directory = rules_dir(tmp_path, deep=HEADER + _with_conditions(condition))
    (line,) = problems_in(directory)
    assert line.startswith(f"{directory / 'deep.toml'}: nested too deeply")


def _with_conditions(condition: str) -> str:
    data = ('[[rules]]\nid = "deep"\nconditions = [' + condition + ']\n'
            'triggers = [{ type = "start" }]\nactions = [{ type = "turn_off", entity = "hall_light" }]\n')
    tomllib.loads(data)  # the test's own TOML is valid
    return data


def test_check_rules_never_raises_on_a_fifo(tmp_path: Path) -> None:
    directory = rules_dir(tmp_path, house=HEADER + GOOD)
    os.mkfifo(directory / "pipe.toml")
    ruleset, lines = check_rules(directory, DEMO_ENTITIES)
    assert ruleset is None and len(lines) == 1


# -- fuzz: the loaders return or raise the documented error only -----------------------------

NESTED = st.recursive(st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
                      lambda children: st.one_of(st.lists(children, max_size=3),
                                                 st.dictionaries(st.text(max_size=5), children, max_size=3)),
                      max_leaves=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_rule_file_load_or_give_located_errors(tmp_path: Path, raw: bytes) -> None:
    directory = tmp_path / "fuzz-bytes"
    directory.mkdir(exist_ok=True)
    (directory / "f.toml").write_bytes(raw)
    try:
        load_rules(directory, DEMO_ENTITIES)
    except RulesError as exc:
        assert exc.problems and all(p.startswith(f"{directory / 'f.toml'}: ") for p in exc.problems)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 3000), kind=st.sampled_from(["array", "table", "both"]))
def test_any_nesting_in_a_rule_file_loads_or_gives_located_errors(tmp_path: Path, depth: int, kind: str) -> None:
    opener, closer = {"array": ("[", "]"), "table": ("{ a = ", " }"), "both": ("[{ a = ", " }]")}[kind]
    text = HEADER + "x = " + opener * depth + ("" if kind == "array" else "1") + closer * depth + "\n"
    directory = tmp_path / "fuzz-deep"
    directory.mkdir(exist_ok=True)
    (directory / "f.toml").write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(directory, DEMO_ENTITIES)
    assert all(p.startswith(f"{directory / 'f.toml'}: ") for p in info.value.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_config_load_or_give_a_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems and all(p.startswith(f"{path}: ") for p in exc.problems)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=st.sampled_from(["gateway", "mqtt", "outbox", "rules", "bus"]), body=NESTED)
def test_any_tree_in_a_config_section_loads_or_gives_a_config_error(
    tmp_path: Path, section: str, body: object
) -> None:
    data = {"gateway": {"id": "fuzz"}, section: body}
    path = tmp_path / "fuzz.toml"
    path.write_text(_toml_doc(data))
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems and all(p.startswith(f"{path}: ") for p in exc.problems)


def _toml_doc(data: dict[str, object]) -> str:
    import json

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in data.items())


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 5000])
def test_a_deeply_nested_config_is_refused_with_a_located_error(tmp_path: Path, depth: int) -> None:
    path = write_config(tmp_path, '[gateway]\nid = "deep"\n[mqtt]\nhost = ' + "[" * depth + "]" * depth + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}: ") and "nested too deeply" in line


def test_a_huge_config_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[gateway]\nid = "big"\n' + "# padding\n" * 200_000)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}: too large")


def test_a_config_linked_to_dev_zero_is_refused_not_read_forever(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (line,) = info.value.problems
    assert line.startswith(f"{path}: ")



# -- alarm code hashes that could never be verified ------------------------------------------

def stored(n: int, r: int = 8, p: int = 1, salt: bytes = b"s" * 16, digest: bytes = b"d" * 32) -> str:
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def alarm_problems(tmp_path: Path, code_hash: str) -> list[str]:
    return problems_in(rules_dir(tmp_path, house=HEADER + f'[[alarms]]\nid = "house"\ncode_hash = "{code_hash}"\n'))


def test_a_code_hash_whose_scrypt_memory_exceeds_what_can_be_verified_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    (line,) = alarm_problems(tmp_path, stored(2**15))
    assert "alarms house: code_hash: scrypt N = 32768, r = 8, p = 1 would need 32.0 MiB to check a code" in line
    assert "no code could ever be verified" in line
    with pytest.raises(ValueError, match="memory limit exceeded"):  # what every arm and disarm did
        hashlib.scrypt(b"1234", salt=b"s" * 16, n=2**15, r=8, p=1, maxmem=codes.MAX_MEMORY)


def test_a_code_hash_with_n_not_a_power_of_two_is_refused_with_the_reason(tmp_path: Path) -> None:
    (line,) = alarm_problems(tmp_path, stored(1000))
    assert "code_hash: scrypt N = 1000 is not a power of two" in line


def test_a_code_hash_with_n_too_large_for_its_r_is_refused(tmp_path: Path) -> None:
    (line,) = alarm_problems(tmp_path, stored(2**16, r=1))
    assert "code_hash: scrypt N = 65536 is too large for r = 1" in line


def test_a_code_hash_too_costly_to_check_on_the_board_is_refused(tmp_path: Path) -> None:
    (line,) = alarm_problems(tmp_path, stored(2**14, r=8, p=16))
    assert "would make every code check take too long on the board" in line


def test_a_code_hash_too_short_to_tell_codes_apart_is_refused(tmp_path: Path) -> None:
    (line,) = alarm_problems(tmp_path, stored(2**10, digest=b"d"))
    assert "the hash is 1 bytes; 16 to 64 are needed" in line


def test_the_hash_the_tool_prints_is_accepted_and_verifies() -> None:
    assert codes.check_hash_format(codes.hash_code("1234"))[:3] == (2**14, 8, 1)
    assert codes.verify_code("1234", LIGHT_HASH) and not codes.verify_code("4321", LIGHT_HASH)


@pytest.mark.parametrize(("n", "r", "p"), [
    (n, r, p) for n, r, p in itertools.product([2**k for k in (1, 8, 12, 14, 15, 16, 17)], (1, 2, 8, 16, 32), (1, 2))
])
def test_every_accepted_code_hash_verifies_and_one_refused_for_memory_could_not(n: int, r: int, p: int) -> None:
    try:
        codes.check_hash_format(stored(n, r, p))
    except ValueError as exc:
        if "MiB" in str(exc) or "too large for r" in str(exc):
            with pytest.raises(ValueError):
                hashlib.scrypt(b"1234", salt=b"s" * 16, n=n, r=r, p=p, dklen=32, maxmem=codes.MAX_MEMORY)
    else:
        codes.verify_code("1234", stored(n, r, p))  # does not raise


# -- risky settings ---------------------------------------------------------------------------

PUBLISH = GOOD.replace('type = "turn_on"\nentity = "hall_light"\nfor = "2m"',
                       'type = "publish"\ntopic = "TOPIC"\npayload = "on"')


@pytest.mark.parametrize("topic", ["set/hall_light", "set/_marker", "status", "health", "availability/hall_light",
                                   "state/hall_light", "result/hall_light", "event/hall_motion", "set"])
def test_a_rule_may_not_publish_on_the_gateways_own_topics(tmp_path: Path, topic: str) -> None:
    (line,) = problems_in(rules_dir(tmp_path, house=HEADER + PUBLISH.replace("TOPIC", topic)))
    first = topic.split("/", maxsplit=1)[0]
    assert f"rule night_light: actions[0].topic: '{topic}' is under the gateway's own '{first}' topic" in line


def test_a_publish_on_set_says_it_would_command_the_gateway(tmp_path: Path) -> None:
    (line,) = problems_in(rules_dir(tmp_path, house=HEADER + PUBLISH.replace("TOPIC", "set/heater")))
    assert "it would command the gateway itself" in line


@pytest.mark.parametrize("topic", ["notify/leak", "settings/x", "statuses", "events/log"])
def test_a_rule_may_publish_beside_the_gateways_own_topics(tmp_path: Path, topic: str) -> None:
    assert len(load_rules(rules_dir(tmp_path, house=HEADER + PUBLISH.replace("TOPIC", topic)), DEMO_ENTITIES)) == 1


def test_the_reserved_topics_are_every_first_level_of_the_gateways_own_tree() -> None:
    topics = Topics("base")
    own = [topics.status, topics.health, topics.set_filter, topics.marker, topics.event("e"), topics.state("e"),
           topics.availability("e"), topics.command("e"), topics.result("e")]
    assert {topic.split("/")[1] for topic in own} == m.RESERVED_TOPICS


@pytest.mark.parametrize(("setting", "value"), [("hysteresis", "inf"), ("setpoint", "nan"), ("hysteresis", "nan")])
def test_a_thermostat_number_may_not_be_infinite_or_nan(tmp_path: Path, setting: str, value: str) -> None:
    text = f'[[thermostats]]\nid = "living"\nsensor = "living_temperature"\nheater = "heater"\n{setting} = {value}\n'
    (line,) = problems_in(rules_dir(tmp_path, house=HEADER + text))
    assert f"thermostats living: {setting}: Input should be a finite number" in line


CONFIG = '[gateway]\nid = "robust"\n'


def config_problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, CONFIG + body))
    return info.value.problems


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_an_infinite_or_nan_health_interval_is_refused(tmp_path: Path, value: str) -> None:
    (line,) = config_problems(tmp_path, f"[mqtt]\nhealth_interval = {value}\n")
    assert line.startswith(f"{tmp_path / 'config.toml'}: mqtt.health_interval: Input should be a finite number")


@pytest.mark.parametrize(("section", "key"), [("mqtt", "reconnect_min"), ("mqtt", "reconnect_max"),
                                              ("mqtt", "drain_rate"), ("outbox", "batch_ms")])
def test_no_float_of_config_toml_may_be_infinite_or_nan(tmp_path: Path, section: str, key: str) -> None:
    for value in ("inf", "nan"):
        (line,) = config_problems(tmp_path, f"[{section}]\n{key} = {value}\n")
        assert f"{section}.{key}: Input should be a finite number" in line


def test_reconnect_min_above_reconnect_max_is_refused(tmp_path: Path) -> None:
    (line,) = config_problems(tmp_path, "[mqtt]\nreconnect_min = 120\nreconnect_max = 60\n")
    assert line == (f"{tmp_path / 'config.toml'}: mqtt: reconnect_min (120 s) is above reconnect_max (60 s): "
                    "the backoff grows from the first to the second")


def test_a_file_in_the_way_of_the_state_dir_is_reported_for_check(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("not a directory")
    config = load_config(write_config(tmp_path, CONFIG + 'state_dir = "state"\n'))
    assert state_dir_problems(config) == [
        f"{tmp_path / 'config.toml'}: gateway.state_dir: {tmp_path / 'state'} is a file, not a directory: "
        "move it away or choose another state_dir"
    ]


def test_a_file_in_the_way_of_a_parent_of_the_state_dir_is_reported_for_check(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("not a directory")
    config = load_config(write_config(tmp_path, CONFIG + 'state_dir = "var/lib/gateway"\n'))
    (line,) = state_dir_problems(config)
    assert f"{tmp_path / 'var/lib/gateway'} cannot be created: {tmp_path / 'var'} is a file, not a directory" in line


def test_a_state_dir_that_does_not_exist_yet_is_fine(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, CONFIG + 'state_dir = "state/gateway"\n'))
    assert state_dir_problems(config) == []


# -- the command an installer runs ------------------------------------------------------------

def run_check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent, check=False)


def test_gateway_check_reports_a_fifo_among_the_rule_files_and_returns(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG, rules=HEADER + GOOD.replace('for = "2m"', 'for = "2 minutes"'))
    os.mkfifo(tmp_path / "rules.d" / "pipe.toml")
    result = run_check(config)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'rules.d' / 'pipe.toml'}: not a regular file (a FIFO): remove it",
        f"{tmp_path / 'rules.d' / 'test.toml'}: rule night_light: actions[0].for: expected a duration such as "
        "'30s', '5m' or '1h30m' (got '2 minutes')",
    ]


def test_gateway_check_reports_a_deeply_nested_config_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG + "[mqtt]\nhost = " + "[" * 5000 + "]" * 5000 + "\n")
    result = run_check(config)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "nested too deeply" in result.stderr


@pytest.mark.parametrize("setting", ["stale_after = inf", "offset = nan"])
def test_a_device_setting_of_inf_or_nan_is_refused(tmp_path: Path, setting: str) -> None:
    """A sensor never stale (``stale_after = inf``) would hold a dead reading for ever; a NaN offset
    would make every reading NaN."""
    path = tmp_path / "config.toml"
    path.write_text('[gateway]\nid = "x"\n[[devices]]\nid = "water"\ndriver = "onewire.ds18b20"\n'
                    f'sensor = "28-0316a2795aff"\n{setting}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "devices[0]" in str(caught.value) and setting.split(maxsplit=1)[0] in str(caught.value)


def test_gateway_check_fails_when_a_file_is_in_the_way_of_the_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state").write_text("not a directory")
    path = write_config(tmp_path, CONFIG + 'state_dir = "state"\n', rules="version = 1\n")
    assert main(["check", "--config", str(path)]) == 1
    assert "gateway.state_dir" in capsys.readouterr().err


def test_the_topic_rules_may_not_publish_on_is_the_gateways_event_stream() -> None:
    # rules.model sits below the gateway's layer and cannot import its topics: the two names must stay one.
    assert Topics("gateway/house").events == f"gateway/house/{m.EVENT_STREAM}"


def test_a_rule_may_not_publish_on_the_event_stream(tmp_path: Path) -> None:
    # <base>/events is the gateway's event stream ([mqtt] event_batches): the window sends its rows as JSON arrays of
    # events, so a rule's message there would be spliced into an array (``[{...},on]``: the hub can parse none of
    # it) and the hub would take it for the gateway's own events.
    (line,) = problems_in(rules_dir(tmp_path, house=HEADER + PUBLISH.replace("TOPIC", "events")))
    assert "rule night_light: actions[0].topic: 'events' is the gateway's own event stream" in line
