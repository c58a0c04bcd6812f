"""What every fault-injection test reports: sent, received, lost, duplicated (and its own extras).

Each test builds a :class:`Tally`, asserts on it, and calls :meth:`Tally.report`,
which prints one ``FAULT name: sent=... received=... lost=... duplicated=...``
line (shown with ``pytest -s`` or ``-rA``) and, when ``FAULT_REPORT`` names a
file, appends the same figures to it as one JSON line; docs/reliability.md is
written from that file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    name: str
    sent: set[Hashable] = field(default_factory=set)
    received: list[Hashable] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def send(self, key: Hashable) -> None:
        self.sent.add(key)

    def receive(self, keys: Iterable[Hashable]) -> None:
        self.received.extend(keys)

    @property
    def lost(self) -> set[Hashable]:
        return self.sent - set(self.received)

    @property
    def duplicated(self) -> int:
        return len(self.received) - len(set(self.received))

    def figures(self) -> dict[str, Any]:
        return {
            "fault": self.name,
            "sent": len(self.sent),
            "received": len(set(self.received) & self.sent),
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            **self.extra,
        }

    def report(self) -> dict[str, Any]:
        figures = self.figures()
        print("FAULT " + " ".join(f"{k}={v}" for k, v in figures.items()))
        path = os.environ.get("FAULT_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(figures) + "\n")
        return figures

    def assert_nothing_lost(self) -> None:
        lost = sorted(self.lost, key=str)
        assert not lost, f"{self.name}: {len(lost)} lost, first {lost[:10]}"
