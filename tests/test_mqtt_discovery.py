"""Home Assistant discovery: well-formed configs, one device, removal, re-sending on the hub's birth."""

from __future__ import annotations

import json
from pathlib import Path

from core.entities import EntitySpec
from gateway.mqtt.topics import Topics
from tests.conftest import Broker
from tests.mqtt_support import ENTITIES, Message, make_bridge, make_config, recorder, wait_until

COMPONENTS = {"hall_light": "light", "heater": "switch", "siren": "siren", "front_door": "binary_sensor",
              "living_temp": "sensor"}


def configs(messages: list[Message]) -> dict[str, dict[str, object]]:
    return {m.topic: json.loads(m.payload) for m in messages if m.payload}


def start_and_collect(broker: Broker, tmp_path: Path, gateway_id: str, prefix: str,
                      entities: dict[str, EntitySpec] | None = None) -> dict[str, dict[str, object]]:
    harness = make_bridge(make_config(gateway_id, tmp_path / "state", broker.port, discovery_prefix=prefix),
                          entities)
    with recorder(broker.host, broker.port, f"{prefix}/#") as hub:
        harness.bridge.start()
        wait_until(lambda: len(hub.matching(f"{prefix}/")) >= len(entities or ENTITIES), what="discovery")
        harness.bridge.stop()
        return configs(hub.matching(f"{prefix}/"))


def test_every_entity_is_announced_under_its_component_with_one_device(broker: Broker, tmp_path: Path) -> None:
    everything = start_and_collect(broker, tmp_path, "disc-one", "ha-disc-one")
    found = {t: c for t, c in everything.items() if t.split("/")[3] in COMPONENTS}
    assert set(found) == {f"ha-disc-one/{c}/disc-one/{e}/config" for e, c in COMPONENTS.items()}
    unique_ids = [c["unique_id"] for c in everything.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    devices = {json.dumps(c["device"], sort_keys=True) for c in found.values()}
    assert len(devices) == 1
    device = json.loads(devices.pop())
    assert device["identifiers"] == ["edge-gateway-disc-one"]
    for entity, config in ((t.split("/")[3], c) for t, c in found.items()):
        assert config["availability"] == [{"topic": "gateway/disc-one/status"},
                                          {"topic": f"gateway/disc-one/availability/{entity}"}]
        assert config["availability_mode"] == "all"
        assert config["state_topic"] == f"gateway/disc-one/state/{entity}"
        assert config["qos"] == 1


def test_sensors_carry_unit_class_and_expiry_and_actuators_a_command_topic(broker: Broker, tmp_path: Path) -> None:
    found = start_and_collect(broker, tmp_path, "disc-two", "ha-disc-two")
    temp = found["ha-disc-two/sensor/disc-two/living_temp/config"]
    assert (temp["unit_of_measurement"], temp["device_class"], temp["expire_after"]) == ("°C", "temperature", 180)
    door = found["ha-disc-two/binary_sensor/disc-two/front_door/config"]
    assert (door["device_class"], door["payload_on"], door["payload_off"]) == ("door", "true", "false")
    heater = found["ha-disc-two/switch/disc-two/heater/config"]
    assert (heater["command_topic"], heater["payload_on"], heater["state_on"]) == ("gateway/disc-two/set/heater",
                                                                                  "ON", "true")
    assert "expire_after" not in heater


def test_an_entity_removed_from_the_config_is_removed_from_the_hub(broker: Broker, tmp_path: Path) -> None:
    start_and_collect(broker, tmp_path, "disc-rm", "ha-disc-rm")
    fewer = {k: v for k, v in ENTITIES.items() if k != "siren"}
    harness = make_bridge(make_config("disc-rm", tmp_path / "state", broker.port, discovery_prefix="ha-disc-rm"),
                          fewer)
    topic = "ha-disc-rm/siren/disc-rm/siren/config"
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        wait_until(lambda: [m for m in hub.on(topic) if m.payload == b""], what="empty config for the siren")
        harness.bridge.stop()
    with recorder(broker.host, broker.port, "ha-disc-rm/#") as late_hub:
        wait_until(lambda: len(late_hub.matching("ha-disc-rm/")) >= 4, what="retained configs")
        assert topic not in {m.topic for m in late_hub.matching("ha-disc-rm/")}


def test_the_hubs_birth_message_brings_discovery_and_states_again(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("disc-birth", tmp_path / "state", broker.port, discovery_prefix="ha-birth"))
    config_topic = "ha-birth/sensor/disc-birth/living_temp/config"
    state_topic = "gateway/disc-birth/state/living_temp"
    with recorder(broker.host, broker.port, config_topic, state_topic) as hub:
        harness.bridge.start()
        harness.bridge.forward(harness.events.reading("living_temp", 19.5))
        hub.wait_for(config_topic)
        hub.wait_for(state_topic)
        hub.publish("ha-birth/status", "online")
        hub.wait_for(config_topic, count=2)
        again = hub.wait_for(state_topic, count=2)
        harness.bridge.stop()
    assert again[-1].json() == 19.5
    assert harness.bridge.counters.hub_births == 1


def test_other_code_can_announce_a_climate_entity_on_the_same_device(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("disc-clim", tmp_path / "state", broker.port, discovery_prefix="ha-clim"))
    topics: Topics = harness.bridge.topics
    harness.bridge.register_discovery("thermostat", "climate", {
        "modes": ["off", "heat"],
        "mode_command_topic": topics.command("thermostat_mode"),
        "mode_state_topic": topics.state("thermostat_mode"),
        "temperature_command_topic": topics.command("thermostat_setpoint"),
        "temperature_state_topic": topics.state("thermostat_setpoint"),
        "current_temperature_topic": topics.state("living_temp"),
    })
    topic = "ha-clim/climate/disc-clim/thermostat/config"
    with recorder(broker.host, broker.port, topic, "gateway/disc-clim/availability/thermostat") as hub:
        harness.bridge.start()
        climate = hub.wait_for(topic)[0].json()
        assert hub.wait_for("gateway/disc-clim/availability/thermostat")[0].payload == b"online"
        harness.bridge.stop()
    assert climate["modes"] == ["off", "heat"] and climate["qos"] == 1
    assert climate["device"]["identifiers"] == ["edge-gateway-disc-clim"]
    assert climate["unique_id"] == "disc-clim_thermostat"


def test_discovery_can_be_turned_off(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("disc-off", tmp_path / "state", broker.port, discovery=False,
                                      discovery_prefix="ha-off"))
    with recorder(broker.host, broker.port, "ha-off/#", "gateway/disc-off/status") as hub:
        harness.bridge.start()
        hub.wait_for("gateway/disc-off/status")
        harness.bridge.forward(harness.events.reading("living_temp", 1.0))
        harness.bridge.stop()
        hub.wait_for("gateway/disc-off/status", count=2)  # offline: the last thing the bridge sends
        assert hub.matching("ha-off/") == []
