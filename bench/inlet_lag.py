"""A hub command sent just after a flood: how long until it is answered (issue 17, the inlet's backlog).

Flood a (hub commands on ``<base>/set/light``) or c (``homeassistant/status`` births) runs against a real
``gateway run`` (:func:`bench.floods.run_flood`) for ``SECONDS``; ``DELAY`` s after the flooder stopped, a hub
in this process sends ``ON`` (QoS 1, the hub's retrying kind) to a second relay, ``hall_light``, and times the
final answer on ``result/hall_light`` (``done``, ``deferred``, ``failed`` or ``rejected``). A second relay,
so that its answers are not mixed with the flood's own answers on ``result/light``, and its rate limit is its
own. The health report's shed counters (``shed.inlet_backlog_purged`` among them) are printed too.

    PYTHONPATH=. .venv/bin/python -m bench.inlet_lag [a|c] [SECONDS] [DELAY]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.floods import ARM_RULE, BASE, Flood, run_flood

HALL_LIGHT = '\n[[devices]]\nid = "hall_light"\ndriver = "gpio.relay"\npin = 23\n'
FINAL = ("done", "deferred", "failed", "rejected")
WAIT_S = 60.0


def answer_time(config: Path, broker_port: int) -> dict[str, Any]:
    """Send ``ON`` to ``hall_light`` now; seconds until its final answer (None if none within WAIT_S)."""
    subscribed = threading.Event()
    final = threading.Event()
    answers: list[tuple[float, str]] = []
    hub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"inlet-lag-{os.getpid()}")

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        status = str(json.loads(msg.payload).get("status"))
        answers.append((time.perf_counter(), status))
        if status in FINAL:
            final.set()

    hub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{BASE}/result/hall_light", 1)
    hub.on_subscribe = lambda *a: subscribed.set()
    hub.on_message = on_message
    hub.connect("127.0.0.1", broker_port)
    hub.loop_start()
    try:
        subscribed.wait(10)
        sent = time.perf_counter()
        hub.publish(f"{BASE}/set/hall_light", "ON", qos=1)
        final.wait(WAIT_S)
    finally:
        hub.loop_stop()
        hub.disconnect()
    return {"answers": [(round(t - sent, 3), s) for t, s in answers],
            "final_s": next((round(t - sent, 3) for t, s in answers if s in FINAL), None)}


def measure(key: str, seconds: float, delay: float) -> dict[str, Any]:
    flood = Flood(key, "inlet lag", rules="version = 1\n" + ARM_RULE, outbox=HALL_LIGHT)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_flood(flood, Path(tmp) / key, seconds, delay, check=answer_time, grace=0.0)
    return {"flood": key, "sent": result.sent, "alive": result.alive, **result.checks, "shed": result.shed,
            "peak_mb": round(result.peak_mb, 1)}


def main(argv: list[str]) -> int:
    key = argv[0] if argv else "a"
    seconds = float(argv[1]) if len(argv) > 1 else 10.0
    delay = float(argv[2]) if len(argv) > 2 else 1.0
    print(json.dumps(measure(key, seconds, delay)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
