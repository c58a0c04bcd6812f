"""Hub commands on ``<base>/set/<entity>``: validated at the edge, then posted as events.

A command payload is untrusted input from the network. It is checked here,
on paho's network thread, before anything reaches the bus:

1. size: longer than ``mqtt.command_max_bytes`` is rejected unread;
2. text: must be UTF-8;
3. shape: JSON if it parses (``true``, ``21.5``, ``{"state": "ON"}``), else the
   bare text (``ON``); ``NaN``/``Infinity`` are not numbers here;
4. value: the target's pydantic validator (see below).

The outcome is a value to command, or :class:`CommandRejected` with a reason a
person can read. Nothing else escapes: the fuzz tests hold this module to that.

Built-in targets are the writable entities of the config (switches, lights,
sirens). What each takes is :func:`drivers.base.accepts`, the same rule the
rules loader checks ``set`` actions with: a switch or siren a boolean, a
dimmable light (one with ``minimum``/``maximum``) a boolean or a brightness
within them. The hub's spellings become those typed values here, at the edge
and nowhere else: ``ON``/``OFF``, ``true``/``false``, ``yes``/``no``, ``1``/``0``
(any case, the words of :mod:`core.values`), JSON booleans, and
``{"state": "ON"}`` (what Home Assistant sends to a siren) are booleans; on a
dimmable light ``1``/``0`` are brightnesses, and numeric text is a number.

A siren also takes Home Assistant's ``duration`` (``{"state": "ON", "duration": 5}``, seconds,
more than 0 and at most :data:`MAX_HOLD_S`): the validator answers :class:`Held`, and the
command's claim lets go by itself after that time (``Event.hold_s``, ended by the arbiter,
gateway/authority.py). The siren's own limits still apply: its envelope's ``max_on_s`` ends
any claim sooner. Volume and tones are not offered (discovery says so): a payload with them is
refused.

Other code registers more targets (the thermostat's setpoint and mode, the
alarm panel) with :meth:`gateway.mqtt.bridge.MqttBridge.register_command`::

    from pydantic import TypeAdapter
    setpoint = TypeAdapter(Annotated[float, Field(ge=5, le=30)])
    bridge.register_command("thermostat_setpoint", setpoint.validate_python)
    bridge.register_command("thermostat_mode", TypeAdapter(Literal["heat", "off"]).validate_python)

A validator gets the decoded payload (a JSON value or the bare string) and
returns the event value (a JSON scalar), or raises ``ValueError`` /
``pydantic.ValidationError`` with the reason. It runs on paho's thread: it must
be thread-safe and must not touch the dispatcher's state. A secret (an alarm
code) is checked *inside* the validator and never returned, so it never
reaches an event, a log line or a topic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.entities import CONTROLLER_COMPONENTS, Component, EntitySpec, accepts
from core.events import Value
from core.values import parse_on_off

MAX_HOLD_S = 86400.0
"""The longest ``duration`` a hub command may ask for (a day); the output's envelope may end it sooner."""


@dataclass(slots=True, frozen=True)
class Held:
    """A command value held only for ``seconds`` (a siren's ``duration``): the claim then lets go."""

    value: Value
    seconds: float


Validator = Callable[[object], "Value | Held"]
"""Decoded payload -> the command's value (or a :class:`Held` one); raises ValueError or ValidationError
to reject."""

MAX_REASON = 200


class CommandRejected(Exception):
    """A hub command that will not be applied; ``str()`` is the reason sent back to the hub."""


class _StateObject(BaseModel):
    # defer_build: built at the first JSON command object from the hub, not at every start
    model_config = ConfigDict(extra="forbid", defer_build=True)
    state: bool | str


class _SirenObject(_StateObject):
    """Home Assistant's siren command: ``{"state": "ON", "duration": 5}`` (no volume, no tone: not offered)."""

    duration: float | None = Field(default=None, gt=0, le=MAX_HOLD_S, allow_inf_nan=False)


_ON_OFF_HELP = 'expected ON or OFF (also true/false, 1/0, or {"state": "ON"})'


def _dimmable(spec: EntitySpec) -> bool:
    """A light with a brightness, or a fan with a percentage: on/off words and numbers both."""
    return spec.component in (Component.LIGHT, Component.FAN) and (spec.minimum is not None or spec.maximum is not None)


def _numeric_only(spec: EntitySpec) -> bool:
    """A number (a servo's angle) or a correctable sensor (a pulse meter's total): numbers, no words."""
    return spec.component is Component.NUMBER or spec.correctable


def _number_from_wire(spec: EntitySpec, raw: object) -> Value:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return _number(spec, raw)
    if isinstance(raw, str):
        try:
            return _number(spec, float(raw.strip()))
        except ValueError:
            pass
    raise ValueError("expected a number")


def _from_wire(spec: EntitySpec, raw: object) -> Value:
    """The hub's spelling of a value -> the typed value :func:`accepts` judges; ValueError for text
    that is neither an on/off word nor (on a dimmable light or a fan) a number."""
    if _numeric_only(spec):
        return _number_from_wire(spec, raw)
    dimmable = _dimmable(spec)
    help_text = _ON_OFF_HELP + (" or a number" if dimmable else "")
    if isinstance(raw, dict):
        raw = _StateObject.model_validate(raw).state
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float):
        if not dimmable and isinstance(raw, int) and raw in (0, 1):
            return bool(raw)  # a JSON 1/0 to a switch
        return _number(spec, raw)
    if isinstance(raw, str):
        text = raw.strip()
        if dimmable:
            try:
                return _number(spec, float(text))
            except ValueError:
                pass
        word = parse_on_off(text)
        if word is not None:
            return word
        raise ValueError(help_text)
    raise ValueError(help_text)


def _number(spec: EntitySpec, number: float) -> Value:
    """Whole numbers stay ``int`` where the entity's own values are (a safe value of 0), else ``float``."""
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    whole = isinstance(number, int) or number.is_integer()
    safe = spec.safe_value
    return int(number) if whole and isinstance(safe, int) and not isinstance(safe, bool) else float(number)


def _unregistered(raw: object) -> Value:
    raise ValueError("this controller takes no commands until its owner registers a validator")


def validator_for(spec: EntitySpec) -> Validator:
    """The built-in validator of a writable entity: the hub's spelling made typed (:func:`_from_wire`),
    then judged by :func:`drivers.base.accepts`. Controllers (climate, alarm panel) have no built-in
    one: their owner registers it."""
    if spec.component in CONTROLLER_COMPONENTS:
        return _unregistered

    def validate(raw: object) -> Value | Held:
        duration: float | None = None
        if spec.component is Component.SIREN and isinstance(raw, dict):
            siren = _SirenObject.model_validate(raw)
            raw, duration = siren.state, siren.duration
        value = _from_wire(spec, raw)
        reason = accepts(spec, value)
        if reason is not None:
            raise ValueError(reason)
        if duration is not None and value is True:
            return Held(value, duration)
        return value  # a duration with OFF means nothing: off is off

    return validate


def split_held(outcome: Value | Held) -> tuple[Value, float | None]:
    """A validator's answer as ``(value, hold seconds or None)``, what a ``COMMAND`` event carries."""
    if isinstance(outcome, Held):
        return outcome.value, outcome.seconds
    return outcome, None


def decode(payload: bytes, max_bytes: int) -> object:
    """Bytes off the wire -> a JSON value or the bare text; :class:`CommandRejected` otherwise."""
    if len(payload) > max_bytes:
        raise CommandRejected(f"payload of {len(payload)} bytes is larger than the {max_bytes} allowed")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandRejected("payload is not UTF-8 text") from None
    if not text.strip():
        raise CommandRejected("empty payload")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return text.strip()


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number")


def validate(validator: Validator, raw: object) -> Value:
    """Run a target's validator; any refusal becomes :class:`CommandRejected` with a short reason."""
    return validate_command(validator, raw)[0]


def validate_command(validator: Validator, raw: object) -> tuple[Value, float | None]:
    """:func:`validate`, with how long the command holds (a siren's ``duration``; None: until released)."""
    try:
        outcome = validator(raw)
    except ValidationError as exc:
        raise CommandRejected(_reason(exc)) from None
    except (ValueError, TypeError) as exc:
        raise CommandRejected(str(exc)[:MAX_REASON] or "invalid value") from None
    value = outcome.value if isinstance(outcome, Held) else outcome
    if value is not None and not isinstance(value, bool | int | float | str):
        raise CommandRejected("the validator returned a value that is not a JSON scalar")
    if isinstance(value, float) and not math.isfinite(value):
        raise CommandRejected("not a finite number")
    return split_held(outcome)


def _reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"msg": "invalid value", "loc": ()}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{where}: {message}" if where else message)[:MAX_REASON]
