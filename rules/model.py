"""Rule-file models (format ``version = 1``), validated by pydantic at the edge.

A rule file is a TOML document::

    version = 1

    [[rules]]
    id = "hall_light_on_motion"
    description = "Motion in the hall switches the hall light on"

    [[rules.triggers]]
    type = "state"
    entity = "hall_motion"
    to = true

    [[rules.actions]]
    type = "turn_on"
    entity = "hall_light"
    for = "2m"

Triggers, conditions and actions are discriminated on ``type``, so each kind
owns its model and a mistake gets one precise, located error. A file may also
declare ``[[virtuals]]`` (flags rules can set and read), ``[[thermostats]]`` and
``[[alarms]]``; see docs/rules.md.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, final

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.events import Value
from core.fields import empty_list
from rules.codes import check_hash_format
from rules.durations import Duration, TimeOfDay

RULE_ID = r"^[a-z0-9][a-z0-9_-]*$"
ENTITY_ID = r"^[a-z][a-z0-9_]*$"
TOPIC = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$"

RESERVED_TOPICS = frozenset({"set", "status", "health", "availability", "state", "event", "result"})
"""First levels under the base topic that belong to the gateway's own contract (docs/mqtt.md): a rule
publishing there would command the gateway itself (``set/…``) or forge what the hub trusts."""
EVENT_STREAM = "events"
"""``<base>/events``, the event stream of ``[mqtt] event_batches`` (docs/mqtt.md): the gateway sends every row on it as
a JSON array of events, so a rule's message there would be spliced into one. Only this topic: ``events/…`` is free."""

EntityId = Annotated[str, Field(pattern=ENTITY_ID, max_length=64)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
AlarmState = Literal["disarmed", "arming", "armed_home", "armed_away", "armed_night", "pending", "triggered"]
AlarmCommand = Literal["arm_home", "arm_away", "arm_night", "disarm"]
THERMOSTAT_PRESETS = ("away", "home")
"""A thermostat's presets: ``away`` holds the frost setpoint, ``home`` follows the setpoint and schedule."""


class Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=False, allow_inf_nan=False, defer_build=True,
    )
    """No number may be infinite or NaN (TOML allows ``inf`` and ``nan``): ``hysteresis = inf`` would keep a
    heater on, ``above = nan`` would never fire. ``defer_build``: each block's validator is built at its
    first use (a house without thermostats never builds theirs), not at import."""


def _above_below(above: float | None, below: float | None, *, required: bool) -> None:
    if required and above is None and below is None:
        raise ValueError("set 'above', 'below' or both")
    if above is not None and below is not None and above >= below:
        raise ValueError(
            f"a value can never be above {above:g} and below {below:g} at the same time; "
            "you probably want two different triggers or conditions"
        )


# -- triggers ------------------------------------------------------------------------------


@final  # rules/triggers.py tells it apart with ``type(trigger) is``
class StateTrigger(Model):
    """Fires when ``entity`` changes (optionally ``from`` a value, ``to`` a value), or has held it ``for``."""

    type: Literal["state"]
    entity: EntityId
    to: Value = None
    from_: Value = Field(default=None, alias="from")
    for_: Duration | None = Field(default=None, alias="for")


@final  # rules/triggers.py tells it apart with ``type(trigger) is``
class NumericTrigger(Model):
    """Fires when a number *crosses into* the range (edge-triggered), optionally held ``for``.

    It re-arms only once the value has left the range by ``hysteresis``, so a
    noisy sensor at the threshold fires once.
    """

    type: Literal["numeric"]
    entity: EntityId
    above: float | None = None
    below: float | None = None
    hysteresis: float = Field(default=0.0, ge=0)
    for_: Duration | None = Field(default=None, alias="for")

    @model_validator(mode="after")
    def _range(self) -> NumericTrigger:
        _above_below(self.above, self.below, required=True)
        return self


class ScheduleTrigger(Model):
    """Fires at wall-clock times in the gateway's time zone: a ``cron`` expression or a daily ``at``."""

    type: Literal["schedule"]
    cron: str | None = None
    at: TimeOfDay | None = None
    weekdays: list[Weekday] | None = Field(default=None, min_length=1)
    misfire_grace: Duration = 300.0
    """How late a run may still happen (a busy board, a clock step); later ones are skipped."""

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            # Imported here, not at the top: a house without cron schedules never loads APScheduler (whose
            # ``util`` imports ``asyncio``: 1.6 MB and 18 ms of start-up for nothing).
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(value, timezone="UTC")
            except ValueError as exc:
                raise ValueError(f"not a cron expression 'minute hour day month weekday': {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleTrigger:
        if (self.cron is None) == (self.at is None):
            raise ValueError("set exactly one of 'cron' or 'at'")
        if self.cron is not None and self.weekdays is not None:
            raise ValueError("'weekdays' goes with 'at'; put the days in the cron expression")
        return self


class StartTrigger(Model):
    """Fires once when the gateway (re)starts its rules."""

    type: Literal["start"]


@final  # rules/triggers.py tells it apart with ``type(trigger) is``
class UnavailableTrigger(Model):
    """Fires when ``entity`` becomes unavailable (optionally stays so ``for`` a while)."""

    type: Literal["unavailable"]
    entity: EntityId
    for_: Duration | None = Field(default=None, alias="for")


class CommandTrigger(Model):
    """Fires on a command from the hub for ``entity`` (optionally only ``value``)."""

    type: Literal["command"]
    entity: EntityId
    value: Value = None


Trigger = Annotated[
    StateTrigger | NumericTrigger | ScheduleTrigger | StartTrigger | UnavailableTrigger | CommandTrigger,
    Field(discriminator="type"),
]
WATCHING_TRIGGERS = (StateTrigger, NumericTrigger, UnavailableTrigger, CommandTrigger)


# -- conditions ----------------------------------------------------------------------------


class StateCondition(Model):
    """``entity`` currently equals ``equals`` or is one of ``in``."""

    type: Literal["state"]
    entity: EntityId
    equals: Value = None
    in_: list[Value] | None = Field(default=None, alias="in", min_length=1)

    @model_validator(mode="after")
    def _one(self) -> StateCondition:
        if (self.equals is None) == (self.in_ is None):
            raise ValueError("set exactly one of 'equals' or 'in'")
        return self


class NumericCondition(Model):
    type: Literal["numeric"]
    entity: EntityId
    above: float | None = None
    below: float | None = None

    @model_validator(mode="after")
    def _range(self) -> NumericCondition:
        _above_below(self.above, self.below, required=True)
        return self


class TimeCondition(Model):
    """Local time is in ``[after, before)``; a window may cross midnight (``after = "22:00"``, ``before = "06:00"``)."""

    type: Literal["time"]
    after: TimeOfDay | None = None
    before: TimeOfDay | None = None
    weekdays: list[Weekday] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _some(self) -> TimeCondition:
        if self.after is None and self.before is None and self.weekdays is None:
            raise ValueError("set 'after', 'before' and/or 'weekdays'")
        if self.after is not None and self.after == self.before:
            raise ValueError("'after' and 'before' are the same time: the window would be empty")
        return self


class WeekdayCondition(Model):
    type: Literal["weekday"]
    days: list[Weekday] = Field(min_length=1)


class HeldCondition(Model):
    """``entity`` has had its current value (optionally ``equals``) for at least ``for``."""

    type: Literal["held"]
    entity: EntityId
    for_: Duration = Field(alias="for")
    equals: Value = None


class AlarmCondition(Model):
    type: Literal["alarm"]
    alarm: EntityId
    mode: AlarmState | list[AlarmState]


class AllCondition(Model):
    type: Literal["all"]
    conditions: list[Condition] = Field(min_length=1)


class AnyCondition(Model):
    type: Literal["any"]
    conditions: list[Condition] = Field(min_length=1)


class NotCondition(Model):
    """True when *none* of its conditions holds."""

    type: Literal["not"]
    conditions: list[Condition] = Field(min_length=1)


Condition = Annotated[
    StateCondition
    | NumericCondition
    | TimeCondition
    | WeekdayCondition
    | HeldCondition
    | AlarmCondition
    | AllCondition
    | AnyCondition
    | NotCondition,
    Field(discriminator="type"),
]


# -- actions -------------------------------------------------------------------------------


class SetAction(Model):
    """Command ``entity`` to ``value``: an actuator, a virtual entity, a thermostat's setpoint or mode."""

    type: Literal["set"]
    entity: EntityId
    value: Value


class TurnOnAction(Model):
    """Switch on; with ``for``, switch off again after it (a re-trigger extends it)."""

    type: Literal["turn_on"]
    entity: EntityId
    for_: Duration | None = Field(default=None, alias="for", gt=0)


class TurnOffAction(Model):
    type: Literal["turn_off"]
    entity: EntityId


class ReleaseAction(Model):
    """Let go of this rule's claim on an output: it follows the next claim, or returns to its default."""

    type: Literal["release"]
    entity: EntityId


class ToggleAction(Model):
    type: Literal["toggle"]
    entity: EntityId


@final  # rules/runs.py tells it apart with ``type(action) is``
class DelayAction(Model):
    """Wait, then go on with the next action (see the rule's ``mode``)."""

    type: Literal["delay"]
    for_: Duration = Field(alias="for")


class PublishAction(Model):
    """Publish an MQTT message under the gateway's base topic; ``{field}`` is filled from the trigger."""

    type: Literal["publish"]
    topic: str = Field(pattern=TOPIC, max_length=200)
    payload: str | dict[str, Value] = ""
    retain: bool = False

    @field_validator("topic")
    @classmethod
    def _not_the_gateways_own(cls, value: str) -> str:
        first = value.split("/", 1)[0]
        if first in RESERVED_TOPICS:
            reason = ("it would command the gateway itself" if first == "set"
                      else "the hub would take the message for the gateway's own")
            raise ValueError(f"{value!r} is under the gateway's own {first!r} topic: {reason}; "
                             "use another topic, such as 'notify/...'")
        if value == EVENT_STREAM:
            raise ValueError(f"{value!r} is the gateway's own event stream: its messages are arrays of the gateway's "
                             "events, and the hub would take the rule's message for them; use another topic, such "
                             "as 'notify/...'")
        return value


class AlarmAction(Model):
    """Arm or disarm an alarm declared in ``[[alarms]]`` (rules need no code)."""

    type: Literal["alarm"]
    alarm: EntityId
    command: AlarmCommand


Action = Annotated[
    SetAction | TurnOnAction | TurnOffAction | ToggleAction | ReleaseAction | DelayAction | PublishAction
    | AlarmAction,
    Field(discriminator="type"),
]
ENTITY_ACTIONS = (SetAction, TurnOnAction, TurnOffAction, ToggleAction, ReleaseAction)


class Rule(Model):
    id: str = Field(pattern=RULE_ID, max_length=64)
    description: str | None = None
    enabled: bool = True
    mode: Literal["single", "restart", "queued"] = "single"
    """What a trigger does while the actions of an earlier one still wait in a ``delay``."""
    max_queued: int = Field(default=10, ge=1, le=1000)
    cooldown: Duration | None = None
    """After running, ignore triggers for this long."""
    restart_grace: Duration = 300.0
    """A timer of this rule missed during a restart by less than this still fires; later, it is dropped."""
    triggers: list[Trigger] = Field(min_length=1)
    conditions: list[Condition] = Field(default_factory=empty_list)
    actions: list[Action] = Field(min_length=1)


# -- declared entities and controllers -----------------------------------------------------


class Virtual(Model):
    """A flag or value that lives in the gateway: rules set and read it, the hub sees (and may set) it."""

    id: EntityId
    initial: Value = False
    restore: bool = True
    """Come back after a restart with the value it had."""


class ScheduleEntry(Model):
    at: TimeOfDay
    setpoint: float
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)


class Thermostat(Model):
    id: EntityId
    sensor: EntityId
    heater: EntityId | None = None
    cooler: EntityId | None = None
    setpoint: float = 20.0
    hysteresis: float = Field(default=0.5, ge=0)
    min_setpoint: float = 5.0
    max_setpoint: float = 28.0
    frost_setpoint: float = 7.0
    """The target in ``away`` (frost protection)."""
    min_on: Duration = 0.0
    min_off: Duration = 0.0
    stale_after: Duration = Field(default=900.0, gt=0)
    """No reading for this long: the heater and cooler go to their safe state."""
    override: Duration | None = Field(default=None, gt=0)
    """How long a hub command to the heater or cooler overrides the thermostat; None: such commands are
    refused (the outputs belong to the thermostat: change its setpoint or mode instead)."""
    schedule: list[ScheduleEntry] = Field(default_factory=empty_list)

    @property
    def lowest_setpoint(self) -> float:
        """The lowest target the hub may set: ``min_setpoint``, or ``frost_setpoint`` where it is lower.

        The ``away`` preset targets ``frost_setpoint``, and a hub shows the target of the preset in
        force: a range that stopped above it (Home Assistant's ``min_temp``) would show a value its own
        controls cannot set. A setpoint at frost protection is safe by the installer's own choice."""
        return min(self.min_setpoint, self.frost_setpoint)

    def modes(self) -> tuple[str, ...]:
        """The modes this thermostat has outputs for: ``off`` always, ``heat`` with a heater, ``cool``
        with a cooler, ``heat_cool`` with both (in that order, Home Assistant's).

        The one statement of it: the controller (what a command may switch to, what a restored mode
        may be), the hub's command validator, the climate entity's options and its discovery all ask.
        """
        modes = ["off"]
        if self.heater:
            modes.append("heat")
        if self.cooler:
            modes.append("cool")
        if self.heater and self.cooler:
            modes.append("heat_cool")
        return tuple(modes)

    def default_mode(self) -> str:
        """The mode it starts in (and falls back to when a reload takes its mode away): all it can do."""
        if self.heater and self.cooler:
            return "heat_cool"
        return "heat" if self.heater else "cool"

    @model_validator(mode="after")
    def _consistent(self) -> Thermostat:
        if self.heater is None and self.cooler is None:
            raise ValueError("set 'heater', 'cooler' or both")
        if not self.min_setpoint <= self.max_setpoint:
            raise ValueError("min_setpoint must not exceed max_setpoint")
        for name in ("setpoint", "frost_setpoint"):
            value = getattr(self, name)
            if not self.min_setpoint - 10 <= value <= self.max_setpoint:
                raise ValueError(f"{name} {value:g} is outside min_setpoint..max_setpoint")
        for entry in self.schedule:
            if not self.min_setpoint <= entry.setpoint <= self.max_setpoint:
                raise ValueError(f"schedule setpoint {entry.setpoint:g} at {entry.at} is outside the limits")
        return self


class AlarmSensors(Model):
    armed_home: list[EntityId] = Field(default_factory=empty_list)
    armed_away: list[EntityId] = Field(default_factory=empty_list)
    armed_night: list[EntityId] = Field(default_factory=empty_list)


class Alarm(Model):
    id: EntityId
    code_hash: str | None = None
    """From ``python -m rules.codes`` (scrypt with a salt); None = no code needed."""
    code_arm_required: bool = True
    exit_delay: Duration = 30.0
    entry_delay: Duration = 30.0
    siren: EntityId | None = None
    siren_time: Duration = Field(default=180.0, gt=0)
    sensors: AlarmSensors = Field(default_factory=AlarmSensors)
    instant: list[EntityId] = Field(default_factory=empty_list)
    """Sensors that trigger at once, without the entry delay (windows, panic buttons)."""
    max_triggers: int = Field(default=3, ge=0)
    """Swinger limit: a sensor that started this many alarms since arming is bypassed until disarm (0 = no limit)."""
    max_failed_codes: int = Field(default=5, ge=1)
    """Wrong codes in a row (from the hub) that lock the panel out."""
    lockout: Duration = Field(default=60.0, ge=0)
    """The first lockout; each further one (without a correct code between) lasts twice as long as the last."""
    max_lockout: Duration = Field(default=3600.0, ge=0)
    """The cap on a doubled lockout (never shorter than ``lockout`` itself)."""

    @field_validator("code_hash")
    @classmethod
    def _hash(cls, value: str | None) -> str | None:
        if value is not None:
            check_hash_format(value)
        return value


class RuleFileHeader(Model):
    """What a rule file holds besides its arrays of tables: the loader validates each entry of those with
    the entry's own model (one mistake hides no other), then the rest of the file with this one. Not with
    :class:`RuleFile`, whose validator would embed every block's schema again (~5 ms of every start)."""

    version: Literal[1]


class RuleFile(RuleFileHeader):
    """The whole file, as an editor's schema would describe it (``RuleFile.model_json_schema()``)."""

    rules: list[Rule] = Field(default_factory=empty_list)
    virtuals: list[Virtual] = Field(default_factory=empty_list)
    thermostats: list[Thermostat] = Field(default_factory=empty_list)
    alarms: list[Alarm] = Field(default_factory=empty_list)


def walk_conditions(conditions: list[Any]) -> list[Any]:
    """Every condition, nested ones included (depth first)."""
    out: list[Any] = []
    for condition in conditions:
        out.append(condition)
        if isinstance(condition, AllCondition | AnyCondition | NotCondition):
            out.extend(walk_conditions(condition.conditions))
    return out


def weekday_index(day: str) -> int:
    return [str(d) for d in WEEKDAYS].index(day)


def local_weekday(moment: dt.datetime) -> Weekday:
    return WEEKDAYS[moment.weekday()]
