"""Empty defaults for pydantic fields, as Python functions rather than the ``list`` and ``dict`` types.

Why: pydantic asks a field's ``default_factory`` for its signature when it builds the model's validator
(whether the factory takes the validated data). For the C types ``list`` and ``dict`` that is
``inspect.signature`` parsing their text signature with :mod:`tokenize`, whose regular expressions are
compiled at the first use: 10 ms of a start on this machine, for the five ``list`` factories the bench
house's validators meet (docs/performance.md, *Start → READY*, 2 Dec 2026). A Python function's signature
is read from its code object. Use ``Field(default_factory=empty_list)``; ``dataclasses.field`` does not
ask, and keeps ``list``."""

from __future__ import annotations

from typing import Any


def empty_list() -> list[Any]:
    """A new empty list (each model instance gets its own)."""
    return []


def empty_dict() -> dict[str, Any]:
    """A new empty table: a config section left out of the file, validated into its defaults."""
    return {}
