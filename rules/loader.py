"""Loading a directory of rule files, all or nothing.

The whole set is parsed, validated and checked against the configured
entities before it may replace the running one. Every problem is reported,
each as ``FILE: rule ID: field.path: message (got VALUE)``; one bad file means
the old rules stay in force. Problems that do not stop a rule from working
(a rule that can never fire) are warnings, kept in :attr:`RuleSet.warnings`.

Each rule, virtual, thermostat and alarm is validated on its own, so a
mistake in one hides no problem of another: every entry that validates is
still checked against the house. Only regular files inside the directory are
read (a FIFO would hang the reader), at most :data:`MAX_FILE_BYTES` each, and
nothing nested deeper than :data:`MAX_NESTING`: any input gives located
problems, never a traceback or a hang.

The entry points are :func:`load_rules` (a directory and the configured
entities in, :class:`RuleSet` out or :class:`RulesError`) and
:func:`check_rules` for ``gateway check``; the application calls them with its
config (:func:`gateway.assembly.load_ruleset`).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from core import errors as core_errors
from core.claims import Owner
from core.entities import Component, EntitySpec, accepts
from rules import model as m
from rules.ownership import alarm_outputs, thermostat_outputs
from rules.template import compile_template


class RulesError(Exception):
    """The rule set is invalid; ``problems`` holds one located message per mistake."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


MAX_FILE_BYTES = 1 << 20
"""A rule file is a few KiB; no more than this is read (a link to ``/dev/zero`` must not eat the memory)."""

MAX_NESTING = core_errors.MAX_NESTING

_ITEMS: dict[str, type[m.Model]] = {"rules": m.Rule, "virtuals": m.Virtual, "thermostats": m.Thermostat,
                                    "alarms": m.Alarm}
"""The arrays of tables of a rule file; each entry is validated on its own, so one mistake hides no other."""


@dataclass(slots=True, frozen=True)
class LoadedRule:
    rule: m.Rule
    path: Path
    fingerprint: str = ""
    """Changes exactly when the rule's meaning changes; a reload keeps the timers of unchanged rules."""


@dataclass(slots=True, frozen=True)
class Declared:
    """A thermostat, alarm or virtual entity and the file that declares it."""

    item: m.Thermostat | m.Alarm | m.Virtual
    path: Path
    fingerprint: str


@dataclass(frozen=True)
class RuleSet:
    """A validated, complete set of rule files: what the engine compiles."""

    rules: tuple[LoadedRule, ...] = ()
    """Enabled rules only."""
    virtuals: tuple[Declared, ...] = ()
    thermostats: tuple[Declared, ...] = ()
    alarms: tuple[Declared, ...] = ()
    warnings: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    files: tuple[Path, ...] = field(default=())

    def __iter__(self) -> Iterator[LoadedRule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def entities(self) -> list[EntitySpec]:
        """Entities the rules add to the house (virtuals, thermostats, alarms), for MQTT discovery and commands."""
        specs: list[EntitySpec] = []
        for declared in self.virtuals:
            virtual = declared.item
            assert isinstance(virtual, m.Virtual)
            component = Component.SWITCH if isinstance(virtual.initial, bool) else Component.SENSOR
            specs.append(EntitySpec(virtual.id, component, safe_value=virtual.initial))
        for declared in self.thermostats:
            thermostat = declared.item
            assert isinstance(thermostat, m.Thermostat)
            specs.extend(thermostat_entities(thermostat))
        for declared in self.alarms:
            specs.append(EntitySpec(declared.item.id, Component.ALARM_CONTROL_PANEL, safe_value="disarmed",
                                    options=get_args(m.AlarmCommand)))
        return specs

    def summary(self) -> str:
        return (
            f"{len(self.rules)} rules ({len(self.disabled)} disabled), {len(self.thermostats)} thermostats, "
            f"{len(self.alarms)} alarms, {len(self.virtuals)} virtual entities in {len(self.files)} files"
        )


def thermostat_entities(thermostat: m.Thermostat) -> list[EntitySpec]:
    """``<id>`` (climate: mode, commands), ``<id>_setpoint``, ``<id>_preset``, ``<id>_action`` (read-only).

    The climate entity takes a setpoint within the limits, a mode it has outputs for (``off``, ``heat``
    with a heater, ``cool`` with a cooler, ``heat_cool`` with both) or a preset (``away``, ``home``).
    """
    tid = thermostat.id
    return [
        EntitySpec(tid, Component.CLIMATE, unit="°C", safe_value="heat" if thermostat.heater else "cool",
                   minimum=thermostat.lowest_setpoint, maximum=thermostat.max_setpoint,
                   options=(*thermostat.modes(), *m.THERMOSTAT_PRESETS)),
        # what the climate entity shows too: diagnostics for the hub; a setpoint is set, not measured
        EntitySpec(f"{tid}_setpoint", Component.SENSOR, unit="°C", device_class="temperature",
                   category="diagnostic", state_class=None),
        EntitySpec(f"{tid}_preset", Component.SENSOR, category="diagnostic", icon="mdi:home-export-outline"),
        EntitySpec(f"{tid}_action", Component.SENSOR, category="diagnostic", icon="mdi:radiator"),
    ]


def check_rules(directory: Path, entities: Mapping[str, EntitySpec]) -> tuple[RuleSet | None, list[str]]:
    """For ``gateway check``: the rule set and its warnings, or None and every problem (one line each)."""
    try:
        ruleset = load_rules(directory, entities)
    except RulesError as exc:
        return None, exc.problems
    return ruleset, list(ruleset.warnings)


def load_rules(directory: Path, entities: Mapping[str, EntitySpec]) -> RuleSet:
    """Every rule file ``directory/*.toml`` as one :class:`RuleSet`; :class:`RulesError` lists every problem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RulesError([f"{directory}: rules directory does not exist"])
    problems: list[str] = []
    try:
        files = sorted(directory.glob("*.toml"))
    except OSError as exc:
        raise RulesError([f"{directory}: cannot list the rules directory: {exc.strerror or exc}"]) from None
    parsed = [rule_file for path in files if (rule_file := _load_file(path, directory, problems)) is not None]
    ruleset = _assemble(parsed, problems)
    known = dict(entities)
    declared = {spec.id: spec for spec in ruleset.entities()}
    for entity_id in declared.keys() & known.keys():
        problems.append(f"{_owner_path(ruleset, entity_id)}: {entity_id}: id already used by a configured device")
    known.update(declared)
    broken = frozenset().union(*(rule_file.broken for rule_file in parsed)) - known.keys()
    checker = _Checker(known, {d.item.id for d in ruleset.alarms}, {d.item.id for d in ruleset.thermostats},
                       {d.item.id for d in ruleset.virtuals}, _owners(ruleset, problems), broken=broken)
    warnings: list[str] = []
    for loaded in ruleset.rules:
        checker.rule(loaded, problems, warnings)
    for declared_item in ruleset.thermostats + ruleset.alarms:
        checker.controller(declared_item, problems)
    if ruleset.thermostats:
        _controller_importable(ruleset.thermostats[0], problems)
    if problems:
        raise RulesError(problems)
    return RuleSet(
        ruleset.rules, ruleset.virtuals, ruleset.thermostats, ruleset.alarms,
        tuple(warnings), ruleset.disabled, tuple(files),
    )


def _controller_importable(declared: Declared, problems: list[str]) -> None:
    """Import the thermostat controller now, while nothing is swapped yet. It is imported only when a rule set
    declares a thermostat (a lean start); an install changed under a running gateway can make that import fail,
    and a reload must then be refused whole rather than fail half-way through the swap."""
    try:
        import rules.thermostat  # noqa: F401
    except ImportError as exc:
        problems.append(f"{declared.path}: thermostat {declared.item.id}: its controller cannot be loaded ({exc}); "
                        "reinstall the gateway or restart it after an upgrade")


def _owners(ruleset: RuleSet, problems: list[str]) -> dict[str, Owner]:
    """The outputs the thermostats and alarms own; an output two of them claim is a problem."""
    owners: dict[str, Owner] = {}
    for declared in ruleset.thermostats + ruleset.alarms:
        item = declared.item
        if isinstance(item, m.Thermostat):
            outputs, kind = thermostat_outputs(item), "thermostats"
        elif isinstance(item, m.Alarm):
            outputs, kind = alarm_outputs(item), "alarms"
        else:
            continue
        for entity, owner in outputs.items():
            if entity in owners:
                problems.append(f"{declared.path}: {kind} {item.id}: {entity!r} is already owned by "
                                f"{owners[entity].what}: an output obeys one controller")
            else:
                owners[entity] = owner
    return owners


def _owner_path(ruleset: RuleSet, entity_id: str) -> Path | str:
    for declared in ruleset.virtuals + ruleset.thermostats + ruleset.alarms:
        if entity_id == declared.item.id or entity_id.startswith(f"{declared.item.id}_"):
            return declared.path
    return "rules"


def _fingerprint(item: m.Model) -> str:
    return hashlib.sha256(item.model_dump_json(by_alias=True).encode()).hexdigest()[:16]


@dataclass(slots=True)
class _Parsed:
    """What one rule file gave: the entries that validated, and the ids of the entities it meant to declare
    but that did not validate (a rule naming one is not told again that it is unknown)."""

    path: Path
    rules: list[m.Rule] = field(default_factory=list)
    virtuals: list[m.Virtual] = field(default_factory=list)
    thermostats: list[m.Thermostat] = field(default_factory=list)
    alarms: list[m.Alarm] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)


def _assemble(parsed: list[_Parsed], problems: list[str]) -> RuleSet:
    rules: list[LoadedRule] = []
    disabled: list[str] = []
    decls: dict[str, list[Declared]] = {"virtuals": [], "thermostats": [], "alarms": []}
    seen_rules: dict[str, Path] = {}
    seen_entities: dict[str, Path] = {}
    for rule_file in parsed:
        path = rule_file.path
        for rule in rule_file.rules:
            if rule.id in seen_rules:
                problems.append(f"{path}: rule {rule.id}: id: duplicate id (also in {seen_rules[rule.id]})")
                continue
            seen_rules[rule.id] = path
            if rule.enabled:
                rules.append(LoadedRule(rule, path, _fingerprint(rule)))
            else:
                disabled.append(rule.id)
        for key, items in (("virtuals", rule_file.virtuals), ("thermostats", rule_file.thermostats),
                           ("alarms", rule_file.alarms)):
            for item in items:
                if item.id in seen_entities:
                    problems.append(f"{path}: {key} {item.id}: id: duplicate id (also in {seen_entities[item.id]})")
                    continue
                seen_entities[item.id] = path
                decls[key].append(Declared(item, path, _fingerprint(item)))
    for declared in decls["thermostats"] + decls["alarms"]:
        if declared.item.id in seen_rules:
            problems.append(f"{seen_rules[declared.item.id]}: rule {declared.item.id}: id: also the id of a "
                            f"thermostat or alarm (in {declared.path}); give the rule another id")
    return RuleSet(tuple(rules), tuple(decls["virtuals"]), tuple(decls["thermostats"]), tuple(decls["alarms"]),
                   disabled=tuple(disabled))


def _load_file(path: Path, directory: Path, problems: list[str]) -> _Parsed | None:
    """Read, parse and validate one file; its problems go to ``problems``. None when nothing in it is usable."""
    text = _read(path, directory, problems)
    if text is None:
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
        return None
    except RecursionError:
        problems.append(f"{path}: {core_errors.too_deep()}")
        return None
    if core_errors.nesting(data) > MAX_NESTING:
        problems.append(f"{path}: {core_errors.too_deep()}")
        return None
    parsed = _Parsed(path)
    header = dict(data)
    for key, model in _ITEMS.items():
        entries = header.pop(key, [])
        if not isinstance(entries, list):
            problems.append(f"{path}: {key}: expected an array of tables ([[{key}]])"
                            f"{core_errors.got(entries)}")
            continue
        for i, entry in enumerate(entries):
            _validate_entry(parsed, key, model, i, entry, data=data, problems=problems)
    try:
        m.RuleFileHeader.model_validate(header)
    except ValidationError as exc:
        problems.extend(located_errors(path, data, exc))
    return parsed


def _validate_entry(parsed: _Parsed, key: str, model: type[m.Model], index: int, entry: Any, *,
                    data: Any, problems: list[str]) -> None:
    try:
        item = model.model_validate(entry)
    except ValidationError as exc:
        problems.extend(located_errors(parsed.path, data, exc, at=(key, index)))
        ident = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(ident, str) and key != "rules":
            parsed.broken.add(ident)
            if key == "thermostats":
                parsed.broken.update(f"{ident}_{suffix}" for suffix in ("setpoint", "preset", "action"))
        return
    getattr(parsed, key).append(item)


def _read(path: Path, directory: Path, problems: list[str]) -> str | None:
    """The text of ``path`` if it is a regular file inside ``directory`` (after links) of at most
    :data:`MAX_FILE_BYTES` (:func:`core.errors.read_installer_file`); else None and a located problem."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # a dangling link; Python 3.11's resolve() on a loop of links
        problems.append(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        return None
    if path.is_symlink() and not target.is_relative_to(directory.resolve()):
        problems.append(f"{path}: a link out of the rules directory (to {target}): "
                        "copy the file into the directory instead")
        return None
    try:
        return core_errors.read_installer_file(target, MAX_FILE_BYTES)
    except core_errors.FileRefused as exc:
        reason = str(exc)
        if reason.startswith("not a regular file"):
            reason += ": remove it"
        elif reason.startswith("too large"):
            reason += "; a rule file is a few KiB"
        problems.append(f"{path}: {reason}")
        return None


def located_errors(path: Path | str, data: Any, exc: ValidationError, *, at: tuple[int | str, ...] = ()) -> list[str]:
    """One line per pydantic error: ``FILE: rule ID: field.path: message (got VALUE)``, each once
    (:func:`core.errors.located_errors`); ``at`` is where the validated part sits in ``data``."""
    return core_errors.located_errors(path, exc, data, tags=("type",), named=_NAMED, unknown_tag=_unknown_type,
                                      at=at)


_NAMED = {"rules": "rule", "thermostats": "thermostats", "alarms": "alarms", "virtuals": "virtuals"}
"""The tables whose entries a problem names in front: ``rule night_light: ...``, ``thermostats living: ...``."""


def _unknown_type(key: str, tag: str, allowed: list[str]) -> str:
    """``unknown type 'turnon'; did you mean 'turn_on'? (expected one of 'set', 'turn_on', ...)``"""
    expected = ", ".join(repr(t) for t in allowed)
    return f"unknown {key} {tag!r}{core_errors.did_you_mean(tag, allowed)} (expected one of {expected})"


_ACTUATOR = frozenset({Component.SWITCH, Component.LIGHT, Component.SIREN})


class _Checker:
    """Cross-checks that need the whole house: entity ids, what may be commanded, alarms named."""

    def __init__(
        self, entities: Mapping[str, EntitySpec], alarms: set[str], thermostats: set[str], virtuals: set[str],
        owners: Mapping[str, Owner], *, broken: frozenset[str] = frozenset(),
    ) -> None:
        self.entities = entities
        self.alarms = alarms
        self.thermostats = thermostats
        self.virtuals = virtuals
        self.owners = owners
        self.broken = broken
        """Ids of declarations that did not validate: their own problem is reported, not every use."""

    def _missing(self, entity: str) -> bool:
        """Unknown, and not the id of a declaration whose own problem is already reported."""
        return entity not in self.entities and entity not in self.broken

    def _unknown(self, entity: str) -> str:
        return f"unknown entity {entity!r}{core_errors.did_you_mean(entity, self.entities)}"

    def rule(self, loaded: LoadedRule, problems: list[str], warnings: list[str]) -> None:
        rule = loaded.rule
        prefix = f"{loaded.path}: rule {rule.id}: "
        for i, trigger in enumerate(rule.triggers):
            entity = getattr(trigger, "entity", None)
            if entity is not None and self._missing(entity):
                problems.append(f"{prefix}triggers[{i}].entity: {self._unknown(entity)}")
            if isinstance(trigger, m.StateTrigger) and trigger.to is not None and trigger.to == trigger.from_:
                warnings.append(f"{prefix}triggers[{i}]: 'from' equals 'to': this trigger can never fire")
            self._typed(f"{prefix}triggers[{i}]", trigger, problems)
        for where, condition in _conditions_with_paths(rule.conditions, "conditions"):
            entity = getattr(condition, "entity", None)
            if entity is not None and self._missing(entity):
                problems.append(f"{prefix}{where}.entity: {self._unknown(entity)}")
            self._typed(f"{prefix}{where}", condition, problems)
            if (isinstance(condition, m.AlarmCondition) and condition.alarm not in self.alarms
                    and condition.alarm not in self.broken):
                problems.append(f"{prefix}{where}.alarm: no alarm {condition.alarm!r} is declared in [[alarms]]")
        for i, action in enumerate(rule.actions):
            self._action(f"{prefix}actions[{i}]", action, problems)
        if _contradicted(rule):
            warnings.append(f"{prefix}conditions: they contradict every trigger's 'to': this rule can never run")

    def _typed(self, where: str, test: Any, problems: list[str]) -> None:
        """A comparison with a value its entity can never have: a number of an on/off entity, a word
        not among a text entity's declared ``values`` (``[[mqtt_entities]]``) or an event entity's
        event types (a button's ``double_press``), true/false of a number."""
        spec = self.entities.get(getattr(test, "entity", None) or "")
        if spec is None:
            return
        on_off = spec.component is Component.BINARY_SENSOR
        words = spec.options if spec.component in (Component.SENSOR, Component.EVENT) else ()
        if isinstance(test, m.NumericTrigger | m.NumericCondition) and (on_off or words):
            kind = "an on/off" if on_off else "an event" if spec.component is Component.EVENT else "a text"
            problems.append(f"{where}.type: {spec.id!r} is {kind} entity, never a number: use type = \"state\"")
            return
        compared: list[tuple[str, Any]] = []
        if isinstance(test, m.StateTrigger):
            compared = [("to", test.to), ("from", test.from_)]
        elif isinstance(test, m.StateCondition):
            compared = [("equals", test.equals)] + [(f"in[{n}]", v) for n, v in enumerate(test.in_ or [])]
        for key, value in compared:
            if value is None:
                continue
            if on_off and not isinstance(value, bool):
                problems.append(f"{where}.{key}: {spec.id!r} is on/off: compare it with true or false, not {value!r}")
            elif words and value not in words:
                problems.append(f"{where}.{key}: {value!r} is not a value of {spec.id!r} "
                                f"(one of {', '.join(repr(w) for w in words)})")

    def _action(self, where: str, action: Any, problems: list[str]) -> None:
        if isinstance(action, m.AlarmAction):
            if action.alarm not in self.alarms and action.alarm not in self.broken:
                problems.append(f"{where}.alarm: no alarm {action.alarm!r} is declared in [[alarms]]")
            return
        if isinstance(action, m.PublishAction):
            self._payload(where, action.payload, problems)
            return
        if isinstance(action, m.ENTITY_ACTIONS):
            self._entity_action(where, action, problems)

    def _entity_action(self, where: str, action: Any, problems: list[str]) -> None:
        spec = self.entities.get(action.entity)
        owner = self.owners.get(action.entity)
        if spec is None and action.entity in self.broken:
            return
        if spec is None:
            problems.append(f"{where}.entity: {self._unknown(action.entity)}")
        elif owner is not None:
            problems.append(f"{where}.entity: {owner.refuses(repr(action.entity))}")
        elif isinstance(action, m.ReleaseAction) and action.entity in self.virtuals:
            problems.append(f"{where}.entity: {action.entity!r} is a virtual entity: only a device's output "
                            f"is claimed and let go; use type = \"set\"")
        elif action.entity in self.virtuals and not spec.writable:
            # A virtual value (not a flag): a rule may store any scalar in it, but not switch it.
            if not isinstance(action, m.SetAction):
                problems.append(f"{where}.entity: {action.entity!r} is a virtual value, not a switch: "
                                f"use type = \"set\"")
        elif not spec.writable:
            problems.append(f"{where}.entity: {action.entity!r} is a {spec.component}, it cannot be commanded")
        elif spec.component is Component.ALARM_CONTROL_PANEL:
            problems.append(f"{where}.entity: {action.entity!r} is an alarm: use type = \"alarm\" with a command")
        elif spec.component is Component.CLIMATE and not isinstance(action, m.SetAction):
            problems.append(
                f"{where}.type: {action.entity!r} is a thermostat: use type = \"set\" with a setpoint or mode"
            )
        elif isinstance(action, m.SetAction) and (reason := accepts(spec, action.value)) is not None:
            problems.append(f"{where}.value: {reason}")
        elif not isinstance(action, m.SetAction) and (reason := accepts(spec, True)) is not None:
            problems.append(f"{where}.entity: {reason}")

    def _payload(self, where: str, payload: str | dict[str, Any], problems: list[str]) -> None:
        templates = [("payload", payload)] if isinstance(payload, str) else [
            (f"payload.{key}", value) for key, value in payload.items() if isinstance(value, str)
        ]
        for path, text in templates:
            try:
                template = compile_template(text)
            except ValueError as exc:
                problems.append(f"{where}.{path}: {exc}")
                continue
            for entity in template.entities():
                if self._missing(entity):
                    problems.append(f"{where}.{path}: {self._unknown(entity)}")

    def controller(self, declared: Declared, problems: list[str]) -> None:
        item = declared.item
        if isinstance(item, m.Thermostat):
            prefix = f"{declared.path}: thermostats {item.id}: "
            sensor = self.entities.get(item.sensor)
            if sensor is None and self._missing(item.sensor):
                problems.append(f"{prefix}sensor: {self._unknown(item.sensor)}")
            elif sensor is not None and sensor.component is not Component.SENSOR:
                problems.append(f"{prefix}sensor: {item.sensor!r} is a {sensor.component}, expected a sensor")
            for name in ("heater", "cooler"):
                self._actuator(prefix + name, getattr(item, name), problems)
        elif isinstance(item, m.Alarm):
            prefix = f"{declared.path}: alarms {item.id}: "
            self._actuator(prefix + "siren", item.siren, problems)
            for mode in ("armed_home", "armed_away", "armed_night"):
                for i, entity in enumerate(getattr(item.sensors, mode)):
                    if self._missing(entity):
                        problems.append(f"{prefix}sensors.{mode}[{i}]: {self._unknown(entity)}")
            for i, entity in enumerate(item.instant):
                if self._missing(entity):
                    problems.append(f"{prefix}instant[{i}]: {self._unknown(entity)}")

    def _actuator(self, where: str, entity: str | None, problems: list[str]) -> None:
        if entity is None:
            return
        spec = self.entities.get(entity)
        if spec is None:
            if self._missing(entity):
                problems.append(f"{where}: {self._unknown(entity)}")
        elif spec.component not in _ACTUATOR:
            problems.append(f"{where}: {entity!r} is a {spec.component}, expected a switch, light or siren")


def _contradicted(rule: m.Rule) -> bool:
    """Every trigger is a ``state`` trigger (no ``for``) whose ``to`` a top-level ``state`` condition excludes."""
    def excluded(trigger: Any) -> bool:
        if not isinstance(trigger, m.StateTrigger) or trigger.to is None or trigger.for_ is not None:
            return False
        for condition in rule.conditions:
            if isinstance(condition, m.StateCondition) and condition.entity == trigger.entity:
                allowed = [condition.equals] if condition.in_ is None else condition.in_
                if not any(type(a) is type(trigger.to) and a == trigger.to for a in allowed):
                    return True
        return False

    return all(excluded(trigger) for trigger in rule.triggers)


def _conditions_with_paths(conditions: Sequence[Any], base: str) -> Iterator[tuple[str, Any]]:
    for i, condition in enumerate(conditions):
        where = f"{base}[{i}]"
        yield where, condition
        if isinstance(condition, m.AllCondition | m.AnyCondition | m.NotCondition):
            yield from _conditions_with_paths(condition.conditions, f"{where}.conditions")
