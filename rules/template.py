"""Payload templates for the ``publish`` action: substitution of named fields, nothing else.

``"Leak at {entity}: {value} ({time})"`` fills ``{entity}`` from the triggering
event. Known fields: ``entity``, ``value``, ``unit``, ``previous``, ``rule``,
``cause``, ``time`` (ISO 8601, local zone) and ``state.<entity_id>`` (the
current value of any entity). ``{{`` and ``}}`` are literal braces. There are no
expressions, attribute access or format specs: a template cannot run code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core.events import Value
from core.floattext import float_text

FIELDS = frozenset({"entity", "value", "unit", "previous", "rule", "cause", "time"})
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_STATE = re.compile(r"^state\.([a-z][a-z0-9_]*)$")


@dataclass(slots=True, frozen=True)
class Template:
    parts: tuple[str | tuple[str, str | None], ...]
    """Literal text, or ``(field, entity)`` where entity is set for ``state.<entity>``."""
    uses_time: bool = False
    """Whether ``{time}`` is in it: formatting a date costs more than the rest of a short payload, so the
    runner formats it only for templates that show it."""

    def render(self, fields: Mapping[str, Value], state: Callable[[str], Value]) -> str:
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, entity = part
            value = state(entity) if entity is not None else fields.get(name)
            out.append("" if value is None else _text(value))
        return "".join(out)

    def entities(self) -> list[str]:
        return [p[1] for p in self.parts if isinstance(p, tuple) and p[1] is not None]


def _text(value: Value) -> str:
    if type(value) is float:  # what sensors send: str of a float is its repr, remembered (core.floattext)
        return float_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_template(text: str) -> Template:
    """Parse ``text``; ValueError names the first unknown field or stray brace."""
    parts: list[str | tuple[str, str | None]] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        parts.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            parts.append(token[0])
        elif token in ("{", "}"):
            raise ValueError(f"stray {token!r} at position {match.start()}: write {token * 2!r} for a literal brace")
        else:
            name = match.group(1).strip()
            if name in FIELDS:
                parts.append((name, None))
            elif state := _STATE.match(name):
                parts.append(("state", state.group(1)))
            else:
                known = ", ".join(sorted(FIELDS))
                raise ValueError(f"unknown field {{{name}}} (known: {known}, state.<entity>)")
    parts.append(text[pos:])
    return Template(tuple(p for p in parts if p != ""), uses_time=("time", None) in parts)
