"""What "on" means: one definition for the whole gateway.

Values are typed at the edges (a relay or siren takes a boolean, a dimmable
light a boolean or a brightness in %), so inside the gateway "on" is simple:
``True``, or a number above zero. Words (``"ON"``, ``"off"``) are accepted
only where a person or the hub types them, and are turned into booleans
there with :func:`parse_on_off`; :func:`is_on` still reads them the same way,
so no corner of the code can treat ``"OFF"`` as truthy.
"""

from __future__ import annotations

from core.events import Value

ON_WORDS = frozenset({"on", "true", "1", "yes"})
OFF_WORDS = frozenset({"off", "false", "0", "no"})


def parse_on_off(text: str) -> bool | None:
    """``True`` for an "on" word, ``False`` for an "off" word (any case), ``None`` for anything else."""
    word = text.strip().lower()
    if word in ON_WORDS:
        return True
    if word in OFF_WORDS:
        return False
    return None


def is_on(value: Value) -> bool:
    """Whether an output at ``value`` is on: ``True``, a number above 0, or an "on" word."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value > 0
    if isinstance(value, str):
        return parse_on_off(value) is True
    return False
