"""Home Assistant MQTT discovery: one retained config per entity, all tied to one device.

Topic: ``<prefix>/<component>/<node_id>/<object_id>/config`` with ``node_id``
the gateway id and ``object_id`` the entity id, so many gateways share one
broker and one hub without collisions. Every config carries:

* ``unique_id`` ``<gateway id>_<entity>`` and the same ``device`` block
  (identifiers ``edge-gateway-<id>``), so the hub groups them as one device;
* ``availability`` on both ``<base>/status`` (the gateway, with its last will)
  and ``<base>/availability/<entity>`` (the entity's driver), ``availability_mode: all``;
* ``qos: 1``, so the hub sends commands at least once (HA's default is QoS 0);
* ``expire_after``: three reporting intervals, for entities that declare one.

States are bare JSON values (``true``, ``21.5``), hence ``state_on: "true"``
and ``payload_on: "true"`` for what reads them. Entities removed from the config are removed from
the hub: the topics published last time are remembered in
``<state_dir>/discovery.json`` and those no longer configured get an empty
retained config, which is how Home Assistant deletes an entity.

Other code adds components the config does not describe (the thermostat's
``climate``, the alarm's ``alarm_control_panel``) with
:meth:`gateway.mqtt.bridge.MqttBridge.register_discovery`; they get the same
device block, availability, unique id and QoS.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.entities import CONTROLLER_COMPONENTS, Component, EntitySpec
from gateway.mqtt.topics import Topics, dumps

log = logging.getLogger(__name__)

EXPIRE_INTERVALS = 3
"""A sensor is shown unavailable after missing this many of its reporting intervals."""
SOFTWARE = "edge-gateway"
ON_OFF = "{{ 'ON' if value_json else 'OFF' }}"


@dataclass(slots=True, frozen=True)
class Extra:
    """A component registered by other code: its HA component name and its specific keys."""

    component: str
    config: Mapping[str, object]


def human_name(entity: str) -> str:
    return entity.replace("_", " ").capitalize()


def device_block(gateway_id: str, name: str | None, version: str) -> dict[str, object]:
    return {
        "identifiers": [f"{SOFTWARE}-{gateway_id}"],
        "name": name or gateway_id,
        "manufacturer": "edge-gateway project",
        "model": "IoT edge gateway",
        "sw_version": version,
    }


class Discovery:
    """Builds the discovery configs of one gateway and remembers what it published."""

    def __init__(self, topics: Topics, gateway_id: str, name: str | None, version: str, memory: Path) -> None:
        self.topics = topics
        self.gateway_id = gateway_id
        self.device = device_block(gateway_id, name, version)
        self.origin = {"name": SOFTWARE, "sw": version}
        self.memory = memory

    def config_topic(self, component: str, entity: str) -> str:
        return f"{self.topics.discovery_prefix}/{component}/{self.gateway_id}/{entity}/config"

    def common(self, entity: str) -> dict[str, object]:
        return {
            "name": human_name(entity),
            "unique_id": f"{self.gateway_id}_{entity}",
            "object_id": f"{self.gateway_id}_{entity}",
            "device": self.device,
            "origin": self.origin,
            "availability": [{"topic": self.topics.status}, {"topic": self.topics.availability(entity)}],
            "availability_mode": "all",
            "qos": 1,
        }

    def entity_config(self, spec: EntitySpec) -> dict[str, object]:
        """The config of one configured entity (see the module docstring for the conventions)."""
        config = self.common(spec.id)
        config["state_topic"] = self.topics.state(spec.id)
        if spec.device_class is not None:
            config["device_class"] = spec.device_class
        if spec.report_interval is not None and spec.component in (Component.SENSOR, Component.BINARY_SENSOR):
            config["expire_after"] = max(1, math.ceil(spec.report_interval * EXPIRE_INTERVALS))
        if spec.component is Component.SENSOR:
            if spec.unit is not None:
                config["unit_of_measurement"] = spec.unit
                config["state_class"] = "measurement"
        elif spec.component is Component.BINARY_SENSOR:
            config.update(payload_on="true", payload_off="false")
        else:
            config.update(command_topic=self.topics.command(spec.id), payload_on="ON", payload_off="OFF")
            if spec.component is Component.LIGHT:
                config["state_value_template"] = ON_OFF  # a light compares its state with payload_on/off
                if spec.maximum is not None:
                    config.update(self._brightness(spec))
            else:
                config.update(state_on="true", state_off="false")
            if spec.component is Component.SIREN:
                # HA sends {"state": "ON", "duration": 5}: a claim that lets go after that time
                # (gateway/mqtt/commands.py); the relay has no volume and no tones.
                config.update(support_duration=True, support_volume_set=False)
        return config

    def _brightness(self, spec: EntitySpec) -> dict[str, object]:
        """A dimmable light: brightness in the entity's own scale (0..maximum) on the same topics."""
        return {
            "brightness_command_topic": self.topics.command(spec.id),
            "brightness_state_topic": self.topics.state(spec.id),
            "brightness_value_template": "{{ value_json | int }}",
            "brightness_scale": int(spec.maximum or 100),
        }

    def configs(self, entities: Mapping[str, EntitySpec], extras: Mapping[str, Extra]) -> dict[str, bytes]:
        """Config topic -> retained payload, for every entity and registered extra."""
        out: dict[str, bytes] = {}
        for spec in entities.values():
            if spec.component in CONTROLLER_COMPONENTS:
                continue  # only its owner knows its topics: see register_discovery
            out[self.config_topic(str(spec.component), spec.id)] = dumps(self.entity_config(spec))
        for entity, extra in extras.items():
            out[self.config_topic(extra.component, entity)] = dumps({**self.common(entity), **extra.config})
        return out

    def removals(self, current: Mapping[str, bytes]) -> dict[str, bytes]:
        """Empty retained configs for topics published before and no longer configured; remembers ``current``."""
        previous = self._remembered()
        gone = {topic: b"" for topic in sorted(previous - set(current))}
        self._remember(set(current))
        if gone:
            log.info("removing %d entities no longer configured from the hub", len(gone))
        return gone

    def _remembered(self) -> set[str]:
        try:
            data = json.loads(self.memory.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError):
            log.warning("%s unreadable: entities removed from the config may stay on the hub", self.memory)
            return set()
        prefix = f"{self.topics.discovery_prefix}/"
        topics = data.get("topics", []) if isinstance(data, dict) else []
        return {t for t in topics if isinstance(t, str) and t.startswith(prefix)}

    def _remember(self, topics: set[str]) -> None:
        temporary = self.memory.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps({"version": 1, "topics": sorted(topics)}), encoding="utf-8")
            temporary.replace(self.memory)
        except OSError as exc:
            log.warning("cannot remember the discovery topics in %s: %s", self.memory, exc.strerror)
