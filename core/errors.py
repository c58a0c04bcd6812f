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

The files themselves are read by :func:`read_installer_file`: only a regular file (a FIFO would make
the reader wait for a writer forever), at most a bounded size, as UTF-8; and :func:`nesting` measures
how deeply a parsed document nests, so that a file nested thousands deep is refused with a located
line before anything recurses over it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

MAX_NESTING = 32
"""Tables and arrays nested deeper than this are refused before validation: a real rule file nests about
ten deep (conditions within conditions), a config.toml four, and everything after parsing recurses."""

MAX_SHOWN = 60
"""Longest ``repr`` of a value shown whole after ``got``; a longer one is cut to this length."""

_NO_VALUE = frozenset({"missing", "extra_forbidden", "union_tag_not_found"})
"""Errors whose input is not the installer's value (a missing key, the key itself, the whole table)."""

UnknownTag = Callable[[str, str, list[str]], str]
"""``(key, tag, allowed) -> message`` for a tagged union's unknown tag (``driver = "gpio.realy"``)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'debounce'?"`` for the closest of ``choices`` to a misspelt ``word``, or ``""``.

    ``difflib`` is imported here, on the first mistake: a gateway that starts from a valid config never
    needs it (0.2 MB and 1 ms of every start, docs/performance.md)."""
    import difflib

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
    at: tuple[int | str, ...] = (),
) -> list[str]:
    """One line per error of ``exc`` (raised validating ``data``), each once: ``SOURCE: [NAME: ]path: message``.

    ``tags`` are the discriminator keys of the file's tagged unions (``"driver"``, ``"type"``): pydantic
    puts the tag's value in an error's location, where the installer wrote no such key. ``named`` maps
    top-level tables to the word that names their entries in front of the path (``{"rules": "rule"}``
    gives ``rule night_light: triggers[0].entity: ...``). ``unknown_tag`` words an unknown tag. ``at`` is
    where in ``data`` the validated value sits, when ``exc`` comes from validating one part of it (a rule
    file's ``("rules", 2)``): its errors are then located as if the whole file had been validated.
    """
    out: list[str] = []
    for error in exc.errors(include_url=False):
        prefix, where = _locate((*at, *error["loc"]), data, tags, named or {})
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
    if repr(error["input"]) in message:
        return ""  # the validator's own message already quotes it
    return got(error["input"])


def got(value: object) -> str:
    """`` (got 'everything')``: the installer's value after a message, cut to :data:`MAX_SHOWN`; ``""`` for a
    table or an array (too long to show, and the path already points at it)."""
    if isinstance(value, dict | list):
        return ""
    shown = repr(value)
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


class FileRefused(Exception):
    """An installer's file that cannot be used as one: the message says why (``not a regular file (a FIFO)``,
    ``too large (over 1024 KiB)``, ``cannot read: Permission denied``, ``not UTF-8 text``)."""


def read_installer_file(path: str | os.PathLike[str], limit: int) -> str:
    """The UTF-8 text of the regular file ``path`` (links followed) of at most ``limit`` bytes, or
    :class:`FileRefused`.

    The kind of file is checked *before* it is opened: opening a FIFO for reading waits for a writer
    (``gateway check`` and the live reload would hang), and opening a device may act on it (a watchdog
    starts counting). It is checked again on the open descriptor, in case the name changed in between;
    no more than ``limit + 1`` bytes are read (a link to ``/dev/zero`` must not eat the memory).
    """
    try:
        if (kind := _not_regular(os.stat(path).st_mode)) is not None:
            raise FileRefused(f"not a regular file ({kind})")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if (kind := _not_regular(os.fstat(fd).st_mode)) is not None:
                raise FileRefused(f"not a regular file ({kind})")
            raw = _read_at_most(fd, limit + 1)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise FileRefused("no such file") from None
    except OSError as exc:
        raise FileRefused(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise FileRefused(f"too large (over {limit // 1024} KiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused("not UTF-8 text") from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(65_536, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _not_regular(mode: int) -> str | None:
    """What a file that is not a regular file is (``a FIFO``), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def nesting(data: Any, limit: int = MAX_NESTING) -> int:
    """How deeply tables and arrays nest in ``data`` (a scalar is 0; past ``limit + 1`` it stops counting),
    without recursing."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if depth <= limit:  # deeper is refused anyway: stop walking
                stack.extend((child, depth) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def too_deep(limit: int = MAX_NESTING) -> str:
    return f"nested too deeply (more than {limit} levels of tables and arrays)"
