"""What the hub sees of the rules, known from the rule files alone.

The entities a rule set adds that are plain switches and sensors (its virtual
entities, and the read-only parts of its thermostats: ``<id>_setpoint``,
``<id>_preset``, ``<id>_action``): :func:`bridge_entities`. And the outputs its
controllers own, which the hub may not switch: :func:`hub_view` shows them
read-only. The thermostats and alarms themselves are more than an entity spec
can say; the application announces them with Home Assistant's ``climate`` and
``alarm_control_panel`` configs (:mod:`gateway.controller_discovery`). The
wiring is ``Gateway._house_entities`` and ``Gateway._mqtt_bridge`` in
gateway/app.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from core.entities import CONTROLLER_COMPONENTS, Component, EntitySpec
from rules.loader import RuleSet
from rules.ownership import output_owners


def bridge_entities(ruleset: RuleSet) -> dict[str, EntitySpec]:
    """Virtual entities and controller sub-entities: plain switches and sensors for the bridge."""
    return {spec.id: spec for spec in ruleset.entities() if spec.component not in CONTROLLER_COMPONENTS}


def hub_view(entities: Mapping[str, EntitySpec], ruleset: RuleSet) -> dict[str, EntitySpec]:
    """The entities as the hub should see them: an output a controller owns and the hub may not
    override (an alarm's siren, a thermostat's heater without ``override``) is announced read-only,
    as a ``binary_sensor`` on the same state topic (Home Assistant's switch needs a command topic)."""
    view = dict(entities)
    for entity, owner in output_owners(ruleset).items():
        spec = view.get(entity)
        if spec is not None and owner.override_s is None:
            device_class = "sound" if spec.component is Component.SIREN else "running"
            view[entity] = replace(spec, component=Component.BINARY_SENSOR, device_class=device_class)
    return view
