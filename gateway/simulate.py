"""``gateway simulate``: run the rules in virtual time on a scripted list of events.

The events file is JSON lines; each line is one event at a time offset from
the start (a number of seconds or a duration such as ``"5m"``)::

    {"start": "2026-01-10T22:00:00"}                       # optional first line: local start time
    {"at": 0, "entity": "hall_motion", "value": true}
    {"at": "30s", "entity": "hall_motion", "value": false}
    {"at": "10m", "entity": "house", "value": "arm_away", "kind": "command"}
    {"at": "12m", "entity": "living_temperature", "kind": "availability", "value": false}
    {"end": "2h"}                                           # optional: run until (default last event + 1h)

``kind`` defaults to ``reading`` for sensors and ``command`` for everything
the hub may command. Every action the rules take is printed as one JSON line:
``{"t": 30.0, "time": "...", "kind": "command", "rule": "...", "entity": "...",
"value": ..., "cause": "sim-3", "detail": ...}``. Event ids are ``sim-N``, so
the output is deterministic: installers can keep it as the expected outcome of
their rule files. Actuators are virtual (they confirm what they are told);
nothing is opened and the state directory is not touched. The core is the live
gateway's (:mod:`gateway.assembly`): claims, ownership and the devices' safety
envelopes apply, so a deferral or a refusal shows here exactly as it would
on the board.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.clock import Clock, VirtualClock
from core.entities import EntitySpec
from core.events import Event, EventFactory, Kind, Value
from drivers.base import Actuator, DeviceConfig, DriverContext
from drivers.envelope import Envelope
from gateway.assembly import assemble
from gateway.bus import Bus
from gateway.config import Config
from gateway.mqtt.commands import Validator, split_held, validator_for
from gateway.rulesets import load_ruleset
from rules.commands import command_validators
from rules.durations import Duration
from rules.engine import RuleEngine
from rules.loader import RulesError, RuleSet

_ACTION_KINDS = frozenset({Kind.COMMAND, Kind.ALARM, Kind.SYSTEM, Kind.REJECTED, Kind.STATE})


class EchoActuator(Actuator):
    """A virtual actuator: confirms whatever it is told, and remembers it as a pin would
    (``value``, and ``history``: each change with its monotonic time). For simulation only."""

    def __init__(self, spec: EntitySpec, clock: Clock | None = None) -> None:
        super().__init__(DeviceConfig.model_construct(driver="simulate.echo", id=spec.id))  # id overridden below
        self.spec = spec
        self.clock = clock
        self.value: Value = spec.safe_value
        self.history: list[tuple[float, Value]] = []

    @property
    def id(self) -> str:
        return self.spec.id

    def entities(self) -> Sequence[EntitySpec]:
        return [self.spec]

    def start(self, ctx: DriverContext) -> None:
        return None

    def stop(self) -> None:
        return None

    def apply(self, entity: str, value: Value) -> Value:
        if value != self.value:
            self.value = value
            if self.clock is not None:
                self.history.append((self.clock.monotonic(), value))
        return value

    def to_safe_state(self) -> None:
        self.apply(self.spec.id, self.spec.safe_value)


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Duration
    entity: str
    value: Value | dict[str, Value] = None
    kind: Literal["reading", "state", "command", "availability"] | None = None
    unit: str | None = None


class _Start(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    start: dt.datetime


class _End(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    end: Duration = Field()


class World:
    """A dispatcher, a virtual clock, echo actuators and a rule engine: the house in a test tube."""

    def __init__(
        self,
        entities: Mapping[str, EntitySpec],
        ruleset: RuleSet,
        *,
        timezone: str = "UTC",
        start: float = 1_767_225_600.0,
        mono: float = 1000.0,
        state_dir: Path | None = None,
        on_event: Callable[[Event], None] | None = None,
        envelope: Envelope | None = None,
    ) -> None:
        self.clock = VirtualClock(wall=start, mono=mono)
        self.events = EventFactory(self.clock, boot="sim")
        self.entities = dict(entities)
        actuators = {eid: EchoActuator(spec, self.clock) for eid, spec in entities.items()
                     if spec.writable and spec.component.value in ("switch", "light", "siren")}
        self.seen: list[Event] = []

        def forward(event: Event) -> None:
            self.seen.append(event)
            if on_event is not None:
                on_event(event)

        self.dispatcher, self.engine = assemble(
            self.events, Bus(), actuators, envelope=envelope or Envelope({}), forward=forward,
            make_engine=lambda dispatcher: RuleEngine(ruleset, dispatcher, timezone=timezone, state_dir=state_dir),
        )
        self.all_entities = {**self.entities, **{s.id: s for s in ruleset.entities()}}
        self.validators: dict[str, Validator] = {
            **{spec.id: validator_for(spec) for spec in self.entities.values() if spec.writable},
            **command_validators(ruleset, self.clock),
        }
        """What the MQTT bridge uses: scripted hub commands pass the same edge checks (``"OFF"`` -> false)."""

    def start(self) -> None:
        """As on the board: each output reports its safe state first, then the rules start."""
        for entity, actuator in self.dispatcher.actuators.items():
            if isinstance(actuator, EchoActuator):
                self.dispatcher.bus.post(self.events.make(Kind.STATE, entity, actuator.value,
                                                          detail="safe state at start"))
        self.engine.start()
        self.dispatcher.advance(0)

    def post(self, entity: str, value: Any, kind: Kind | None = None, unit: str | None = None) -> Event:
        """Put one event on the bus and process it; a hub command first passes its edge validator."""
        spec = self.all_entities.get(entity)
        if kind is None:
            kind = Kind.COMMAND if spec is not None and spec.writable else Kind.READING
        if kind is Kind.AVAILABILITY:
            event = self.events.availability(entity, bool(value))
        elif kind is Kind.COMMAND and entity in self.validators:
            event = self._hub_command(entity, value)
        else:
            event = self.events.make(kind, entity, value, unit=unit or (spec.unit if spec else None))
        self.dispatcher.bus.post(event)
        self.dispatcher.drain()
        return event

    def _hub_command(self, entity: str, raw: Any) -> Event:
        if isinstance(raw, str) and raw.lstrip().startswith("{"):
            with contextlib.suppress(ValueError):
                raw = json.loads(raw)
        try:
            value, hold_s = split_held(self.validators[entity](raw))
        except ValueError as exc:
            reason = str(exc).splitlines()[0]
            return self.events.make(Kind.REJECTED, entity, None, detail=f"hub command rejected: {reason}")
        return self.events.make(Kind.COMMAND, entity, value, detail="hub", hold_s=hold_s)

    def advance(self, seconds: float) -> None:
        self.dispatcher.advance(seconds)

    def actions(self) -> list[Event]:
        """Events the rules and controllers caused (they carry a rule id)."""
        return [e for e in self.seen if e.rule is not None and e.kind in _ACTION_KINDS]


def action_line(event: Event, origin: float, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "t": round(event.mono - origin, 3),
        "time": dt.datetime.fromtimestamp(event.ts, tz).isoformat(timespec="seconds"),
        "kind": str(event.kind),
        "rule": event.rule,
        "entity": event.entity,
        "value": event.value,
        "cause": event.cause,
        "detail": event.detail,
    }


def read_script(path: Path, tz: ZoneInfo) -> tuple[float | None, float | None, list[_Line]]:
    """``(start wall time, end offset, lines)``; ValueError names the line of the first mistake."""
    start: float | None = None
    end: float | None = None
    lines: list[_Line] = []
    text = path.read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            data = json.loads(raw)
            if isinstance(data, dict) and "start" in data:
                moment = _Start.model_validate(data).start
                start = (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()
            elif isinstance(data, dict) and "end" in data:
                end = _End.model_validate(data).end
            else:
                lines.append(_Line.model_validate(data))
        except RecursionError:
            raise ValueError(f"{path}:{number}: nested too deeply") from None
        except ValueError as exc:
            message = _short(exc)
            raise ValueError(f"{path}:{number}: {message}") from None
    lines.sort(key=lambda line: line.at)
    return start, end, lines


def _short(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
    return f"not JSON: {exc}"


def simulate(config: Config, events_file: Path | str, out: IO[str] | None = None) -> int:
    """Run ``config``'s rules on ``events_file`` in virtual time; print actions as JSON lines. 0 = ran, 1 = error."""
    out = out or sys.stdout
    tz = ZoneInfo(config.gateway.timezone)
    try:
        ruleset = load_ruleset(config)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        start, end, lines = read_script(Path(events_file), tz)
    except (OSError, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    world = World(config.entities(), ruleset, timezone=config.gateway.timezone,
                  start=start if start is not None else 1_767_225_600.0,
                  envelope=Envelope.from_drivers(config.drivers()))
    origin = world.clock.monotonic()

    def show(event: Event) -> None:
        confirmation = event.kind is Kind.STATE and (
            event.entity in world.dispatcher.actuators or event.entity in world.engine.alarms())
        if (event.rule is not None and event.kind in _ACTION_KINDS and not confirmation) or event.kind is Kind.REJECTED:
            print(json.dumps(action_line(event, origin, tz), ensure_ascii=False), file=out)

    world.dispatcher.forward = show
    world.start()
    for line in lines:
        world.advance(max(0.0, origin + line.at - world.clock.monotonic()))
        world.post(line.entity, line.value, Kind(line.kind) if line.kind else None, line.unit)
    final = end if end is not None else (lines[-1].at if lines else 0.0) + 3600.0
    world.advance(max(0.0, origin + final - world.clock.monotonic()))
    return 0
