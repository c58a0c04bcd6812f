"""Benchmark 7: a 100,000-event outbox backlog survives a restart and drains; the drain rate.

Needs the MQTT bridge and outbox (branch ``mqtt``).
"""

from __future__ import annotations

from bench.figures import Figure, not_yet
from bench.house import gateway_has_mqtt

BENCH = "7 backlog"


def measure(quick: bool) -> list[Figure]:
    if not gateway_has_mqtt():
        return [not_yet(BENCH, "100,000-event backlog drain rate", "no MQTT bridge/outbox on this tree")]
    raise NotImplementedError("bridge present: the harness is written against its API when it lands")
