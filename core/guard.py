"""One wrapper for every callable handed to a foreign thread.

paho re-raises an exception from a callback on its network thread and drops
the link; gpiozero and APScheduler swallow or print them. Every callback we
give to another library goes through :func:`guarded`, which logs with
context, counts, and carries on: a bad reading never kills a thread.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

_lock = threading.Lock()
failures: Counter[str] = Counter()
"""Exceptions caught by :func:`guarded`, by what failed; shown in health."""


def guarded(what: str) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorate ``fn`` so that an exception is logged as ``what`` and counted, never raised."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except Exception:
                with _lock:
                    failures[what] += 1
                log.exception("%s failed", what)
                return None

        return inner

    return wrap
