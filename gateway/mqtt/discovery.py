"""Home Assistant MQTT discovery: one retained config per entity, one hub device per physical device.

Topic: ``<prefix>/<component>/<node_id>/<object_id>/config`` with ``node_id``
the gateway id and ``object_id`` the entity id, so many gateways share one
broker and one hub without collisions. Every config carries:

* ``unique_id`` ``<gateway id>_<entity>`` (never changed: an installed hub keeps its entities),
  ``object_id`` (what Home Assistant 2025.4 reads) and ``default_entity_id``
  (``<component>.<gateway id>_<entity>``, what newer releases read instead; 2025.4 drops it silently);
* a ``device`` block: each configured device (``[[devices]]``: a relay, a sensor box) is its own hub
  device, named as configured, with ``model`` (the driver unless configured), ``manufacturer`` and
  ``serial_number`` when configured, linked by ``via_device`` to the gateway's device (identifiers
  ``edge-gateway-<id>``, with ``sw_version``), which also holds the rules' entities (thermostats,
  alarms, virtuals) and the gateway's own diagnostics;
* the entity's name: none for a device's main entity (the hub names it after the device: "Alarm siren"),
  the device class ("Temperature") or the entity for the others;
* ``availability`` on both ``<base>/status`` (the gateway, with its last will)
  and ``<base>/availability/<entity>`` (the entity's driver), ``availability_mode: all``;
* ``qos: 1``, so the hub sends commands at least once (HA's default is QoS 0);
* ``expire_after``: three reporting intervals, for entities that declare one;
* ``entity_category`` for what is diagnostic (a thermostat's action, the gateway's health),
  an ``icon`` for sensors without a device class.

States are bare JSON values (``true``, ``21.5``, ``"heating"``), hence ``value_template:
"{{ value_json }}"`` on sensors (no quoted text), ``state_on: "true"`` and ``payload_on: "true"``
for what reads booleans. A siren takes Home Assistant's ``duration`` (a claim that lets go by itself,
gateway/mqtt/commands.py); no volume, no tones. A siren the hub may switch also gets a ``button``
"Test (2 s)". The gateway's ``<base>/health`` report becomes diagnostic entities: connectivity, last
start, outbox depth, rejected commands, the last rule reload, and each device's driver status.

Entities removed from the config are removed from
the hub: the topics published last time are remembered in
``<state_dir>/discovery.json`` and those no longer configured get an empty
retained config, which is how Home Assistant deletes an entity.

Other code adds components the config does not describe (the thermostat's
``climate``, ``number`` and ``select``, the alarm's ``alarm_control_panel``; an ``event`` entity for
a button's presses would come the same way) with
:meth:`gateway.mqtt.bridge.MqttBridge.register_discovery`; they get the same
device block, availability, unique id and QoS (keys they give win: e.g. their own ``availability``).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.entities import CONTROLLER_COMPONENTS, Component, EntitySpec
from gateway.mqtt.topics import ONLINE, Topics, dumps

log = logging.getLogger(__name__)

EXPIRE_INTERVALS = 3
"""A sensor is shown unavailable after missing this many of its reporting intervals."""
SOFTWARE = "edge-gateway"
ON_OFF = "{{ 'ON' if value_json else 'OFF' }}"
EVENT_TYPE = "{% if value_json %}{\"event_type\":\"{{ value_json }}\"}{% endif %}"
"""An ``event`` entity's state is the event type for a moment, then null: HA ignores the empty payload
that null renders to, and ignores a retained payload replayed after a reconnection."""
VALUE = "{{ value_json }}"
"""A state is a JSON value: ``"heating"`` is shown as heating, not with its quotes."""
DEFAULT_ICON = "mdi:information-outline"
"""For a sensor with no device class, no icon of its own and none configured on its device."""
HA_MIN_STEP = 0.001
"""The finest ``step`` Home Assistant accepts for a ``number`` (a finer one is refused whole)."""
SIREN_TEST_S = 2
"""How long the "Test" button of a siren sounds it."""


@dataclass(slots=True, frozen=True)
class Extra:
    """A component registered by other code: its HA component name and its specific keys."""

    component: str
    config: Mapping[str, object]


@dataclass(slots=True, frozen=True)
class HubDevice:
    """One configured device (``[[devices]]``) as the hub shows it, with the entities it gives."""

    id: str
    name: str
    entities: tuple[str, ...]
    model: str
    manufacturer: str | None = None
    serial_number: str | None = None
    icon: str | None = None


class _DeviceConfig(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def driver(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def model(self) -> str | None: ...
    @property
    def manufacturer(self) -> str | None: ...
    @property
    def serial_number(self) -> str | None: ...
    @property
    def icon(self) -> str | None: ...


class _Driver(Protocol):
    @property
    def config(self) -> _DeviceConfig: ...
    def entities(self) -> Sequence[EntitySpec]: ...


def hub_devices(drivers: Iterable[_Driver]) -> list[HubDevice]:
    """The hub devices of the configured drivers (``config.drivers()``: nothing is opened)."""
    return [
        HubDevice(d.config.id, d.config.name or human_name(d.config.id), tuple(s.id for s in d.entities()),
                  d.config.model or d.config.driver, d.config.manufacturer, d.config.serial_number, d.config.icon)
        for d in drivers
    ]


def human_name(entity: str) -> str:
    return entity.replace("_", " ").capitalize()


def slug(text: str) -> str:
    """As Home Assistant makes an entity id of a name: lower case, ``_`` for anything else."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")


def device_block(gateway_id: str, name: str | None, version: str) -> dict[str, object]:
    return {
        "identifiers": [f"{SOFTWARE}-{gateway_id}"],
        "name": name or gateway_id,
        "manufacturer": "edge-gateway project",
        "model": "IoT edge gateway",
        "sw_version": version,
    }


def physical_block(gateway_id: str, device: HubDevice) -> dict[str, object]:
    """A configured device's block, linked to the gateway's (``via_device``), as Zigbee2MQTT links to its bridge."""
    block: dict[str, object] = {
        "identifiers": [f"{SOFTWARE}-{gateway_id}-{device.id}"],
        "name": device.name,
        "model": device.model,
        "via_device": f"{SOFTWARE}-{gateway_id}",
    }
    if device.manufacturer is not None:
        block["manufacturer"] = device.manufacturer
    if device.serial_number is not None:
        block["serial_number"] = device.serial_number
    return block


class Discovery:
    """Builds the discovery configs of one gateway and remembers what it published."""

    def __init__(self, topics: Topics, gateway_id: str, name: str | None, version: str, memory: Path,
                 *, devices: Sequence[HubDevice] = ()) -> None:
        self.topics = topics
        self.gateway_id = gateway_id
        self.device = device_block(gateway_id, name, version)
        self.origin = {"name": SOFTWARE, "sw": version}
        self.memory = memory
        self.devices = list(devices)
        self._device_of = {entity: device for device in self.devices for entity in device.entities}
        self._blocks = {device.id: physical_block(gateway_id, device) for device in self.devices}

    def config_topic(self, component: str, entity: str) -> str:
        return f"{self.topics.discovery_prefix}/{component}/{self.gateway_id}/{entity}/config"

    def common(self, entity: str, component: str, spec: EntitySpec | None = None) -> dict[str, object]:
        device = self._device_of.get(entity)
        return {
            "name": self._name(entity, device, spec),
            "unique_id": f"{self.gateway_id}_{entity}",
            "object_id": f"{self.gateway_id}_{entity}",
            "default_entity_id": f"{component}.{slug(f'{self.gateway_id}_{entity}')}",
            "device": self.device if device is None else self._blocks[device.id],
            "origin": self.origin,
            "availability": [{"topic": self.topics.status}, {"topic": self.topics.availability(entity)}],
            "availability_mode": "all",
            "qos": 1,
        }

    @staticmethod
    def _name(entity: str, device: HubDevice | None, spec: EntitySpec | None) -> str | None:
        """None (named after its device) for a device's main entity; else what tells it from its siblings."""
        if device is None:
            return human_name(entity)
        if entity == device.id or len(device.entities) == 1:
            return None
        if spec is not None and spec.device_class is not None:
            return human_name(spec.device_class)
        return human_name(entity.removeprefix(f"{device.id}_"))

    def entity_config(self, spec: EntitySpec) -> dict[str, object]:
        """The config of one configured entity (see the module docstring for the conventions)."""
        config = self.common(spec.id, str(spec.component), spec)
        config["state_topic"] = self.topics.state(spec.id)
        config.update(self._presentation(spec))
        if spec.report_interval is not None and spec.component in (Component.SENSOR, Component.BINARY_SENSOR):
            config["expire_after"] = max(1, math.ceil(spec.report_interval * EXPIRE_INTERVALS))
        config.update(self._shape(spec))
        return config

    def _shape(self, spec: EntitySpec) -> dict[str, object]:
        """The keys that depend on the component: how the hub reads its state and sends commands."""
        if spec.component is Component.SENSOR:
            return self._sensor(spec)
        if spec.component is Component.BINARY_SENSOR:
            return {"payload_on": "true", "payload_off": "false"}
        if spec.component is Component.EVENT:
            return {"event_types": list(spec.options), "value_template": EVENT_TYPE}
        if spec.component is Component.FAN:
            return self._fan(spec)
        if spec.component is Component.NUMBER:
            return self._number(spec)
        return self._switchable(spec)

    @staticmethod
    def _sensor(spec: EntitySpec) -> dict[str, object]:
        config: dict[str, object] = {"value_template": VALUE}
        if spec.unit is not None:
            config["unit_of_measurement"] = spec.unit
            if spec.state_class is not None:
                config["state_class"] = spec.state_class
        return config

    def _switchable(self, spec: EntitySpec) -> dict[str, object]:
        """A switch, light or siren: ON/OFF commands on its set topic."""
        config: dict[str, object] = {
            "command_topic": self.topics.command(spec.id), "payload_on": "ON", "payload_off": "OFF"}
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

    def _fan(self, spec: EntitySpec) -> dict[str, object]:
        """A PWM fan: on/off and a percentage (1..maximum), all on the entity's one set and state topics."""
        return {
            "command_topic": self.topics.command(spec.id),
            "payload_on": "ON",
            "payload_off": "OFF",
            "state_value_template": ON_OFF,
            "percentage_command_topic": self.topics.command(spec.id),
            "percentage_state_topic": self.topics.state(spec.id),
            "percentage_value_template": "{{ value_json | int }}",
            "speed_range_min": 1,
            "speed_range_max": int(spec.maximum or 100),
        }

    def _number(self, spec: EntitySpec) -> dict[str, object]:
        """A settable number (a servo's angle) within its limits; a detached servo (null) shows unknown."""
        config: dict[str, object] = {
            "command_topic": self.topics.command(spec.id),
            "value_template": "{{ value_json if value_json is not none else 'None' }}",
            "mode": "slider",
            "step": 1 if spec.step is None else max(spec.step, HA_MIN_STEP),
        }
        if spec.minimum is not None:
            config["min"] = spec.minimum
        if spec.maximum is not None:
            config["max"] = spec.maximum
        if spec.unit is not None:
            config["unit_of_measurement"] = spec.unit
        return config
    def _presentation(self, spec: EntitySpec) -> dict[str, object]:
        """Device class, entity category and icon (the spec's, its device's, or a default for a sensor)."""
        keys: dict[str, object] = {}
        if spec.device_class is not None:
            keys["device_class"] = spec.device_class
        if spec.category is not None:
            keys["entity_category"] = spec.category
        device = self._device_of.get(spec.id)
        icon = spec.icon or (device.icon if device is not None else None)
        if spec.device_class is None and (icon is not None or spec.component is Component.SENSOR):
            keys["icon"] = icon or DEFAULT_ICON
        return keys

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
            if spec.component is Component.SIREN:
                test = f"{spec.id}_test"
                out[self.config_topic("button", test)] = dumps(self.siren_test(spec))
        for entity, extra in extras.items():
            out[self.config_topic(extra.component, entity)] = dumps(
                {**self.common(entity, extra.component), **extra.config})
        for component, entity, config in self.diagnostics():
            out[self.config_topic(component, entity)] = dumps(config)
        return out

    def siren_test(self, spec: EntitySpec) -> dict[str, object]:
        """A button that sounds a siren the hub may switch for :data:`SIREN_TEST_S` (a timed claim)."""
        config = self.common(f"{spec.id}_test", "button")
        config.update(
            name=f"Test ({SIREN_TEST_S} s)",
            availability=[{"topic": self.topics.status}, {"topic": self.topics.availability(spec.id)}],
            command_topic=self.topics.command(spec.id),
            payload_press=json.dumps({"state": "ON", "duration": SIREN_TEST_S}),
            entity_category="config",
            icon="mdi:bullhorn-outline",
        )
        config["device"] = self._blocks[self._device_of[spec.id].id] if spec.id in self._device_of else self.device
        return config

    def diagnostics(self) -> list[tuple[str, str, dict[str, object]]]:
        """``(component, entity, config)``: the gateway's ``<base>/health`` report as diagnostic entities,
        on the gateway's device, and each device's driver status on that device."""
        health = self.topics.health
        gateway_only = [{"topic": self.topics.status}]

        def sensor(entity: str, name: str, template: str, **keys: object) -> tuple[str, str, dict[str, object]]:
            config = self.common(entity, "sensor")
            config.update(name=name, availability=gateway_only, state_topic=health, value_template=template,
                          entity_category="diagnostic", **keys)
            return "sensor", entity, config

        connectivity = self.common("gateway_connectivity", "binary_sensor")
        connectivity.update(name="Connectivity", state_topic=self.topics.status, payload_on=ONLINE,
                            payload_off="offline", device_class="connectivity", entity_category="diagnostic")
        for key in ("availability", "availability_mode"):  # offline is its state, not its absence
            del connectivity[key]
        out: list[tuple[str, str, dict[str, object]]] = [
            ("binary_sensor", "gateway_connectivity", connectivity),
            sensor("gateway_started", "Started",
                   "{{ (as_timestamp(value_json.ts) - value_json.uptime) | round(0)"
                   " | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false) }}",
                   device_class="timestamp"),
            sensor("gateway_outbox_depth", "Outbox depth", "{{ value_json.outbox.depth }}",
                   state_class="measurement", unit_of_measurement="events", icon="mdi:tray-full"),
            sensor("gateway_commands_rejected", "Commands rejected", "{{ value_json.commands.rejected }}",
                   state_class="total_increasing", icon="mdi:cancel"),
            sensor("gateway_last_reload", "Last rule reload",
                   "{{ value_json.rules.last_reload.result if value_json.rules is defined"
                   " and value_json.rules.last_reload else 'none' }}",
                   icon="mdi:file-check-outline"),
        ]
        for device in self.devices:
            entity = f"{device.id}_driver"
            _, _, config = sensor(
                entity, "Driver",
                f"{{{{ value_json.drivers['{device.id}'].status if value_json.drivers is defined"
                f" and '{device.id}' in value_json.drivers else 'unknown' }}}}",
                icon="mdi:chip")
            config["device"] = self._blocks[device.id]
            out.append(("sensor", entity, config))
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
