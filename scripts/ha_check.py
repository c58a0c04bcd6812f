"""A house against a real Home Assistant on loopback: discovery accepted without a warning, actions round-trip.

Optional, out of the quick suite (a cold Home Assistant takes 10-20 s to start, its venv ~820 MB): build the venv
once with ``VENV=.venv-hub ../shared/hub/install.sh`` (from the project root), then::

    PYTHONPATH=. .venv/bin/python scripts/ha_check.py [--config config.toml | --house drivers] [--hub-venv .venv-hub]
        [--code 1234]

It starts a private Mosquitto, Home Assistant (``ha_loopback.py`` of the hub recipe) and ``gateway run --simulate``
with the config's MQTT pointed at that Mosquitto, all on 127.0.0.1; onboards Home Assistant and adds its MQTT
integration; waits until every discovery config of the house (:mod:`gateway.hub_entities`) is an entity; then
calls each action the entities offer and waits for the state to come back from the gateway (a fan's percentage, a
number's maximum and, for a fine step, one step above its minimum); checks that every energy, water or gas total is
``total_increasing`` and that a pulse meter's total corrected on its set topic shows in Home Assistant; waits for
each ``event`` entity (a simulated button or knob) to show a gesture. It prints the figures
and any warning or error Home Assistant logged about MQTT, and exits non-zero if something failed. Everything it
started is stopped by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HUB = ROOT.parent / "shared" / "hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def retarget(config: Path, port: int, out: Path) -> Path:
    """The config with ``[mqtt]`` on 127.0.0.1:``port`` and ``[rules] dir`` absolute (line by line: comments stay)."""
    table = ""
    lines = []
    for original in config.read_text(encoding="utf-8").splitlines():
        line = original
        header = re.match(r"^\s*\[\[?([^\]]+)\]\]?", line)
        if header:
            table = header.group(1).strip()
        key = line.split("=", 1)[0].strip()
        if table == "mqtt" and key == "host":
            line = 'host = "127.0.0.1"'
        elif table == "mqtt" and key == "port":
            line = f"port = {port}"
        elif table == "rules" and key == "dir":
            rules = json.loads(line.split("=", 1)[1].split("#")[0].strip())
            line = f"dir = {json.dumps(str((config.parent / rules).resolve()))}"
        lines.append(line)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


class Hub:
    """Home Assistant's REST API with a token from onboarding."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = ""

    def call(self, method: str, path: str, data: Any = None, form: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data).encode() if form else json.dumps(data).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        request = urllib.request.Request(self.base + path, data=body, headers=headers, method=method)  # noqa: S310 - http://127.0.0.1 only
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return json.loads(answer.read() or b"null")

    def wait_up(self, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.call("GET", "/api/onboarding")
                return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("Home Assistant did not answer")

    def onboard(self, mqtt_port: int) -> None:
        client = self.base + "/"
        code = self.call("POST", "/api/onboarding/users", {"client_id": client, "name": "check", "username": "check",
                                                           "password": "check-only", "language": "en"})["auth_code"]
        self.token = self.call("POST", "/auth/token", {"grant_type": "authorization_code", "code": code,
                                                       "client_id": client}, form=True)["access_token"]
        flow = self.call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        done = self.call("POST", f"/api/config/config_entries/flow/{flow['flow_id']}",
                         {"broker": "127.0.0.1", "port": mqtt_port})
        if done.get("type") != "create_entry":
            raise SystemExit(f"MQTT integration not created: {done}")

    def states(self, node: str) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.call("GET", "/api/states") if s["entity_id"].split(".")[1]
                .startswith(f"{node}_")}


def until(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def actions(states: dict[str, dict[str, Any]], code: str | None) -> list[tuple[str, dict[str, Any], str, Any]]:
    """``(service, data, entity to watch, expected state or attribute pair)`` for what the entities offer."""
    out: list[tuple[str, dict[str, Any], str, Any]] = []
    for entity, state in sorted(states.items()):
        domain, attrs = entity.split(".")[0], state["attributes"]
        if domain == "light":
            out += [("light/turn_off", {"entity_id": entity}, entity, "off"),
                    ("light/turn_on", {"entity_id": entity}, entity, "on")]
        elif domain == "switch":
            out += [("switch/turn_on", {"entity_id": entity}, entity, "on"),
                    ("switch/turn_off", {"entity_id": entity}, entity, "off")]
        elif domain == "siren":
            out += [("siren/turn_on", {"entity_id": entity, "duration": 2}, entity, "on"),
                    ("siren/turn_off", {"entity_id": entity}, entity, "off")]
        elif domain == "climate":
            low = attrs["min_temp"]
            out += [("climate/set_temperature", {"entity_id": entity, "temperature": low}, entity,
                     ("temperature", low)),
                    ("climate/set_preset_mode", {"entity_id": entity, "preset_mode": "away"}, entity,
                     ("preset_mode", "away")),
                    ("climate/set_preset_mode", {"entity_id": entity, "preset_mode": "none"}, entity,
                     ("preset_mode", "none")),
                    ("climate/set_hvac_mode", {"entity_id": entity, "hvac_mode": "off"}, entity, "off"),
                    ("climate/set_hvac_mode", {"entity_id": entity, "hvac_mode": state["state"]}, entity,
                     state["state"])]
        elif domain == "number":
            value = float(attrs["max"])
            out.append(("number/set_value", {"entity_id": entity, "value": value}, entity, str(value)))
            step = float(attrs.get("step", 1))
            if step < 1:  # a fine step must round-trip too: one step above the minimum (25.1 for tenths)
                fine = round(float(attrs["min"]) + step, 6)
                out.append(("number/set_value", {"entity_id": entity, "value": fine}, entity, str(fine)))
        elif domain == "fan":
            out += [("fan/set_percentage", {"entity_id": entity, "percentage": 60}, entity, ("percentage", 60)),
                    ("fan/turn_off", {"entity_id": entity}, entity, "off"),
                    ("fan/turn_on", {"entity_id": entity, "percentage": 30}, entity, ("percentage", 30)),
                    ("fan/turn_off", {"entity_id": entity}, entity, "off")]
        elif domain == "select":
            out += [("select/select_option", {"entity_id": entity, "option": option}, entity, option)
                    for option in [*attrs["options"], state["state"]]]
        elif domain == "button":
            out.append(("button/press", {"entity_id": entity}, entity, None))
        elif domain == "alarm_control_panel" and code is not None:
            out += [("alarm_control_panel/alarm_arm_away", {"entity_id": entity, "code": code}, entity, "arming"),
                    ("alarm_control_panel/alarm_disarm", {"entity_id": entity, "code": code}, entity, "disarmed")]
    return out


def run_actions(hub: Hub, states: dict[str, dict[str, Any]], code: str | None) -> int:
    """Call each action; the number that did not come back from the gateway within 5 s."""
    failures = 0
    for service, data, entity, want in actions(states, code):
        try:
            hub.call("POST", f"/api/services/{service}", data)
        except urllib.error.HTTPError as exc:
            failures += 1
            print(f"FAIL {service} {json.dumps(data)}: {exc.code} {exc.read()[:200]!r}")
            continue

        def arrived(entity: str = entity, want: Any = want) -> bool:
            state = hub.call("GET", f"/api/states/{entity}")
            if isinstance(want, tuple):
                return bool(state["attributes"].get(want[0]) == want[1])
            return want is None or state["state"] == want
        ok = until(arrived, 5)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {service} {json.dumps(data)}")
    return failures


def check_events(hub: Hub, states: dict[str, dict[str, Any]], timeout: float) -> int:
    """Each ``event`` entity (a button) shows a gesture the simulated button made within ``timeout`` s."""
    failures = 0
    for entity in sorted(e for e in states if e.startswith("event.")):
        types = states[entity]["attributes"].get("event_types", [])

        def fired(entity: str = entity, types: list[str] = types) -> bool:
            attrs = hub.call("GET", f"/api/states/{entity}")["attributes"]
            return attrs.get("event_type") in types
        ok = until(fired, timeout)
        failures += not ok
        shown = hub.call("GET", f"/api/states/{entity}")["attributes"].get("event_type")
        print(f"{'ok  ' if ok else 'FAIL'} {entity} fired {shown!r} (event_types {types})")
    return failures


def check_meters(hub: Hub, states: dict[str, dict[str, Any]], *, mqtt_port: int, base: str, node: str,
                 correctable: set[str]) -> int:
    """Every energy, water or gas total is ``total_increasing`` in Home Assistant, and a correction of a
    ``correctable`` one (a pulse meter's) published on its set topic (the meter's own reading) comes back as its
    state."""
    failures = 0
    for entity, state in sorted(states.items()):
        attrs = state["attributes"]
        if not entity.startswith("sensor.") or attrs.get("device_class") not in ("energy", "water", "gas"):
            continue
        ok = attrs.get("state_class") == "total_increasing"
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {entity} state_class {attrs.get('state_class')!r}")
        object_id = entity.split(".", 1)[1].removeprefix(f"{node}_")
        if object_id not in correctable:
            continue
        reading = round(float(state["state"]) + 1000, 3) if state["state"] not in ("unknown", "unavailable") else 1000.0
        sent = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(mqtt_port), "-q", "1",  # noqa: S603,S607
                               "-t", f"{base}/set/{object_id}", "-m", str(reading)], check=False)
        if sent.returncode != 0:
            failures += 1
            continue

        def corrected(entity: str = entity, reading: float = reading) -> bool:
            value = hub.call("GET", f"/api/states/{entity}")["state"]
            try:
                return abs(float(value) - reading) < 1e-6
            except ValueError:
                return False
        ok = until(corrected, 5)
        print(f"{'ok  ' if ok else 'FAIL'} {entity} corrected to {reading} through {base}/set/{object_id}")
        failures += not ok
    return failures


def complaints(log_file: Path) -> int:
    """Print and count Home Assistant's warnings and errors about MQTT."""
    log = log_file.read_text(encoding="utf-8", errors="replace")
    found = [line for line in log.splitlines() if re.search(r"\b(WARNING|ERROR)\b", line) and "mqtt" in line.lower()]
    print(f"Home Assistant's warnings and errors about MQTT: {len(found)}")
    for line in found[:20]:
        print("  ", line[:300])
    return len(found)


def main(argv: list[str]) -> int:  # noqa: PLR0915 - one script's sequence, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config.toml")
    parser.add_argument("--hub-venv", type=Path, default=ROOT / ".venv-hub")
    parser.add_argument("--code", help="the alarm code, to check arming and disarming too")
    parser.add_argument("--house", choices=["drivers"],
                        help="instead of --config: a test house (drivers: one of each meter, button, fan, servo, "
                             "I2C and Modbus driver; tests/houses.py)")
    parser.add_argument("--event-timeout", type=float, default=120,
                        help="seconds to wait for each simulated button's first gesture")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from drivers.registry import DRIVERS
    from gateway.config import load_config
    from gateway.hub_entities import house_configs
    from gateway.mqtt.discovery import slug

    work = Path(tempfile.mkdtemp(prefix="ha-check-"))
    mqtt_port, ha_port = free_port(), free_port()
    if args.house == "drivers":
        from tests.houses import drivers_house

        (work / "house").mkdir()
        args.config = drivers_house(work / "house")
    (work / "mosquitto.conf").write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    (work / "ha").mkdir()
    (work / "ha" / "configuration.yaml").write_text(
        "homeassistant:\n  name: check\n  latitude: 0.0\n  longitude: 0.0\n  elevation: 0\n  unit_system: metric\n"
        "  time_zone: UTC\n  country: DE\n  currency: EUR\n  language: en\n"
        f"http:\n  server_host: 127.0.0.1\n  server_port: {ha_port}\napi:\n"
        "logger:\n  default: warning\n  logs:\n    homeassistant.components.mqtt: info\n")
    config = retarget(args.config, mqtt_port, work / "config.toml")
    loaded = load_config(config)
    node, base = slug(loaded.gateway.id), loaded.base_topic
    correctable = {spec.id for device in loaded.devices for spec in DRIVERS[device.driver](device).entities()
                   if spec.correctable}
    expected = len(house_configs(config, work / "count"))
    started: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], log: str, **env: str) -> None:
        with (work / log).open("wb") as out:
            started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603 - our argv
                                            env={**os.environ, **env}))

    failures = 0
    try:
        start(["mosquitto", "-c", str(work / "mosquitto.conf")], "mosquitto.log")
        start([str(args.hub_venv / "bin" / "python"), str(HUB / "ha_loopback.py"), "-c", str(work / "ha"),
               "--skip-pip"], "ha.out")
        hub = Hub(ha_port)
        hub.wait_up()
        hub.onboard(mqtt_port)
        start([sys.executable, "-m", "gateway", "run", "--simulate", "-c", str(config), "--state-dir",
               str(work / "state"), "--socket", str(work / "control.sock")], "gateway.log", PYTHONPATH=str(ROOT))
        if not until(lambda: len(hub.states(node)) >= expected, 60):
            failures += 1
        until(lambda: all(s["state"] != "unavailable" for s in hub.states(node).values()), 30)
        states = hub.states(node)
        print(f"discovery configs: {expected}; entities in Home Assistant: {len(states)}")
        failures += run_actions(hub, states, args.code)
        failures += check_meters(hub, states, mqtt_port=mqtt_port, base=base, node=node, correctable=correctable)
        failures += check_events(hub, states, args.event_timeout)
        failures += complaints(work / "ha" / "home-assistant.log")
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"work directory (logs): {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
