"""Which outputs the rules' controllers own, known from the rule files alone.

One place for it, used by the controllers themselves (the claims they make,
gateway/authority.py), by the hub's command validators (a command to an owned
output is refused at the edge, with the owner's name) and by discovery (an
owned output is announced to Home Assistant read-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.claims import Level, Owner
from rules import model as m

if TYPE_CHECKING:
    from rules.loader import RuleSet

THERMOSTAT_ADVICE = "change the thermostat's setpoint or mode instead"
ALARM_ADVICE = "disarm the alarm (with its code) to silence it"


def thermostat_outputs(config: m.Thermostat) -> dict[str, Owner]:
    """A thermostat's heater and cooler; a hub command may override them only with ``override``."""
    owner = Owner(config.id, Level.CONTROLLER, f"thermostat {config.id}", config.override, THERMOSTAT_ADVICE)
    return {entity: owner for entity in (config.heater, config.cooler) if entity is not None}


def alarm_outputs(config: m.Alarm) -> dict[str, Owner]:
    """An alarm's siren: never overridden; silencing it takes a disarm, with the code."""
    if config.siren is None:
        return {}
    return {config.siren: Owner(config.id, Level.ALARM, f"alarm {config.id}", None, ALARM_ADVICE)}


def output_owners(ruleset: RuleSet) -> dict[str, Owner]:
    owners: dict[str, Owner] = {}
    for declared in ruleset.thermostats:
        if isinstance(declared.item, m.Thermostat):
            owners.update(thermostat_outputs(declared.item))
    for declared in ruleset.alarms:
        if isinstance(declared.item, m.Alarm):
            owners.update(alarm_outputs(declared.item))
    return owners

