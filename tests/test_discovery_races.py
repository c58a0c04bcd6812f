"""A reload and a (re)connection both re-announce discovery, from two threads (the caller's and the uplink's
network thread): their announcements must not interleave, or the hub keeps an entity a reload removed while the
gateway's memory of what it announced (``discovery.json``) says it is gone, or that memory is left corrupt."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.mqtt.discovery import Discovery
from tests.mqtt_support import make_bridge, make_config

HOLD_S = 0.5
"""How long the first announcement waits inside for a second one to come in (it cannot, once they are serialised)."""


def test_a_reload_and_a_reconnection_announce_discovery_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retained = make_bridge(make_config("races", tmp_path, 1)).bridge.retained
    retained.republish(removals=True)  # announced once: discovery.json names every entity
    inside: list[str] = []
    overlapped: list[bool] = []
    meet = threading.Barrier(2, timeout=HOLD_S)
    configs = Discovery.configs

    def slow_configs(self: Discovery, *args: Any, **kwargs: Any) -> Any:
        overlapped.append(bool(inside))
        inside.append(threading.current_thread().name)
        with contextlib.suppress(threading.BrokenBarrierError):
            meet.wait()  # a second announcement that can get in meets the first here
        result = configs(self, *args, **kwargs)
        inside.pop()
        return result

    monkeypatch.setattr(Discovery, "configs", slow_configs)
    without_heater = {name: spec for name, spec in retained.entities.items() if name != "heater"}
    connect = threading.Thread(target=retained.republish, kwargs={"removals": True}, name="uplink")
    reload = threading.Thread(target=retained.replace, args=(without_heater, {}), name="reload")
    connect.start()
    reload.start()
    connect.join(10)
    reload.join(10)

    assert overlapped == [False, False]
    remembered = json.loads((tmp_path / "discovery.json").read_text())["topics"]
    heater = [topic for topic in retained.discovery_configs() if "/heater/" in topic]
    assert heater == [] and not any("/heater/" in topic for topic in remembered)
