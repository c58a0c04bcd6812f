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
    type = "set"
    entity = "hall_light"
    value = true

Triggers, conditions and actions are discriminated on ``type``, so each kind
owns its model and a mistake gets one precise, located error.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.events import Value

RULE_ID = r"^[a-z0-9][a-z0-9_-]*$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateTrigger(Model):
    """Fires when ``entity`` changes (optionally from ``from``, to ``to``)."""

    type: Literal["state"]
    entity: str
    to: Value = None
    from_: Value = Field(default=None, alias="from")


Trigger = Annotated[StateTrigger, Field(discriminator="type")]


class SetAction(Model):
    """Command ``entity`` to ``value``."""

    type: Literal["set"]
    entity: str
    value: Value


class TurnOnAction(Model):
    type: Literal["turn_on"]
    entity: str


class TurnOffAction(Model):
    type: Literal["turn_off"]
    entity: str


Action = Annotated[SetAction | TurnOnAction | TurnOffAction, Field(discriminator="type")]


class Rule(Model):
    id: str = Field(pattern=RULE_ID, max_length=64)
    description: str | None = None
    enabled: bool = True
    triggers: list[Trigger] = Field(min_length=1)
    actions: list[Action] = Field(min_length=1)


class RuleFile(Model):
    version: Literal[1]
    rules: list[Rule] = Field(default_factory=list)
