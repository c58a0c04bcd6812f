"""The engine as a whole: atomic reload, scale, timers and state across restarts, traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.events import Kind
from gateway.assembly import build_engine
from gateway.rulesets import load_ruleset
from rules.engine import STATE_FILE
from rules.loader import RulesError
from rules.timers import TimerKey
from rules.traces import format_traces, read_traces
from tests import toml_kit as toml
from tests.rules_config import house_config
from tests.rules_kit import HEADER, House, house, ruleset

DOOR_HELD = toml.state_rule("door_left_open", "front_door", True, "turn_on", "siren", held_for="5m")
MOTION_LIGHT = toml.state_rule("motion_light", "hall_motion", True, "turn_on", "hall_light", for_="2m")


def write_rules(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "rules.d"
    directory.mkdir(exist_ok=True)
    (directory / "house.toml").write_text(HEADER + text)
    return directory


# -- reload ----------------------------------------------------------------------------------


def test_reload_keeps_timers_of_unchanged_rules(tmp_path: Path) -> None:
    h = house(tmp_path, DOOR_HELD + MOTION_LIGHT)
    h.set("front_door", True)
    h.set("hall_motion", True)
    h.advance(60)
    changed = MOTION_LIGHT.replace('for = "2m"', 'for = "3m"')
    report = h.engine.replace(ruleset(tmp_path, DOOR_HELD + changed))
    assert (report.added, report.changed, report.removed) == ([], ["motion_light"], [])
    h.advance(240)
    assert h.commands("siren") == [("siren", True)]  # the unchanged rule's 'for' survived the reload
    assert h.commands("hall_light") == [("hall_light", True)]  # the changed rule's pulse was dropped


def test_a_numeric_trigger_whose_for_a_reload_removed_no_longer_holds_nor_fires_from_the_old_wait(
    tmp_path: Path,
) -> None:
    held = ('\n[[rules]]\nid = "warm"\n[[rules.triggers]]\ntype = "numeric"\nentity = "living_temperature"\n'
            'above = 25\nfor = "1m"\n[[rules.actions]]\ntype = "turn_on"\nentity = "heater"\n')
    h = house(tmp_path, held)
    h.set("living_temperature", 20.0)
    h.set("living_temperature", 26.0)  # the crossing: the 'for' starts waiting
    assert h.engine.timers.get(TimerKey.hold("warm", 0)) is not None
    h.engine.replace(ruleset(tmp_path, held.replace('for = "1m"\n', "")))
    assert h.engine.timers.get(TimerKey.hold("warm", 0)) is None
    h.set("living_temperature", 26.5)  # the reloaded rule's first value: inside, but no crossing
    h.set("living_temperature", 20.0)  # clearing: no wait to cancel, nothing fires later
    h.advance(120)
    assert h.commands("heater") == []
    h.set("living_temperature", 26.0)  # the next crossing fires at once
    assert h.commands("heater") == [("heater", True)]


def test_reload_reports_added_and_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = house(tmp_path, DOOR_HELD)
    with caplog.at_level("DEBUG", logger="rules.engine"):  # at INFO, the house log says it (gateway/houselog.py)
        report = h.engine.replace(ruleset(tmp_path, MOTION_LIGHT))
    assert (report.added, report.removed) == (["motion_light"], ["door_left_open"])
    assert "1 added ['motion_light']" in caplog.text and "1 removed ['door_left_open']" in caplog.text


def test_a_bad_rule_set_leaves_the_old_one_running(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, MOTION_LIGHT)
    config = house_config(tmp_path, directory)
    (tmp_path / "h").mkdir()
    h = house(tmp_path / "h", MOTION_LIGHT)
    (directory / "broken.toml").write_text(HEADER + '[[rules]]\nid = "x"\n')
    with pytest.raises(RulesError) as info:
        h.engine.reload(load_ruleset(config))
    assert "rule x: triggers: Field required" in info.value.problems[0]
    h.set("hall_motion", True)
    assert h.commands("hall_light") == [("hall_light", True)]


def test_reload_through_the_bus_swaps_on_the_dispatcher_thread(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, MOTION_LIGHT)
    config = house_config(tmp_path, directory)
    (tmp_path / "h").mkdir()
    h = house(tmp_path / "h", DOOR_HELD)
    h.engine.reload(load_ruleset(config))
    assert [r.id for r in h.engine.rules] == ["door_left_open"]
    h.advance(0)
    assert [r.id for r in h.engine.rules] == ["motion_light"]


# -- scale ---------------------------------------------------------------------------------


def many_rules(count: int) -> str:
    return "".join(
        f'[[virtuals]]\nid = "flag_{i}"\n[[rules]]\nid = "r{i}"\n[[rules.triggers]]\ntype = "state"\n'
        f'entity = "flag_{i}"\nto = true\n[[rules.actions]]\ntype = "turn_on"\nentity = "hall_light"\n'
        for i in range(count)
    ) + MOTION_LIGHT


def test_an_event_costs_only_the_rules_that_watch_its_entity(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    small = house(tmp_path / "a", many_rules(10))
    large = house(tmp_path / "b", many_rules(1000))
    for h in (small, large):
        before = h.engine.evaluations
        for i in range(100):
            h.set("hall_motion", i % 2 == 0)
        assert h.engine.evaluations - before == 100


# -- timers and state across a restart ------------------------------------------------------


def restart(tmp_path: Path, text: str, old: House, away: float) -> House:
    """Stop ``old``, let ``away`` seconds pass (wall clock), start a new gateway on the same state dir."""
    old.engine.stop()
    wall = old.clock.time() + away
    (tmp_path / "next").mkdir(exist_ok=True)
    new = house(tmp_path / "next", text, state_dir=tmp_path / "state", begin=False)
    new.clock.set_wall(wall)
    new.start()
    return new


@pytest.fixture(autouse=True)
def _other_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The virtual clocks of two gateways are unrelated: measure the time away on the wall clock."""
    monkeypatch.setattr("rules.timers.boot_id", lambda: None)


def test_pending_for_resumes_after_restart_if_state_still_holds(tmp_path: Path) -> None:
    h = house(tmp_path, DOOR_HELD, state_dir=tmp_path / "state")
    h.set("front_door", True)
    h.advance(120)
    new = restart(tmp_path, DOOR_HELD, h, away=60)
    new.set("front_door", True)
    new.advance(119)
    assert new.commands("siren") == []
    new.advance(1)
    assert new.commands("siren") == [("siren", True)]


def test_pending_for_is_dropped_if_state_no_longer_holds(tmp_path: Path) -> None:
    h = house(tmp_path, DOOR_HELD, state_dir=tmp_path / "state")
    h.set("front_door", True)
    h.advance(120)
    new = restart(tmp_path, DOOR_HELD, h, away=60)
    new.set("front_door", False)
    new.advance(600)
    assert new.commands("siren") == []


def test_timer_missed_within_grace_fires_at_once(tmp_path: Path) -> None:
    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    h.set("hall_motion", True)
    h.advance(60)
    new = restart(tmp_path, MOTION_LIGHT, h, away=120)  # the light should have gone off 60 s ago
    new.advance(0)
    assert new.commands("hall_light") == [("hall_light", None)]


def test_timer_missed_beyond_grace_is_dropped(tmp_path: Path) -> None:
    text = MOTION_LIGHT.replace('id = "motion_light"', 'id = "motion_light"\nrestart_grace = "1m"')
    h = house(tmp_path, text, state_dir=tmp_path / "state")
    h.set("hall_motion", True)
    new = restart(tmp_path, text, h, away=3600)
    new.advance(10)
    assert new.commands("hall_light") == []
    assert "dropped after restart" in new.engine.traces.get("motion_light")[-1]["notes"][0]


def test_timers_of_a_changed_rule_are_dropped_at_restart(tmp_path: Path) -> None:
    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    h.set("hall_motion", True)
    new = restart(tmp_path, MOTION_LIGHT.replace("2m", "3m"), h, away=10)
    new.advance(600)
    assert new.commands("hall_light") == []


def test_delay_in_progress_resumes_after_restart(tmp_path: Path) -> None:
    text = """
[[rules]]
id = "later"
[[rules.triggers]]
type = "state"
entity = "hall_motion"
to = true
[[rules.actions]]
type = "turn_on"
entity = "heater"
[[rules.actions]]
type = "delay"
for = "10m"
[[rules.actions]]
type = "turn_off"
entity = "heater"
"""
    h = house(tmp_path, text, state_dir=tmp_path / "state")
    cause = h.set("hall_motion", True)
    h.advance(300)
    new = restart(tmp_path, text, h, away=100)
    new.advance(199)
    assert new.commands("heater") == []
    new.advance(1)
    off = [e for e in new.actions() if e.entity == "heater" and e.kind is Kind.COMMAND]
    assert [(e.value, e.rule, e.cause) for e in off] == [(False, "later", cause.id)]


def test_virtual_entities_come_back_as_they_were(tmp_path: Path) -> None:
    text = '[[virtuals]]\nid = "holiday"\n[[virtuals]]\nid = "scratch"\nrestore = false\n'
    h = house(tmp_path, text, state_dir=tmp_path / "state")
    h.command("holiday", True)
    h.command("scratch", True)
    new = restart(tmp_path, text, h, away=5)
    assert new.value("holiday") is True
    assert new.value("scratch") is False


def test_state_file_is_written_soon_after_a_change(tmp_path: Path) -> None:
    h = house(tmp_path, DOOR_HELD, state_dir=tmp_path / "state")
    h.set("front_door", True)
    h.advance(3)
    saved = json.loads((tmp_path / "state" / STATE_FILE).read_text())
    assert [t["key"] for t in saved["timers"]] == ["hold:door_left_open:0"]
    assert saved["timers"][0]["remaining"] == pytest.approx(297, abs=1)


DELAYED_OFF = """
[[rules]]
id = "later"
[[rules.triggers]]
type = "state"
entity = "hall_motion"
to = true
[[rules.actions]]
type = "turn_on"
entity = "heater"
[[rules.actions]]
type = "delay"
for = "10m"
[[rules.actions]]
type = "turn_off"
entity = "heater"
"""


def test_a_state_file_written_by_the_previous_version_restores_its_timers(tmp_path: Path) -> None:
    """The keys of the state file are a format installed gateways already wrote: a ``for``, a pulse and a
    delay saved as ``hold:<rule>:<n>``, ``pulse:<rule>:<entity>`` and ``run:<rule>`` still come back."""
    text = DOOR_HELD + MOTION_LIGHT + DELAYED_OFF
    fingerprints = {loaded.rule.id: loaded.fingerprint for loaded in ruleset(tmp_path, text).rules}
    wall = 1_767_225_600.0
    saved = {
        "version": 1,
        "anchor": {"wall": wall - 10, "mono": 5000.0, "boot": None},
        "timers": [
            {"key": "hold:door_left_open:0", "owner": "door_left_open",
             "fingerprint": fingerprints["door_left_open"], "remaining": 60.0,
             "data": {"cause": "old-1", "fields": {"entity": "front_door", "value": True, "previous": False,
                                                   "rule": "door_left_open", "cause": "old-1", "ts": wall - 200}}},
            {"key": "pulse:motion_light:hall_light", "owner": "motion_light",
             "fingerprint": fingerprints["motion_light"], "remaining": 40.0,
             "data": {"entity": "hall_light", "cause": "old-2"}},
            {"key": "run:later", "owner": "later", "fingerprint": fingerprints["later"], "remaining": 70.0,
             "data": {"cause": "old-3", "fields": {}, "index": 2}},
        ],
        "virtuals": {},
        "controllers": {},
    }
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / STATE_FILE).write_text(json.dumps(saved))
    (tmp_path / "next").mkdir()
    new = house(tmp_path / "next", text, state_dir=tmp_path / "state", begin=False)
    new.clock.set_wall(wall)
    new.start()
    new.set("front_door", True)
    new.advance(30)
    assert [(e.entity, e.value, e.cause) for e in new.actions() if e.kind is Kind.COMMAND] == [
        ("hall_light", None, "old-2")]
    new.advance(30)
    assert new.commands("siren") == [("siren", True)] and new.commands("heater") == [("heater", False)]
    new.advance(3)
    assert json.loads((tmp_path / "state" / STATE_FILE).read_text())["timers"] == []


@pytest.mark.parametrize("text", ["hold:door_left_open:0", "run:later", "pulse:motion_light:hall_light",
                                  "alarm:house_alarm"])
def test_a_timer_key_reads_back_what_it_writes(text: str) -> None:
    assert str(TimerKey.parse(text)) == text


@pytest.mark.parametrize("text", ["", "hold", "hold:door_left_open", "hold:door_left_open:x", "nap:r", "pulse:r"])
def test_a_timer_key_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a timer key"):
        TimerKey.parse(text)


# -- traces -----------------------------------------------------------------------------------


def test_traces_survive_a_restart_and_print(tmp_path: Path) -> None:
    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    h.set("hall_motion", True)
    h.engine.stop()
    traces = read_traces(tmp_path / "state")
    text = format_traces(traces, "motion_light")
    assert "motion_light: ran" in text and "action: turn_on hall_light for 120s" in text
    new = restart(tmp_path, MOTION_LIGHT, h, away=1)
    assert new.engine.traces.get("motion_light")[0]["result"] == "ran"


def test_traces_keep_the_last_n(tmp_path: Path) -> None:
    h = house(tmp_path, MOTION_LIGHT)
    for i in range(50):
        h.set("hall_motion", i % 2 == 0)
    assert len(h.engine.traces.get("motion_light")) == 20


def test_build_engine_from_config(tmp_path: Path) -> None:
    directory = write_rules(tmp_path, MOTION_LIGHT)
    config = house_config(tmp_path, directory)
    h = house(tmp_path, "")
    engine = build_engine(config, h.dispatcher)
    assert engine.tz.key == "Europe/London" and engine.state_dir == tmp_path / "state"
    assert [r.id for r in engine.rules] == ["motion_light"]
    assert Kind.TIMER  # keeps the import honest


def test_a_changed_rule_file_is_reloaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = write_rules(tmp_path, DOOR_HELD)
    config = house_config(tmp_path, directory)
    (tmp_path / "h").mkdir()
    h = house(tmp_path / "h", DOOR_HELD)
    h.engine.watch(config.rules.dir, lambda: load_ruleset(config), interval=5)
    (directory / "more.toml").write_text(HEADER + MOTION_LIGHT)
    h.advance(5)
    assert [r.id for r in h.engine.rules] == ["door_left_open", "motion_light"]
    (directory / "bad.toml").write_text(HEADER + "[[rules]]\n")
    with caplog.at_level("ERROR"):
        h.advance(20)
    assert caplog.text.count("reload refused") == 1
    assert [r.id for r in h.engine.rules] == ["door_left_open", "motion_light"]


def test_print_traces_for_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rules.traces import print_traces

    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    h.set("hall_motion", True)
    h.engine.stop()
    assert print_traces(tmp_path / "state", "motion_light") == 0
    assert "motion_light: ran" in capsys.readouterr().out
    assert print_traces(tmp_path / "state", "nope") == 1


def test_traces_are_written_at_most_once_a_minute(tmp_path: Path) -> None:
    from rules.traces import TRACES_FILE

    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    h.set("hall_motion", True)
    h.advance(3)
    assert not (tmp_path / "state" / TRACES_FILE).exists()
    h.advance(60)
    assert read_traces(tmp_path / "state")["motion_light"][0]["result"] == "ran"


def test_the_traces_file_keeps_its_format(tmp_path: Path) -> None:
    """rules-traces.json is read by ``gateway traces`` and by people: one JSON object per evaluation."""
    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    cause = h.set("hall_motion", True)
    h.engine.stop()
    [trace] = read_traces(tmp_path / "state")["motion_light"]
    assert trace == {
        "ts": 1_767_225_600.0, "rule": "motion_light", "trigger": "state hall_motion None -> True",
        "cause": cause.id, "result": "ran", "conditions": [], "actions": ["turn_on hall_light for 120s (in force)"],
        "time": "2026-01-01T00:00:00+00:00",
    }


def test_traces_written_by_the_previous_version_are_read_back_unchanged(tmp_path: Path) -> None:
    old = {"ts": 1_767_225_000.0, "rule": "motion_light", "trigger": "state hall_motion False -> True",
           "cause": "old-7", "result": "conditions failed", "conditions": [["time after 22:00:00", False]],
           "actions": [], "notes": ["wall clock not synchronised: time conditions are false"],
           "time": "2025-12-31T23:50:00+00:00"}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "rules-traces.json").write_text(json.dumps({"motion_light": [old]}))
    h = house(tmp_path, MOTION_LIGHT, state_dir=tmp_path / "state")
    h.engine.stop()
    assert read_traces(tmp_path / "state")["motion_light"][0] == old
