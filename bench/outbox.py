"""Benchmark 4: sustained QoS 1 forwarding through the durable outbox to a local Mosquitto.

Needs the MQTT bridge and outbox (branch ``mqtt``); until they are on this
tree it reports what is missing.
"""

from __future__ import annotations

from bench.figures import Figure, not_yet
from bench.house import gateway_has_mqtt

BENCH = "4 outbox"


def measure(quick: bool) -> list[Figure]:
    if not gateway_has_mqtt():
        return [not_yet(BENCH, "sustained QoS 1 events/s (target ≥ 10,000)", "no MQTT bridge/outbox on this tree")]
    raise NotImplementedError("bridge present: the harness is written against its API when it lands")
