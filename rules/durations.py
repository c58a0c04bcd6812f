"""Durations and times of day as installers write them: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"06:30"``.

A bare number is seconds. Parsing is a small regular grammar (no ``eval``), and
a mistake names what was expected, e.g. ``expected a duration such as '30s',
'5m' or '1h30m' (got '5 min')``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_HINT = "expected a duration such as '30s', '5m' or '1h30m'"
MAX_DURATION = 366 * 86400.0


def parse_duration(raw: Any) -> float:
    """Seconds in ``raw``; ValueError with an installer-readable message otherwise."""
    if isinstance(raw, bool):
        raise ValueError(f"{_HINT} (got {raw!r})")
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        text = raw.strip().lower()
        if not _WHOLE.match(text):
            raise ValueError(f"{_HINT} (got {raw!r})")
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    else:
        raise ValueError(f"{_HINT} (got {raw!r})")
    if not 0 <= seconds <= MAX_DURATION:
        raise ValueError(f"a duration must be between 0s and 366d (got {raw!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; the inverse of :func:`parse_duration` for whole seconds."""
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def parse_time_of_day(raw: Any) -> dt.time:
    """``"06:30"``, ``"22:15:30"`` or a TOML local time -> :class:`datetime.time`."""
    if isinstance(raw, dt.time):
        return raw.replace(tzinfo=None, microsecond=0)
    if isinstance(raw, str) and (match := _TIME.match(raw.strip())):
        return dt.time(int(match[1]), int(match[2]), int(match[3] or 0))
    raise ValueError(f"expected a time of day such as '06:30' or '22:15:00' (got {raw!r})")


Duration = Annotated[float, BeforeValidator(parse_duration)]
TimeOfDay = Annotated[dt.time, BeforeValidator(parse_time_of_day)]
