"""Entities from MQTT: values other devices publish, heard as readings of the gateway's own.

A ``[[mqtt_entities]]`` table of ``config.toml`` names a topic someone else publishes (a Zigbee2MQTT
button, a Tasmota plug, another gateway's sensor), where the value sits in its payload, and what
the value is::

    [[mqtt_entities]]
    id = "hall_button"
    topic = "zigbee2mqtt/hall_button"        # {"action": "single", "battery": 97}
    value = "action"                         # a path into the JSON payload
    type = "text"
    values = ["single", "double", "hold"]    # anything else is refused

    [[mqtt_entities]]
    id = "plug_power"
    topic = "tele/plug/SENSOR"               # {"ENERGY": {"Power": 41.5}}
    value = "ENERGY.Power"
    type = "number"
    unit = "W"
    minimum = 0
    maximum = 4000

Each value that passes becomes a ``READING`` event for ``id`` on the bus, so rule triggers and
conditions, traces, the state store and ``gateway status`` treat it exactly as a local sensor's;
the rules loader knows the entity (:meth:`gateway.config.Config.entities`), so ``gateway check``
refuses a rule naming an unknown one. These entities are inputs only: they are not announced to
Home Assistant (they already are someone's) and take no commands.

The path is a small language parsed here, never evaluated: names separated by dots, and ``[n]``
for the n-th element of a list (``"data[0].temp"``, ``"ENERGY.Power"``); ``""`` is the whole
payload (``stat/plug/POWER`` = ``ON``). A payload that is not JSON is the bare text.

The inbound path is bounded like hub commands: payloads over :data:`MAX_PAYLOAD` bytes are refused
unread; each topic has a token bucket (``rate`` messages a second, ``burst`` at once) and the excess
is counted, never queued; the bus coalesces readings of one entity. A payload that does not parse or
fails validation is counted per entity and logged once while it lasts (:class:`core.logonce.LogOnce`),
never raised on paho's thread. The subscriptions are the link's routes: renewed after every
reconnection.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal, NoReturn

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.entities import Component, EntitySpec
from core.events import Event, EventFactory, Kind, Value
from core.logonce import LogOnce
from core.values import parse_on_off
from gateway.mqtt.commands import CommandRejected, decode

log = logging.getLogger(__name__)

MAX_PAYLOAD = 16_384
"""Bytes: a foreign payload larger than this is refused unread (a Zigbee2MQTT device's is < 1 KiB)."""
MAX_PATH = 16
"""Steps in a value path at most."""
MAX_INDEX = 1000
"""The largest ``[n]`` a path may take."""

Step = str | int
_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_INDEX = re.compile(r"\[(\d{1,4})\]")
_ENTITY_ID = r"^[a-z][a-z0-9_]{0,63}$"


def parse_path(text: str) -> tuple[Step, ...]:
    """``"ENERGY.Power"`` -> ``("ENERGY", "Power")``; ``"data[0].temp"`` -> ``("data", 0, "temp")``.

    ValueError with the position of the first character that is not part of the syntax."""
    steps: list[Step] = []
    position = 0
    expect_name = True
    while position < len(text):
        index = _INDEX.match(text, position)
        if index is not None:
            number = int(index.group(1))
            if number > MAX_INDEX:
                raise ValueError(f"index [{number}] is larger than {MAX_INDEX}")
            steps.append(number)
            position = index.end()
            expect_name = False
        elif expect_name and (name := _NAME.match(text, position)) is not None:
            steps.append(name.group(0))
            position = name.end()
            expect_name = False
        elif not expect_name and text[position] == "." and position + 1 < len(text):
            position += 1
            expect_name = True
        else:
            raise ValueError(f"unexpected {text[position]!r} at position {position} of {text!r}: a path is "
                             "names separated by dots, with [n] for a list element (e.g. ENERGY.Power, data[0].temp)")
        if len(steps) > MAX_PATH:
            raise ValueError(f"a path has at most {MAX_PATH} steps")
    if text and expect_name:
        raise ValueError(f"{text!r} ends with a dot")
    return tuple(steps)


def extract(document: object, path: Sequence[Step]) -> object:
    """The value at ``path`` in a decoded JSON ``document``; ValueError naming the step that is missing."""
    current = document
    for step in path:
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                raise ValueError(f"no element [{step}] in the payload")
            current = current[step]
        else:
            if not isinstance(current, dict) or step not in current:
                raise ValueError(f"no key {step!r} in the payload")
            current = current[step]
    return current


class MqttEntityConfig(BaseModel):
    """One ``[[mqtt_entities]]`` table (see the module docstring). ``defer_build``: validated inside the
    house's config, whose validator holds this schema (no second build at import)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str = Field(pattern=_ENTITY_ID)
    topic: str = Field(min_length=1, max_length=256)
    value: str = ""
    """The path into the payload; empty: the whole payload."""
    type: Literal["number", "on_off", "text"]
    unit: str | None = Field(default=None, max_length=16)
    device_class: str | None = Field(default=None, max_length=32)
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[str, ...] = ()
    """``text``: the values allowed (empty: any text up to 255 characters)."""
    rate: float = Field(default=10.0, gt=0, le=1000)
    """Messages a second taken from the topic; beyond ``burst`` at once the excess is counted and dropped."""
    burst: int = Field(default=20, ge=1, le=10_000)

    @field_validator("topic")
    @classmethod
    def _exact_topic(cls, topic: str) -> str:
        if "+" in topic or "#" in topic:
            raise ValueError("one exact topic: the wildcards + and # are not allowed (one entity, one value)")
        return topic

    @field_validator("value")
    @classmethod
    def _path(cls, value: str) -> str:
        parse_path(value)
        return value

    @field_validator("minimum", "maximum")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _fits_the_type(self) -> MqttEntityConfig:
        if self.type != "number" and (self.unit is not None or self.minimum is not None or self.maximum is not None):
            raise ValueError(f"unit, minimum and maximum are for type = \"number\", not {self.type!r}")
        if self.type != "text" and self.values:
            raise ValueError(f"values are for type = \"text\", not {self.type!r}")
        if self.minimum is not None and self.maximum is not None and self.minimum >= self.maximum:
            raise ValueError(f"minimum {self.minimum:g} must be below maximum {self.maximum:g}")
        return self

    @property
    def path(self) -> tuple[Step, ...]:
        return parse_path(self.value)

    def spec(self) -> EntitySpec:
        """The entity the rules loader and the state store know: a sensor, or a binary sensor for on/off;
        a text entity with ``values`` lists them as its ``options`` (the loader checks ``to``/``equals``)."""
        component = Component.BINARY_SENSOR if self.type == "on_off" else Component.SENSOR
        return EntitySpec(self.id, component, unit=self.unit, device_class=self.device_class,
                          minimum=self.minimum, maximum=self.maximum, options=self.values)

    def convert(self, raw: object) -> Value:
        """A value found in the payload -> the typed value of the entity; ValueError saying why not."""
        if self.type == "on_off":
            return _on_off(raw)
        if self.type == "number":
            return self._number(raw)
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            _refuse(f"expected text, got {_shown(raw)}")
        text = raw if isinstance(raw, str) else json.dumps(raw)
        if self.values and text not in self.values:
            _refuse(f"{_shown(text)} is not one of {', '.join(self.values)}")
        if len(text) > 255:
            _refuse("text longer than 255 characters")
        return text

    def _number(self, raw: object) -> float:
        if isinstance(raw, str):
            try:
                raw = float(raw.strip())
            except ValueError:
                _refuse(f"expected a number, got {_shown(raw)}")
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            _refuse(f"expected a finite number, got {_shown(raw)}")
        if self.minimum is not None and raw < self.minimum:
            _refuse(f"{raw:g} is below the minimum {self.minimum:g}")
        if self.maximum is not None and raw > self.maximum:
            _refuse(f"{raw:g} is above the maximum {self.maximum:g}")
        return float(raw)


def _on_off(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    word = parse_on_off(raw.strip()) if isinstance(raw, str) else None
    if word is None:
        _refuse(f"expected ON or OFF, got {_shown(raw)}")
    return word


def _refuse(reason: str) -> NoReturn:
    raise ValueError(reason)


def _shown(raw: object) -> str:
    text = json.dumps(raw) if not isinstance(raw, str) else repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ForeignEntities:
    """The ``[[mqtt_entities]]`` of a config: subscribed by the bridge's link, heard on paho's thread."""

    def __init__(self, entities: Sequence[MqttEntityConfig], post: Callable[[Event], None], events: EventFactory,
                 ) -> None:
        self._post = post
        self._events = events
        self._by_topic: dict[str, list[tuple[MqttEntityConfig, tuple[Step, ...]]]] = {}
        for entity in entities:
            self._by_topic.setdefault(entity.topic, []).append((entity, entity.path))
        now = events.clock.monotonic()
        self._buckets = {topic: _Bucket(min(e.rate for e, _ in group), min(e.burst for e, _ in group), now)
                         for topic, group in self._by_topic.items()}
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        """Values accepted, per entity."""
        self.invalid: Counter[str] = Counter()
        """Payloads refused (not parsed, a path not found, a value out of type or range), per entity."""
        self.rate_limited: Counter[str] = Counter()
        """Messages dropped over a topic's rate, per topic."""
        self._complaints = {entity.id: LogOnce(log) for entity in entities}

    @property
    def topics(self) -> list[str]:
        return list(self._by_topic)

    def status(self) -> dict[str, dict[str, object]]:
        """Per entity: its topic and counters (``gateway status``, ``<base>/health``); any thread."""
        with self._lock:
            return {entity.id: {"topic": topic, "received": self.received[entity.id],
                                "invalid": self.invalid[entity.id], "rate_limited": self.rate_limited[topic]}
                    for topic, group in self._by_topic.items() for entity, _ in group}

    def on_message(self, client: object, userdata: object, message: object) -> None:
        """paho's callback for every subscribed topic (network thread). Never raises."""
        topic: str = getattr(message, "topic", "")
        payload = bytes(getattr(message, "payload", b""))
        group = self._by_topic.get(topic)
        if group is None:
            return
        with self._lock:
            admitted = self._buckets[topic].take(self._events.clock.monotonic())
            if not admitted:
                self.rate_limited[topic] += 1
        if not admitted:
            return
        try:
            document = decode(payload, MAX_PAYLOAD)  # the hub commands' decoding: JSON, else the bare text
        except CommandRejected as exc:
            for entity, _ in group:
                self._invalid(entity, str(exc))
            return
        for entity, path in group:
            self.hear(entity, path, document)

    def hear(self, entity: MqttEntityConfig, path: tuple[Step, ...], document: object) -> Event | None:
        """One entity's value out of a decoded payload, posted as a reading; None (counted, logged once) if bad."""
        try:
            value = entity.convert(extract(document, path))
        except ValueError as exc:
            self._invalid(entity, str(exc))
            return None
        with self._lock:
            self.received[entity.id] += 1
        complaint = self._complaints[entity.id]
        if complaint.active:
            complaint.ended(logging.INFO, "mqtt entity %s: valid values again on %s after %d refused",
                            entity.id, entity.topic[:200])
        event = self._events.make(Kind.READING, entity.id, value, unit=entity.unit, detail=f"mqtt {entity.topic}"[:200])
        self._post(event)
        return event

    def _invalid(self, entity: MqttEntityConfig, reason: str) -> None:
        with self._lock:
            self.invalid[entity.id] += 1
        self._complaints[entity.id].holds(logging.WARNING, "mqtt entity %s: payload on %s refused: %s "
                                          "(logged once until a valid value comes; counted in status)",
                                          entity.id, entity.topic[:200], reason[:200])


def specs(entities: Sequence[MqttEntityConfig]) -> list[EntitySpec]:
    return [entity.spec() for entity in entities]


__all__ = ["MAX_PAYLOAD", "ForeignEntities", "MqttEntityConfig", "extract", "parse_path", "specs"]
