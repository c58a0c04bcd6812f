"""A refused reload is not only in the local log: an event (so MQTT), ``gateway status`` and health say it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from core.events import Event, Kind
from gateway.app import Gateway
from gateway.config import load_config
from gateway.control import format_status
from gateway.rulesets import load_ruleset
from gateway.service import Service
from rules.watcher import RELOAD_REFUSED, SHOWN_PROBLEMS, refusal_detail, refusal_problems
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder
from tests.rules_config import house_config, write_house_config
from tests.rules_kit import HEADER, house

MOTION_LIGHT = toml.state_rule("motion_light", "hall_motion", True, "turn_on", "hall_light", for_="2m")
DOOR_LIGHT = toml.state_rule("door_light", "front_door", True, "turn_on", "hall_light")
BROKEN = HEADER + toml.state_rule("typo", "hall_motoin", True, "turn_on", "hall_lihgt")


def refusals(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind is Kind.SYSTEM and e.entity == "rules" and e.value == RELOAD_REFUSED]


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "house.toml").write_text(HEADER + MOTION_LIGHT + DOOR_LIGHT)
    gw = Gateway(load_config(write_house_config(tmp_path, rules)), pin_factory=MockFactory(),
                 forwarder=RecordingForwarder())
    gw.start()
    gw.dispatcher.drain()
    return gw


def test_a_refused_reload_is_an_event_for_the_hub_with_the_first_problem_first(gateway: Gateway) -> None:
    forwarder = gateway.forwarder
    assert isinstance(forwarder, RecordingForwarder)
    (gateway.config.rules.dir / "broken.toml").write_text(BROKEN)
    try:
        assert gateway.reload() is False
        gateway.dispatcher.drain()
        [event] = refusals(forwarder.events)
        first = (event.detail or "").splitlines()[0]
        assert "broken.toml" in first and "hall_motoin" in first
        assert len((event.detail or "").splitlines()) == 2  # the unknown trigger entity and action target
    finally:
        gateway.shutdown()


def test_gateway_status_shows_the_refused_reload_and_its_problems_not_just_the_rules_loaded(
    gateway: Gateway,
) -> None:
    (gateway.config.rules.dir / "broken.toml").write_text(BROKEN)
    try:
        gateway.reload()
        gateway.dispatcher.drain()
        status = Service(gateway).snapshot()
        text = format_status(status, now=status["reload"]["at"] + 90)
    finally:
        gateway.shutdown()
    lines = text.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith("last reload: REFUSED at ")]
    assert lines[at].endswith("(90s ago): 2 problems; the rules in force stay")
    assert "hall_motoin" in lines[at + 1] and "hall_lihgt" in lines[at + 2]
    assert lines[at - 1].startswith("rules: 2 loaded")


def test_the_health_report_carries_the_last_reload(gateway: Gateway) -> None:
    forwarder = gateway.forwarder
    assert isinstance(forwarder, RecordingForwarder)
    (gateway.config.rules.dir / "broken.toml").write_text(BROKEN)
    try:
        gateway.reload()
        gateway.dispatcher.drain()
        refused = forwarder.health()["rules"]["last_reload"]
        (gateway.config.rules.dir / "broken.toml").unlink()
        assert gateway.reload() is True
        gateway.dispatcher.drain()
        ok = forwarder.health()["rules"]["last_reload"]
    finally:
        gateway.shutdown()
    assert (refused["result"], refused["count"]) == ("refused", 2)
    assert ok["result"] == "ok" and ok["problems"] == []


def test_a_refused_reload_of_a_changed_rule_file_posts_the_same_event(tmp_path: Path) -> None:
    directory = tmp_path / "rules.d"
    directory.mkdir()
    (directory / "house.toml").write_text(HEADER + MOTION_LIGHT)
    config = house_config(tmp_path, directory)
    (tmp_path / "h").mkdir()
    h = house(tmp_path / "h", MOTION_LIGHT)
    h.engine.watch(config.rules.dir, lambda: load_ruleset(config), interval=5)
    (directory / "bad.toml").write_text(BROKEN)
    h.advance(20)
    [event] = refusals(h.seen)
    assert "bad.toml" in (event.detail or "")


def test_the_house_log_says_a_reload_was_refused_once(
    gateway: Gateway, caplog: pytest.LogCaptureFixture,
) -> None:
    (gateway.config.rules.dir / "broken.toml").write_text(BROKEN)
    try:
        with caplog.at_level(logging.INFO, logger="house"):
            gateway.reload()
            gateway.dispatcher.drain()
    finally:
        gateway.shutdown()
    lines = [r.getMessage() for r in caplog.records if r.name == "house"]
    assert len(lines) == 1 and lines[0].startswith("rules: reload REFUSED: 2 problems; the rules in force stay: ")


def test_a_refusal_with_many_problems_carries_the_first_ones_and_how_many_more() -> None:
    problems = [f"rules.d/x.toml: rule r{i}: unknown entity" for i in range(SHOWN_PROBLEMS + 5)]
    count, shown = refusal_problems(refusal_detail(problems))
    assert count == SHOWN_PROBLEMS + 5 and shown == problems[:SHOWN_PROBLEMS]
    assert refusal_problems(refusal_detail(problems[:2])) == (2, problems[:2])
