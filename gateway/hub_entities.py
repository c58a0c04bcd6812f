"""The Home Assistant entities a house config produces, for docs/home-assistant.md and for tests.

``python -m gateway.hub_entities config.toml`` prints the table of entities (entity id, component,
name, what Home Assistant's actions do on the gateway) that the config and its rule files announce;
``tests/test_discovery_house.py`` checks that docs/home-assistant.md holds exactly that table for the
shipped house, so the page cannot drift from the code. Nothing is opened: the drivers are built
simulated and the MQTT bridge is only constructed, never started.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from gateway.config import load_config

ACTIONS: dict[str, str] = {
    "alarm_control_panel": "`alarm_arm_*` / `alarm_disarm` with the code: the gateway checks the code's hash, "
                           "then arms or disarms",
    "binary_sensor": "read-only",
    "button": "`button.press`: the siren sounds for 2 s (a timed claim)",
    "climate": "`set_hvac_mode` / `set_temperature` / `set_preset_mode` (away, none): the thermostat's mode, "
               "manual setpoint (until the next schedule point) or preset",
    "light": "`turn_on` / `turn_off`: a hub claim on the light (rules' level; a rule's timer does not end it)",
    "event": "none: a button's `press` / `double_press` / `long_press` shows as the event's `event_type`",
    "fan": "`turn_on` / `turn_off` / `set_percentage`: a hub claim on the fan's speed",
    "number": "`number.set_value`: the thermostat's manual setpoint (as `climate.set_temperature`), a servo's "
              "angle or a Modbus setpoint register",
    "select": "`select.select_option`: the thermostat's mode (as `climate.set_hvac_mode`)",
    "sensor": "read-only",
    "siren": "`siren.turn_on` (with `duration`: it lets go after that time) / `siren.turn_off`",
    "switch": "`turn_on` / `turn_off`: a hub claim on the output",
}
"""What each component's Home Assistant actions do on the gateway."""


def house_configs(config_path: Path, state_dir: Path | None = None) -> dict[str, bytes]:
    """Config topic -> retained discovery payload, as ``gateway run`` would announce them."""
    from gateway.app import Gateway
    from gateway.mqtt.bridge import MqttBridge

    config = load_config(config_path)
    directory = state_dir if state_dir is not None else Path(tempfile.mkdtemp(prefix="hub-entities-"))
    config = config.model_copy(update={"gateway": config.gateway.model_copy(update={"state_dir": directory})})
    gateway = Gateway(config, simulate=True)
    bridge = gateway.forwarder
    if not isinstance(bridge, MqttBridge) or bridge.retained.discovery is None:
        raise SystemExit("mqtt.discovery is off: no Home Assistant entities")
    try:
        return bridge.retained.discovery_configs()
    finally:
        bridge.outbox.close()


def entity_table(configs: Mapping[str, bytes]) -> str:
    """The markdown table of the entities, sorted by entity id."""
    rows = []
    for topic, payload in configs.items():
        if not payload:
            continue
        config = json.loads(payload)
        component = topic.split("/")[1]
        device = config["device"]["name"]
        name = device if config.get("name") is None else f"{device} {config['name']}"
        category = config.get("entity_category", "")
        rows.append(f"| `{config['default_entity_id']}` | {component} | {name} | {category} | {ACTIONS[component]} |")
    head = ("| entity id | component | name in Home Assistant | category | what its actions do |\n"
            "|---|---|---|---|---|\n")
    return head + "\n".join(sorted(rows)) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path("config.toml")
    configs = house_configs(path)
    sys.stdout.write(entity_table(configs))
    sys.stdout.write(f"\n{len(configs)} discovery configs\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
