"""A gateway in a process of its own, as systemd runs it: real CLI, mock pins, a real pty.

``GPIOZERO_PIN_FACTORY=mock`` gives the whole process gpiozero's ``MockFactory``;
serial devices point at a pseudo-terminal the benchmark holds. The pieces are
shared with the fault-injection tests (``tests/faults_support.py``).
"""

from __future__ import annotations

from tests.faults_support import ROOT, Pty, start_gateway
from tests.faults_support import stop_gateway as stop

__all__ = ["ROOT", "Pty", "start_gateway", "stop"]
