"""Loading a directory of rule files, all or nothing.

The whole set is parsed, validated and checked against the configured
entities before it may replace the running one. Every problem is reported,
each as ``FILE: rule ID: field.path: message``; one bad file means the old
rules stay in force.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drivers.base import EntitySpec
from rules.model import Rule, RuleFile, SetAction, StateTrigger, TurnOffAction, TurnOnAction


class RulesError(Exception):
    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(slots=True, frozen=True)
class LoadedRule:
    rule: Rule
    path: Path


def load_rules(directory: Path, entities: Mapping[str, EntitySpec]) -> list[LoadedRule]:
    """Every enabled rule under ``directory/*.toml``; :class:`RulesError` lists every problem."""
    problems: list[str] = []
    loaded: list[LoadedRule] = []
    if not directory.is_dir():
        raise RulesError([f"{directory}: rules directory does not exist"])
    for path in sorted(directory.glob("*.toml")):
        loaded.extend(_load_file(path, problems))
    seen: dict[str, Path] = {}
    for item in loaded:
        if item.rule.id in seen:
            problems.append(
                f"{item.path}: rule {item.rule.id}: id: duplicate id (also in {seen[item.rule.id]})"
            )
        seen.setdefault(item.rule.id, item.path)
        problems.extend(_check_entities(item, entities))
    if problems:
        raise RulesError(problems)
    return [item for item in loaded if item.rule.enabled]


def _load_file(path: Path, problems: list[str]) -> list[LoadedRule]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read: {exc}")
        return []
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
        return []
    try:
        parsed = RuleFile.model_validate(data)
    except ValidationError as exc:
        problems.extend(_located(path, data, exc))
        return []
    return [LoadedRule(rule, path) for rule in parsed.rules]


def _located(path: Path, data: Any, exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        prefix = f"{path}: "
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rules = data.get("rules") if isinstance(data, dict) else None
            rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
            rule_id = rule.get("id") if isinstance(rule, dict) else None
            prefix += f"rule {rule_id}: " if isinstance(rule_id, str) else f"rules[{loc[1]}]: "
            loc = loc[2:]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        got = ""
        if error["type"] not in {"missing", "extra_forbidden"} and not isinstance(error.get("input"), dict | list):
            got = f" (got {error.get('input')!r})"
        out.append(f"{prefix}{where}: {message}{got}" if where else f"{prefix}{message}{got}")
    return out


def _check_entities(item: LoadedRule, entities: Mapping[str, EntitySpec]) -> list[str]:
    problems = []
    prefix = f"{item.path}: rule {item.rule.id}"
    for i, trigger in enumerate(item.rule.triggers):
        if isinstance(trigger, StateTrigger) and trigger.entity not in entities:
            problems.append(f"{prefix}: triggers[{i}].entity: unknown entity {trigger.entity!r}")
    for i, action in enumerate(item.rule.actions):
        if isinstance(action, SetAction | TurnOnAction | TurnOffAction):
            spec = entities.get(action.entity)
            if spec is None:
                problems.append(f"{prefix}: actions[{i}].entity: unknown entity {action.entity!r}")
            elif not spec.writable:
                problems.append(
                    f"{prefix}: actions[{i}].entity: {action.entity!r} is a {spec.component}, it cannot be commanded"
                )
    return problems
