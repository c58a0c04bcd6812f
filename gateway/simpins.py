"""Mock pins for ``--simulate`` that remember the level they were released at.

On a board, the kernel keeps an output at its last level after the process
lets go of it, so "what was each output left at" is the question a shutdown
test asks. gpiozero's ``MockPWMPin`` answers it badly: its ``close()`` drops
the level to 0 as a side effect of stopping PWM. :class:`ReleasedLevelPin`
records the level just before that, and ``gateway run --simulate --pin-dump``
writes it out.
"""

from __future__ import annotations

from typing import Any

from gpiozero.pins.mock import MockPWMPin


class ReleasedLevelPin(MockPWMPin):  # type: ignore[misc]  # gpiozero is untyped
    """A ``MockPWMPin`` whose ``released`` is the output level at ``close()`` (None if never an output)."""

    def __init__(self, factory: Any, info: Any) -> None:
        super().__init__(factory, info)
        self.released: float | None = None

    def close(self) -> None:
        if self.function == "output":
            self.released = float(self.state)
        super().close()


def pin_report(factory: Any) -> dict[str, dict[str, Any]]:
    """Each pin by name: its function now, its level history, and the level it was released at."""
    return {
        str(pin.info.name): {
            "function": pin.function,
            "states": [float(s.state) for s in pin.states],
            "released": getattr(pin, "released", None),
        }
        for pin in factory.pins.values()
    }
