"""The shipped house (config.toml + rules.d) as Home Assistant sees it: every discovery config, checked for
what a Home Assistant user runs into (quoted states, statistics of a setpoint, a preset outside the
climate's range, names, devices), and docs/home-assistant.md checked against it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import load_config
from gateway.hub_entities import entity_table, house_configs
from gateway.mqtt.commands import validate
from rules.commands import command_validators

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    configs = house_configs(ROOT / "config.toml", tmp_path_factory.mktemp("state"))
    return {topic: json.loads(payload) for topic, payload in configs.items()}


def config_of(house: dict[str, dict[str, object]], component: str, entity: str) -> dict[str, object]:
    return house[f"homeassistant/{component}/house-01/{entity}/config"]


def test_thermostat_text_sensors_show_the_word_not_quoted_json(house: dict[str, dict[str, object]]) -> None:
    for part in ("action", "preset"):
        assert config_of(house, "sensor", f"living_thermostat_{part}")["value_template"] == "{{ value_json }}"


def test_the_thermostats_sensors_are_diagnostics_and_the_setpoint_keeps_no_statistics(
    house: dict[str, dict[str, object]]
) -> None:
    for part in ("action", "preset", "setpoint"):
        assert config_of(house, "sensor", f"living_thermostat_{part}")["entity_category"] == "diagnostic"
    assert "state_class" not in config_of(house, "sensor", "living_thermostat_setpoint")
    assert config_of(house, "sensor", "living_temperature")["state_class"] == "measurement"


def test_the_away_preset_is_within_the_climates_range_and_the_hub_may_set_it(
    house: dict[str, dict[str, object]], tmp_path: Path
) -> None:
    climate = config_of(house, "climate", "living_thermostat")
    assert climate["min_temp"] == 7  # frost_setpoint 7 below min_setpoint 10: the range reaches down to it
    config = load_config(ROOT / "config.toml")
    config = config.model_copy(update={"gateway": config.gateway.model_copy(update={"state_dir": tmp_path})})
    gateway = Gateway(config, simulate=True, mqtt=False)
    validator = command_validators(gateway.engine.ruleset, gateway.events.clock)["living_thermostat"]
    assert validate(validator, 7) == 7.0


def test_entities_carry_their_configured_names_and_devices_their_own_hub_device(
    house: dict[str, dict[str, object]]
) -> None:
    siren = config_of(house, "binary_sensor", "siren")  # owned by the alarm: read-only
    assert siren["name"] is None  # named after its device by the hub
    assert siren["device"] == {"identifiers": ["edge-gateway-house-01-siren"], "name": "Alarm siren",
                               "model": "gpio.relay", "via_device": "edge-gateway-house-01"}
    temperature = config_of(house, "sensor", "living_temperature")
    assert temperature["name"] == "Temperature"
    assert temperature["device"]["name"] == "Living room sensor"  # type: ignore[index]


def test_unique_ids_stay_what_they_were_so_an_installed_hub_gets_no_duplicates(
    house: dict[str, dict[str, object]]
) -> None:
    for topic, config in house.items():
        entity = topic.split("/")[3]
        assert config["unique_id"] == f"house-01_{entity}"
        assert config["object_id"] == f"house-01_{entity}"
        assert config["default_entity_id"] == f"{topic.split('/')[1]}.house_01_{entity}"


def test_every_sensor_without_a_device_class_has_an_icon(house: dict[str, dict[str, object]]) -> None:
    for topic, config in house.items():
        if "/sensor/" in topic and "device_class" not in config:
            assert str(config.get("icon", "")).startswith("mdi:"), topic


def test_the_gateways_health_is_announced_as_diagnostics(house: dict[str, dict[str, object]]) -> None:
    connectivity = config_of(house, "binary_sensor", "gateway_connectivity")
    assert (connectivity["state_topic"], connectivity["device_class"]) == ("gateway/house-01/status", "connectivity")
    for entity in ("gateway_started", "gateway_outbox_depth", "gateway_commands_rejected", "gateway_last_reload",
                   "heater_driver"):
        config = config_of(house, "sensor", entity)
        assert (config["state_topic"], config["entity_category"]) == ("gateway/house-01/health", "diagnostic")


def test_the_thermostat_is_also_a_number_and_a_select(house: dict[str, dict[str, object]]) -> None:
    number = config_of(house, "number", "living_thermostat_target")
    assert (number["command_topic"], number["min"], number["max"]) == ("gateway/house-01/set/living_thermostat", 7,
                                                                      25)
    select = config_of(house, "select", "living_thermostat_mode")
    assert select["options"] == ["off", "heat"]
    assert select["value_template"] == "{{ value_json }}"


def test_docs_home_assistant_lists_exactly_the_shipped_houses_entities(house: dict[str, dict[str, object]]) -> None:
    doc = (ROOT / "docs" / "home-assistant.md").read_text(encoding="utf-8")
    table = entity_table({t: json.dumps(c).encode() for t, c in house.items()})
    assert table in doc, "docs/home-assistant.md is out of date: run python -m gateway.hub_entities config.toml"
