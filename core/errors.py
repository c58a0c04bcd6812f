"""What an installer reads when a file is wrong: pydantic's errors as one located line each.

``config.toml`` (:mod:`gateway.config`) and the rule files (:mod:`rules.loader`)
are validated by pydantic; :func:`located_errors` turns its errors into lines
such as::

    config.toml: devices[0] (hall_light).driver: unknown driver 'gpio.realy'; did you mean 'gpio.relay'? (known: ...)
    rules.d/house.toml: rule night_light: actions[0].for: expected a duration such as '30s' (got '2 minutes')

The rules, the same for both files:

* the path is the keys and indexes the installer wrote (``devices[0].pin``);
  pydantic's own steps (the tag of a tagged union, a union member's type name
  once past the value) are left out;
* a list entry with an ``id`` is named by it: inline (``devices[0] (hall_light)``),
  or in front for the tables the caller names (``rule night_light: ...``);
* an unknown key is ``unknown key``; an unknown tag (``driver``, ``type``,
  ``step``) says what is allowed and the nearest match (:func:`did_you_mean`);
  a missing tag is ``missing 'type'``;
* ``(got VALUE)`` follows, except for missing and unknown keys, tables and
  lists, and messages that already quote the value; a long value is cut;
* each line once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

MAX_SHOWN = 60
"""Longest ``repr`` of a value shown whole after ``got``; a longer one is cut to this length."""

_NO_VALUE = frozenset({"missing", "extra_forbidden", "union_tag_not_found"})
"""Errors whose input is not the installer's value (a missing key, the key itself, the whole table)."""

UnknownTag = Callable[[str, str, list[str]], str]
"""``(key, tag, allowed) -> message`` for a tagged union's unknown tag (``driver = "gpio.realy"``)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'debounce'?"`` for the closest of ``choices`` to a misspelt ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_tag_message(key: str, tag: str, allowed: list[str]) -> str:
    """``unknown step 'debounse'; did you mean 'debounce'? (allowed here: debounce, glitch, ...)``"""
    return f"unknown {key} {tag!r}{did_you_mean(tag, allowed)} (allowed here: {', '.join(allowed)})"


def located_errors(
    source: object,
    exc: ValidationError,
    data: Any,
    *,
    tags: Collection[str] = (),
    named: Mapping[str, str] | None = None,
    unknown_tag: UnknownTag = unknown_tag_message,
) -> list[str]:
    """One line per error of ``exc`` (raised validating ``data``), each once: ``SOURCE: [NAME: ]path: message``.

    ``tags`` are the discriminator keys of the file's tagged unions (``"driver"``, ``"type"``): pydantic
    puts the tag's value in an error's location, where the installer wrote no such key. ``named`` maps
    top-level tables to the word that names their entries in front of the path (``{"rules": "rule"}``
    gives ``rule night_light: triggers[0].entity: ...``). ``unknown_tag`` words an unknown tag.
    """
    out: list[str] = []
    for error in exc.errors(include_url=False):
        prefix, where = _locate(error["loc"], data, tags, named or {})
        message = error["msg"].removeprefix("Value error, ")
        ctx = error.get("ctx", {})
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "union_tag_invalid":
            key = str(ctx.get("discriminator", "")).strip("'")
            allowed = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
            message = unknown_tag(key, str(ctx.get("tag")), allowed)
            where = f"{where}.{key}" if where else key
        elif kind == "union_tag_not_found":
            message = f"missing {ctx.get('discriminator', 'tag')}"
        body = f"{where}: {message}" if where else message
        line = f"{source}: {prefix}{body}{_got(error, message)}"
        if line not in out:
            out.append(line)
    return out


def _got(error: Mapping[str, Any], message: str) -> str:
    if error["type"] in _NO_VALUE or "input" not in error or isinstance(error["input"], dict | list):
        return ""
    shown = repr(error["input"])
    if shown in message:
        return ""  # the validator's own message already quotes it
    return f" (got {shown if len(shown) <= MAX_SHOWN else shown[:MAX_SHOWN - 3] + '...'})"


def _locate(
    loc: tuple[int | str, ...], data: Any, tags: Collection[str], named: Mapping[str, str]
) -> tuple[str, str]:
    """``(prefix, path)``: ``("rule ID: ", "triggers[0].entity")`` or ``("", "devices[2] (door).pin")``."""
    prefix = ""
    items = list(loc)
    node = data
    if len(items) >= 2 and items[0] in named and isinstance(items[1], int):
        table = node.get(items[0]) if isinstance(node, dict) else None
        node = table[items[1]] if isinstance(table, list) and items[1] < len(table) else None
        ident = node.get("id") if isinstance(node, dict) else None
        prefix = f"{named[str(items[0])]} {ident}: " if isinstance(ident, str) else f"{items[0]}[{items[1]}]: "
        items = items[2:]
    parts: list[str] = []
    for item in items:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and isinstance(node.get("id"), str):
                parts.append(f" ({node['id']})")
        elif isinstance(node, dict) and item not in node and any(node.get(tag) == item for tag in tags):
            continue  # pydantic's union tag, not a key the installer wrote
        elif not isinstance(node, dict) and parts:
            break  # past the value the installer wrote: pydantic's union member names
        else:
            parts.append(f".{item}" if parts else str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return prefix, "".join(parts)
