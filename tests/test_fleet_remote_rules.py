"""Remote rules: a bundle on ``<base>/rules/set`` is checked like ``gateway check``, applied like a
reload, rolled back if it does not start, answered on ``<base>/rules/result``, and kept for restarts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.config import Config, load_config
from gateway.control import format_status
from gateway.remote_rules import RemoteRules, version_in_force
from gateway.service import Service
from rules.loader import RuleSet, load_rules
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.mqtt_support import Recorder, bridge_of, recorder, running, wait_until
from tests.rules_config import DEVICES
from tests.rules_kit import HEADER

MOTION_LIGHT = toml.state_rule("motion_light", "hall_motion", True, "turn_on", "hall_light", for_="2m")
DOOR_LIGHT = toml.state_rule("door_light", "front_door", True, "turn_on", "hall_light")
TYPO = toml.state_rule("typo", "hall_motoin", True, "turn_on", "hall_light")


def write_config(directory: Path, broker: Broker, gateway_id: str, remote: bool = True) -> Config:
    rules = directory / "rules.d"
    rules.mkdir(exist_ok=True)
    (rules / "house.toml").write_text(HEADER + MOTION_LIGHT)
    path = directory / "config.toml"
    path.write_text(
        f'[gateway]\nid = "{gateway_id}"\nstate_dir = "{directory / "state"}"\n[rules]\ndir = "{rules}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nremote_rules = {str(remote).lower()}\n'
        'reconnect_min = 1\nreconnect_max = 2\n' + DEVICES
    )
    return load_config(path)


def bundle(version: str, **files: str) -> bytes:
    return json.dumps({"version": version, "files": files}).encode()


@pytest.fixture
def fleet_manager(broker: Broker) -> Iterator[Recorder]:
    with recorder(broker.host, broker.port, "gateway/+/rules/result") as manager:
        yield manager


def answer_to(manager: Recorder, gateway: Gateway, payload: bytes) -> dict[str, Any]:
    """The gateway's answer to a bundle, published again until its subscription is in place."""
    answer = wait_until(lambda: _try(manager, gateway, payload), 15, "an answer on rules/result")
    assert answer is not None
    return answer


def connected(gateway: Gateway) -> Gateway:
    wait_until(lambda: bridge_of(gateway).connected, 10, "the gateway connected")
    return gateway


def test_a_bundle_is_checked_applied_and_answered_with_the_version_in_force(
    tmp_path: Path, broker: Broker, fleet_manager: Recorder
) -> None:
    config = write_config(tmp_path, broker, "remote-apply")
    with running(Gateway(config, pin_factory=MockFactory())) as gateway:
        connected(gateway)
        answer = answer_to(fleet_manager, gateway, bundle("v2", **{"house.toml": HEADER + MOTION_LIGHT,
                                                                             "door.toml": HEADER + DOOR_LIGHT}))
        assert (answer["status"], answer["version"], answer["in_force"]) == ("applied", "v2", "v2")
        assert sorted(gateway.engine.compiled) == ["door_light", "motion_light"]
        assert bridge_of(gateway).health()["remote_rules"]["version"] == "v2"
        assert "version v2" in format_status(Service(gateway).snapshot())
    assert (tmp_path / "state" / "remote-rules" / "active" / "door.toml").read_text() == HEADER + DOOR_LIGHT


def _try(manager: Recorder, gateway: Gateway, payload: bytes) -> dict[str, Any] | None:
    """Publish until the gateway's subscription is in place (it subscribes asynchronously)."""
    base = f"gateway/{gateway.config.gateway.id}"
    manager.publish(f"{base}/rules/set", payload)
    try:
        return manager.wait_for(f"{base}/rules/result", 1, timeout=1)[-1].json()  # type: ignore[no-any-return]
    except AssertionError:
        return None


def test_a_bundle_with_a_mistake_is_refused_with_located_problems_and_the_rules_stay(
    tmp_path: Path, broker: Broker, fleet_manager: Recorder
) -> None:
    config = write_config(tmp_path, broker, "remote-refuse")
    with running(Gateway(config, pin_factory=MockFactory())) as gateway:
        connected(gateway)
        answer = answer_to(fleet_manager, gateway, bundle("v3", **{"house.toml": HEADER + TYPO}))
        assert (answer["status"], answer["version"], answer["in_force"]) == ("rejected", "v3", "local")
        assert answer["problems"][0].startswith("house.toml") and "hall_motoin" in answer["problems"][0]
        assert sorted(gateway.engine.compiled) == ["motion_light"]
    assert not (tmp_path / "state" / "remote-rules" / "active").exists()


def test_a_restart_keeps_the_bundle_in_force(tmp_path: Path, broker: Broker, fleet_manager: Recorder) -> None:
    config = write_config(tmp_path, broker, "remote-restart")
    with running(Gateway(config, pin_factory=MockFactory())) as gateway:
        connected(gateway)
        answer_to(fleet_manager, gateway, bundle("v7", **{"door.toml": HEADER + DOOR_LIGHT}))
    restarted = Gateway(config, pin_factory=MockFactory(), mqtt=False)
    assert sorted(restarted.engine.compiled) == ["door_light"]
    assert version_in_force(restarted.config) == "v7"
    assert restarted.config.rules.watch is False


def test_a_local_reload_after_a_bundle_reloads_the_bundle(
    tmp_path: Path, broker: Broker, fleet_manager: Recorder
) -> None:
    config = write_config(tmp_path, broker, "remote-sighup")
    with running(Gateway(config, pin_factory=MockFactory())) as gateway:
        connected(gateway)
        answer_to(fleet_manager, gateway, bundle("v8", **{"door.toml": HEADER + DOOR_LIGHT}))
        reloaded: list[bool] = []
        gateway.dispatcher.on_idle.append(lambda: None if reloaded else reloaded.append(gateway.reload()))  # SIGHUP
        assert wait_until(lambda: reloaded, 10, "the reload") == [True]
        assert sorted(gateway.engine.compiled) == ["door_light"]


def test_with_remote_rules_off_the_local_files_stay_the_source_of_truth(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker, "remote-off", remote=False)
    (tmp_path / "state" / "remote-rules" / "active").mkdir(parents=True)  # a bundle from when it was on
    (tmp_path / "state" / "remote-rules" / "active" / "door.toml").write_text(HEADER + DOOR_LIGHT)
    gateway = Gateway(config, pin_factory=MockFactory(), mqtt=False)
    assert gateway.remote_rules is None
    assert sorted(gateway.engine.compiled) == ["motion_light"]


def test_a_bundle_that_fails_to_start_is_rolled_back(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker, "remote-rollback")
    in_force: list[RuleSet] = [load_rules(config.rules.dir, config.entities())]

    def swap(ruleset: RuleSet) -> None:
        if any(r.rule.id == "door_light" for r in ruleset.rules):
            raise RuntimeError("a controller would not start")
        in_force.append(ruleset)

    remote = RemoteRules(config, current=lambda: in_force[-1], swap=swap, answer=lambda payload: None)
    first = json.loads(remote.handle(bundle("v1", **{"house.toml": HEADER + MOTION_LIGHT})))
    failed = json.loads(remote.handle(bundle("v2", **{"door.toml": HEADER + DOOR_LIGHT})))
    assert first["status"] == "applied"
    assert (failed["status"], failed["in_force"]) == ("failed", "v1")
    assert "a controller would not start" in failed["problems"][0]
    assert [r.rule.id for r in in_force[-1].rules] == ["motion_light"]  # the previous set went back
    assert (remote.rules_dir / "VERSION").read_text().strip() == "v1"
    assert remote.health() == {"version": "v1", "applied": 1, "rejected": 0, "failed": 1}


def test_a_retained_bundle_is_refused(tmp_path: Path, broker: Broker) -> None:
    config = write_config(tmp_path, broker, "remote-retained")
    answers: list[bytes] = []
    remote = RemoteRules(config, current=lambda: load_rules(config.rules.dir, config.entities()),
                         swap=lambda ruleset: None, answer=answers.append)

    class Retained:
        retain = True
        payload = bundle("v1", **{"house.toml": HEADER})

    remote.on_message(None, None, Retained())
    remote.on_idle()
    assert json.loads(answers[0])["status"] == "rejected"


def test_a_bundle_is_handled_when_it_arrives_not_at_the_dispatchers_next_tick(
    tmp_path: Path, broker: Broker, fleet_manager: Recorder
) -> None:
    """The dispatcher of an idle gateway sleeps up to 5 s (docs/performance.md); a bundle wakes it."""
    config = write_config(tmp_path, broker, "remote-wake")
    gateway = Gateway(config, pin_factory=MockFactory())
    gateway.start()
    runner = threading.Thread(target=lambda: gateway.run(tick=3600.0), daemon=True)  # a tick that never comes
    runner.start()
    try:
        connected(gateway)
        answer = answer_to(fleet_manager, gateway, bundle("v2", **{"house.toml": HEADER + DOOR_LIGHT}))
        assert (answer["status"], answer["in_force"]) == ("applied", "v2")
    finally:
        gateway.request_stop()
        runner.join(timeout=5)
        gateway.shutdown()
