"""Rules that hear the rest of the house: ``[[mqtt_entities]]`` (gateway/mqtt/foreign.py, docs/rules.md).

A Zigbee2MQTT button, a Tasmota plug and its power meter, published by another client on a real
Mosquitto, become readings that rules trigger on and test, exactly like local sensors.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from core.clock import VirtualClock
from core.events import Event, EventFactory
from gateway.app import Gateway
from gateway.config import ConfigError, load_config
from gateway.mqtt.foreign import MAX_PAYLOAD, ForeignEntities, MqttEntityConfig, extract, parse_path
from gateway.rulesets import check_ruleset
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import write_config
from tests.mqtt_support import bridge_of, running, wait_until
from tests.test_overload_inbound import rss_mb

ENTITIES = """
[[mqtt_entities]]
id = "hall_button"
topic = "zigbee2mqtt/{gw}/hall_button"
value = "action"
type = "text"
values = ["single", "double", "hold"]

[[mqtt_entities]]
id = "plug"
topic = "stat/{gw}/plug/POWER"
type = "on_off"

[[mqtt_entities]]
id = "plug_power"
topic = "tele/{gw}/plug/SENSOR"
value = "ENERGY.Power"
type = "number"
unit = "W"
minimum = 0
maximum = 4000
"""

RULES = """version = 1
[[rules]]
id = "button_lights_the_hall_while_the_plug_is_on"
[[rules.triggers]]
type = "state"
entity = "hall_button"
to = "single"
[[rules.conditions]]
type = "state"
entity = "plug"
equals = true
[[rules.actions]]
type = "turn_on"
entity = "hall_light"

[[rules]]
id = "fan_on_when_the_plug_draws_over_1000_w"
[[rules.triggers]]
type = "numeric"
entity = "plug_power"
above = 1000
[[rules.actions]]
type = "turn_on"
entity = "fan"
"""


def house(tmp_path: Path, port: int, gw: str, rules: str = RULES) -> Path:
    body = toml.config(toml.gateway(gw), toml.mqtt(port, reconnect_max=1),
                       toml.relay("hall_light", 22, component="light"), toml.relay("fan", 23))
    body += ENTITIES.replace("{gw}", gw)
    return write_config(tmp_path, body, rules)


class Publisher:
    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: str | bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gw(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^a-z0-9]", "-", request.node.name.lower())[:40]


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    client = Publisher(broker.port)
    yield client
    client.close()


# -- the path language and the types ---------------------------------------------------------------


def test_a_path_is_names_and_indices_parsed_never_evaluated() -> None:
    assert parse_path("") == ()
    assert parse_path("ENERGY.Power") == ("ENERGY", "Power")
    assert parse_path("data[0].temp") == ("data", 0, "temp")
    assert parse_path("[2]") == (2,)
    assert extract({"ENERGY": {"Power": 41.5}}, ("ENERGY", "Power")) == 41.5
    assert extract({"data": [{"temp": 3}]}, ("data", 0, "temp")) == 3


@pytest.mark.parametrize("path", ["a..b", ".a", "a.", "__import__('os')", "a[x]", "a[-1]", "a b", "a[1][99999]"])
def test_a_path_outside_the_syntax_is_refused_with_its_position(path: str) -> None:
    with pytest.raises(ValueError):
        parse_path(path)


def test_a_missing_key_names_the_step_that_is_missing() -> None:
    with pytest.raises(ValueError, match="no key 'Power'"):
        extract({"ENERGY": {}}, ("ENERGY", "Power"))


def test_config_errors_in_mqtt_entities_are_located(tmp_path: Path) -> None:
    body = toml.config(toml.gateway("bad")) + """
[[mqtt_entities]]
id = "plug"
topic = "stat/+/POWER"
type = "on_off"

[[mqtt_entities]]
id = "power"
topic = "tele/plug/SENSOR"
value = "ENERGY..Power"
type = "number"

[[mqtt_entities]]
id = "button"
topic = "zigbee2mqtt/button"
type = "on_off"
values = ["single"]
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, body))
    problems = "\n".join(caught.value.problems)
    assert "mqtt_entities[0] (plug).topic" in problems and "wildcards" in problems
    assert "mqtt_entities[1] (power).value" in problems and "position 7" in problems
    assert "mqtt_entities[2]" in problems and "values are for type" in problems


def test_gateway_check_refuses_a_rule_on_an_unknown_entity_or_a_comparison_of_the_wrong_type(
    tmp_path: Path, gw: str,
) -> None:
    rules = """version = 1
[[rules]]
id = "typo"
[[rules.triggers]]
type = "state"
entity = "hall_buton"
to = "single"
[[rules.actions]]
type = "turn_on"
entity = "hall_light"

[[rules]]
id = "wrong_types"
[[rules.triggers]]
type = "numeric"
entity = "hall_button"
above = 3
[[rules.conditions]]
type = "state"
entity = "plug"
equals = "ON"
[[rules.conditions]]
type = "state"
entity = "hall_button"
equals = "triple"
[[rules.actions]]
type = "turn_on"
entity = "hall_light"
"""
    ruleset, problems = check_ruleset(load_config(house(tmp_path, 1883, gw, rules)))
    assert ruleset is None
    text = "\n".join(problems)
    assert "rule typo: triggers[0].entity: unknown entity 'hall_buton'; did you mean 'hall_button'?" in text
    assert "rule wrong_types: triggers[0].type: 'hall_button' is a text entity, never a number" in text
    assert "rule wrong_types: conditions[0].equals: 'plug' is on/off" in text
    assert "rule wrong_types: conditions[1].equals: 'triple' is not a value of 'hall_button'" in text


def test_the_house_rules_check_clean_with_mqtt_entities(tmp_path: Path, gw: str) -> None:
    ruleset, problems = check_ruleset(load_config(house(tmp_path, 1883, gw)))
    assert problems == [] and ruleset is not None


# -- over a real broker ------------------------------------------------------------------------------


def test_a_zigbee_button_press_switches_a_local_light_when_a_tasmota_plug_is_on(
    broker: Broker, tmp_path: Path, gw: str, publisher: Publisher,
) -> None:
    pins = MockFactory()
    gateway = Gateway(load_config(house(tmp_path, broker.port, gw)), pin_factory=pins)
    with running(gateway):
        bridge = bridge_of(gateway)
        wait_until(lambda: bridge.connected, what="the gateway connected")
        state = gateway.dispatcher.state

        def heard(entity: str, topic: str, payload: str) -> object:
            publisher.send(topic, payload)  # again until the gateway's subscription is in place
            current = state.get(entity)
            return current is not None and current.available

        wait_until(lambda: heard("plug", f"stat/{gw}/plug/POWER", "OFF"), what="the plug heard")
        publisher.send(f"zigbee2mqtt/{gw}/hall_button", '{"action": "single", "battery": 97}')
        wait_until(lambda: state.value("hall_button") == "single", what="the button heard")
        assert pins.pin(22).state is False  # the condition: the plug is off
        publisher.send(f"stat/{gw}/plug/POWER", "ON")
        wait_until(lambda: state.value("plug") is True, what="the plug on")
        publisher.send(f"zigbee2mqtt/{gw}/hall_button", '{"action": ""}')  # refused: not a declared value
        publisher.send(f"zigbee2mqtt/{gw}/hall_button", '{"action": "double"}')
        publisher.send(f"zigbee2mqtt/{gw}/hall_button", '{"action": "single"}')
        wait_until(lambda: pins.pin(22).state is True, what="the hall light on")
        publisher.send(f"tele/{gw}/plug/SENSOR", '{"ENERGY": {"Power": 500}}')
        publisher.send(f"tele/{gw}/plug/SENSOR", '{"ENERGY": {"Power": 1500.5}}')
        wait_until(lambda: pins.pin(23).state is True, what="the fan on at 1500 W")
        assert state.value("plug_power") == 1500.5
        assert state.get("plug_power").unit == "W"  # type: ignore[union-attr]
        traces = gateway.engine.traces.of("button_lights_the_hall_while_the_plug_is_on")
        assert traces[-1].trigger == "state hall_button 'double' -> 'single'"
        assert traces[0].conditions[0][1] is False  # the plug was off
        status = bridge.foreign.status()
        assert status["hall_button"]["invalid"] == 1
        assert int(str(status["hall_button"]["received"])) >= 3
        assert "hall_button" not in bridge.entities  # an input: not announced to the hub


def test_bad_payloads_are_counted_and_logged_once_never_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    entity = MqttEntityConfig(id="plug_power", topic="tele/plug/SENSOR", value="ENERGY.Power", type="number",
                              minimum=0, maximum=4000)
    posted: list[Event] = []
    foreign = ForeignEntities([entity], posted.append, EventFactory(VirtualClock()))
    bad = [b"\xff\xfe", b"not json", b'{"ENERGY": {"Power": "NaN"}}', b'{"ENERGY": {"Power": -5}}', b"[1, 2",
           b'{"ENERGY": []}', b"x" * (MAX_PAYLOAD + 1), b'{"ENERGY": {"Power": true}}']
    with caplog.at_level(logging.DEBUG, logger="gateway.mqtt.foreign"):
        for payload in bad:
            foreign.on_message(None, None, _Message("tele/plug/SENSOR", payload))
    assert posted == []
    assert foreign.invalid["plug_power"] == len(bad)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_flooding_foreign_topic_is_rate_limited_and_memory_stays_bounded(
    broker: Broker, tmp_path: Path, gw: str, publisher: Publisher,
) -> None:
    gateway = Gateway(load_config(house(tmp_path, broker.port, gw)), pin_factory=MockFactory())
    count = 5000
    with running(gateway):
        bridge = bridge_of(gateway)
        wait_until(lambda: bridge.connected, what="the gateway connected")
        wait_until(lambda: plug_heard(publisher, gateway, gw), what="the subscription in place")
        before = rss_mb()
        started = time.monotonic()
        infos = [publisher.client.publish(f"tele/{gw}/plug/SENSOR", f'{{"ENERGY": {{"Power": {n % 4000}}}}}', qos=1)
                 for n in range(count)]
        for info in infos:
            info.wait_for_publish(30)
        foreign = bridge.foreign
        wait_until(lambda: foreign.received["plug_power"] + foreign.rate_limited[f"tele/{gw}/plug/SENSOR"] >= count,
                   timeout=30, what="every message seen")
        elapsed = time.monotonic() - started
        growth = rss_mb() - before
    assert foreign.received["plug_power"] <= 20 + 10 * (elapsed + 1)
    assert foreign.rate_limited[f"tele/{gw}/plug/SENSOR"] >= count - (20 + 10 * (elapsed + 1))
    assert growth < 20, f"RSS grew {growth:.1f} MB"


def test_the_subscription_survives_a_broker_restart(private_broker: Broker, tmp_path: Path, gw: str) -> None:
    gateway = Gateway(load_config(house(tmp_path, private_broker.port, gw)), pin_factory=MockFactory())
    with running(gateway):
        bridge = bridge_of(gateway)
        wait_until(lambda: bridge.connected, what="the gateway connected")
        private_broker.stop()
        wait_until(lambda: not bridge.connected, what="the outage seen")
        private_broker.start()
        wait_until(lambda: bridge.connected, timeout=20, what="the gateway reconnected")
        client = Publisher(private_broker.port)
        try:
            wait_until(lambda: plug_heard(client, gateway, gw), what="the plug heard again")
        finally:
            client.close()


def plug_heard(publisher: Publisher, gateway: Gateway, gw: str) -> bool:
    """Publish the plug's ``ON`` (again, until the gateway's subscription is in place); heard yet?"""
    publisher.send(f"stat/{gw}/plug/POWER", "ON")
    return gateway.dispatcher.state.value("plug") is True


class _Message:
    def __init__(self, topic: str, payload: bytes) -> None:
        self.topic = topic
        self.payload = payload


def test_the_documented_example_is_a_valid_config() -> None:
    text = Path(__file__).parent.parent.joinpath("docs", "rules.md").read_text()
    section = text[text.index("## Entities from MQTT"):]
    block = section[section.index("```toml") + len("```toml"):section.index("```", section.index("```toml") + 7)]
    import tomllib

    entities = [MqttEntityConfig.model_validate(table) for table in tomllib.loads(block)["mqtt_entities"]]
    assert [e.id for e in entities] == ["hall_button", "plug", "plug_power"]
