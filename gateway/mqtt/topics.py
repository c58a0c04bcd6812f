"""The topic tree and the JSON payloads of contract version 1 (``docs/mqtt.md``).

One place builds every topic and payload, so the documented contract and the
code cannot drift apart. Payloads are compact JSON (no spaces); optional
fields that are null are *omitted* (a hub reads a missing ``unit`` as none),
while ``value`` is always present, even when null.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from math import isfinite

from core.events import Event, Kind, Value
from core.floattext import float_text

STATE_KINDS = frozenset({Kind.READING, Kind.STATE})
"""Kinds that update the retained ``state/<entity>`` topic."""

TOPICS_REMEMBERED = 1024
"""Entities whose ``event/<entity>`` (the bridge) or ``state/<entity>`` (the retained store) topic is remembered
rather than built per event on the dispatcher thread (issue 14): more than a gateway has; beyond, a topic is built
per event, as before, so a stream of ever new entities costs no memory."""

ONLINE = "online"
OFFLINE = "offline"


def remember_topic(memo: dict[str, str], entity: str, topic: str) -> str:
    """``topic``, kept in ``memo`` as ``entity``'s while it holds fewer than :data:`TOPICS_REMEMBERED` (the one
    bound of the bridge's and the retained store's topic memories)."""
    if len(memo) < TOPICS_REMEMBERED:
        memo[entity] = topic
    return topic


EVENT_STREAM = "events"
"""The level under ``<base>`` of the one stream of ``[mqtt] event_batches`` (:attr:`Topics.events`). A rule may not
publish there: ``rules.model.EVENT_STREAM`` says the same below the gateway's layer (a test holds them equal)."""


_last_second: list[tuple[int, str]] = [(-1, "")]
"""The last whole second :func:`iso_utc` formatted, and its text up to the seconds (replaced whole: a tuple
assignment in the list, so any thread reads a consistent pair)."""


_last_stamp: list[tuple[float, str]] = [(math.nan, "")]
"""The last time :func:`iso_utc` wrote, and its text (swapped whole, as :data:`_last_second`; NaN matches no time):
the lines of one serial read share their time stamp (``EventFactory.make_at``), so at 10,000 lines/s most
readings' times are the one before's (issue 14)."""


_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))
"""The end of every timestamp, by its milliseconds: a lookup, where an f-string's ``:03d`` took half of
:func:`iso_utc`'s time."""


def iso_utc(ts: float) -> str:
    """Wall-clock seconds as ISO 8601 UTC with milliseconds: ``2026-01-01T00:00:00.000Z``.

    Exactly what ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`` says (microseconds
    rounded half to even, then cut to milliseconds), at a fifth of its cost: the date and time of the
    second are formatted once per second (every event payload carries one; issue 14), and the last text is
    reused for the same time (:data:`_last_stamp`)."""
    stamp, text = _last_stamp[0]
    if stamp == ts:
        return text
    fraction, whole = math.modf(ts)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    cached, text = _last_second[0]
    if cached != second:
        text = datetime.fromtimestamp(second, UTC).isoformat(timespec="seconds")[:-6]
        _last_second[0] = (second, text)
    text += _MILLIS[micros // 1000]
    _last_stamp[0] = (ts, text)
    return text


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every payload: ``json.dumps`` with any non-default option builds a new one per call (half of
its cost for an event's payload). It keeps no state between calls, so threads share it."""


def dumps(data: object) -> bytes:
    return _ENCODER.encode(data).encode()


_json_string = json.encoder.encode_basestring
"""What the encoder writes a string with (``ensure_ascii=False``: the C function when there is one)."""

_KIND_TEXT = {kind: _json_string(str(kind)) for kind in Kind}


def _scalar(value: Value) -> str:
    """The JSON text of one event value, exactly as :func:`dumps` writes it (``json`` writes a float with
    ``float.__repr__``, here :func:`~core.floattext.float_text`, and an int with ``int.__repr__``); NaN and infinity
    as null (:func:`_finite`).

    Written by hand for the exact types every sensor sends, a tenth of the encoder's cost (issue 14: one encoder
    call per event and per state was a quarter of forwarding); anything else, a subclass included, is left to
    the encoder."""
    if type(value) is float:
        return float_text(value) if math.isfinite(value) else "null"
    if type(value) is str:
        return _json_string(value)
    if type(value) is int:
        return repr(value)
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    return _ENCODER.encode(_finite(value))


def event_payload(event: Event, seq: int) -> bytes:
    """The ``event/<entity>`` payload: ``id``, ``seq``, ``entity``, ``kind``, ``value``, ``ts``, then
    ``unit``, ``rule``, ``cause``, ``detail`` when not null.

    Written field by field rather than as a dict through the encoder (issue 14), byte for byte what
    :func:`dumps` of that dict says (tests/test_mqtt_payload_encoding.py holds them equal for every value)."""
    # Calls saved per event (issue 14): ``id``, ``entity`` and the optional texts are strings (the C string
    # encoder is what _scalar and the encoder write any string with, a subclass too), and a finite float, what
    # sensors send, is its repr (remembered: core.floattext).
    value = event.value
    shown = float_text(value) if type(value) is float and isfinite(value) else _scalar(value)
    text = (f'{{"id":{_json_string(event.id)},"seq":{seq:d},"entity":{_json_string(event.entity)},'
            f'"kind":{_KIND_TEXT[event.kind]},"value":{shown},"ts":"{iso_utc(event.ts)}"')
    if event.unit is not None:
        text += f',"unit":{_json_string(event.unit)}'
    if event.rule is not None:
        text += f',"rule":{_json_string(event.rule)}'
    if event.cause is not None:
        text += f',"cause":{_json_string(event.cause)}'
    if event.detail is not None:
        text += f',"detail":{_json_string(event.detail)}'
    return (text + "}").encode()


def event_array(payloads: list[bytes]) -> bytes:
    """The ``<base>/events`` payload (``[mqtt] event_batches``): a JSON array of ``event/<entity>`` payloads, in
    ``seq`` order. Joined as bytes, not re-encoded: the outbox keeps each event's own payload."""
    return b"[" + b",".join(payloads) + b"]"


def event_array_size(sizes: int, count: int) -> int:
    """Bytes of :func:`event_array` of ``count`` payloads of ``sizes`` bytes in all."""
    return sizes + count + 1


def state_payload(value: Value) -> bytes:
    """The retained ``state/<entity>`` payload: the bare JSON value (``true``, ``21.5``, ``"heat"``).

    Bare, so that any hub reads it without a template. The event that set it,
    with its id, unit, time and cause, is on ``event/<entity>``; the command a
    state confirms is named in the ``done`` result on ``result/<entity>``."""
    return _scalar(value).encode()


def result_payload(
    entity: str, status: str, command_id: str | None, ts: float, *, value: Value = None, reason: str | None = None
) -> bytes:
    """The ``result/<entity>`` payload: what became of one hub command.

    ``status`` is ``accepted`` (validated and queued), then ``done`` (the actuator
    confirmed ``value``) or ``failed`` (``reason``); or ``rejected`` at once (``reason``).
    ``command`` is the id of the command event (of the rejection event when rejected)."""
    data: dict[str, Value] = {"entity": entity, "status": status, "ts": iso_utc(ts)}
    if command_id is not None:
        data["command"] = command_id
    if value is not None:
        data["value"] = _finite(value)
    if reason is not None:
        data["reason"] = reason
    return dumps(data)


def _finite(value: Value) -> Value:
    """JSON has no NaN or infinity: such a reading is sent as null rather than breaking the hub's parser."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(slots=True, frozen=True)
class Topics:
    """Every topic of one gateway, under its base topic (default ``gateway/<id>``)."""

    base: str
    discovery_prefix: str = "homeassistant"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def set_filter(self) -> str:
        return f"{self.base}/set/+"

    @property
    def set_prefix(self) -> str:
        return f"{self.base}/set/"

    @property
    def marker(self) -> str:
        """Where the bridge sends itself a marker after a reconnection, to tell the commands the broker
        kept while the gateway was offline from live ones (docs/mqtt.md, *Commands sent while the
        gateway was offline*). Under ``set/``, so the subscription and the ACL that bring commands bring
        it too; no entity id starts with ``_``, so it never names one."""
        return f"{self.base}/set/_marker"

    @property
    def hub_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def event(self, entity: str) -> str:
        return f"{self.base}/event/{entity}"

    @property
    def events(self) -> str:
        """The one stream of ``[mqtt] event_batches``: arrays of events of every entity, in ``seq`` order
        (MQTT keeps the order per topic, so one topic keeps it across entities)."""
        return f"{self.base}/{EVENT_STREAM}"

    def state(self, entity: str) -> str:
        return f"{self.base}/state/{entity}"

    def availability(self, entity: str) -> str:
        return f"{self.base}/availability/{entity}"

    def command(self, entity: str) -> str:
        return f"{self.base}/set/{entity}"

    def result(self, entity: str) -> str:
        return f"{self.base}/result/{entity}"
