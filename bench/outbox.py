"""Benchmark 4: sustained QoS 1 forwarding through the durable outbox to a local Mosquitto.

A real ``MqttBridge`` (SQLite outbox with the production settings: WAL,
``synchronous=NORMAL``, 20 ms commit window, 100 messages in flight) is fed
readings as fast as the producer can offer them. The subscriber is
``mosquitto_sub -C N`` in its own process (C: never the bottleneck, and not
sharing this interpreter's lock); the rate is N over the time from the first
``forward`` to its exit. It is run with the shipped ``drain_rate`` (which
paces *all* forwarding) and with it raised, beside a bare paho QoS 1 loop
with the same in-flight window (no outbox): the floor in this interpreter.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.figures import CpuMeter, Figure
from gateway.config import MqttSection
from tests.conftest import Broker, free_port
from tests.mqtt_support import make_bridge, make_config

BENCH = "4 outbox"
WINDOW = 100
RAISED_DRAIN = 100_000.0
BARE_COUNT = 20_000
"""Bare paho at full speed outruns a QoS 1 subscriber: with 100,000 messages the broker delivered only
69,468 to ``mosquitto_sub`` here (not investigated further: it is the baseline, not the gateway)."""
PRODUCTION_OUTBOX = {"synchronous": "NORMAL", "batch_ms": 20}


class Counter:
    """``mosquitto_sub -C count``: exits when ``count`` messages have arrived; :meth:`wait` returns when."""

    def __init__(self, broker: Broker, topic: str, count: int, log: Path) -> None:
        self.count = count
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", topic, "-q", "1",
                 "-C", str(count), "-d", "-i", f"counter-{os.getpid()}-{count}"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while b"SUBACK" not in log.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto_sub did not subscribe")
            time.sleep(0.01)

    def wait(self, timeout: float) -> float:
        """When the last message arrived; RuntimeError saying how many did if they stop coming."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while self.process.poll() is None:
            now = time.monotonic()
            if now - last_change > 1.0:
                got = self.received()
                if (got == last and now - last_change > 10.0) or now > deadline:
                    self.process.kill()
                    self.process.wait()
                    raise RuntimeError(f"only {got:,} of {self.count:,} messages arrived")
                if got != last:
                    last, last_change = got, now
            time.sleep(0.002)
        return time.perf_counter()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def received(self) -> int:
        return self.log.read_bytes().count(b"received PUBLISH")


def bridge_rate(broker: Broker, directory: Path, count: int, gateway_id: str, **mqtt_settings: Any) -> float:
    config = make_config(gateway_id, directory / gateway_id, broker.port, max_inflight=WINDOW, discovery=False,
                         outbox=PRODUCTION_OUTBOX, **mqtt_settings)
    harness = make_bridge(config)
    bridge = harness.bridge
    counter = Counter(broker, f"gateway/{gateway_id}/event/living_temp", count, directory / f"{gateway_id}.sub")
    bridge.start()
    try:
        deadline = time.monotonic() + 10
        while not bridge.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        reading = harness.events.reading
        started = time.perf_counter()
        for i in range(count):
            bridge.forward(reading("living_temp", i))
        return count / (counter.wait(300) - started)
    finally:
        bridge.stop()
        counter.close()


def paho_rate(broker: Broker, directory: Path, count: int) -> float:
    counter = Counter(broker, "bench/paho/line", count, directory / "paho.sub")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho")
    client.max_inflight_messages_set(WINDOW)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        started = time.perf_counter()
        for i in range(count):
            client.publish("bench/paho/line", b"t=%d" % i, qos=1)
        return count / (counter.wait(300) - started)
    finally:
        client.loop_stop()
        client.disconnect()
        counter.close()


def measure(quick: bool) -> list[Figure]:
    count = 20_000 if quick else 100_000
    default_drain = MqttSection().drain_rate
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = Broker(port=free_port(), directory=directory / "mosquitto")
        broker.start()
        try:
            meter = CpuMeter(os.getpid())
            meter.start()
            raised = bridge_rate(broker, directory, count, "bench-raised", drain_rate=RAISED_DRAIN)
            percent, _ = meter.stop()
            shipped = bridge_rate(broker, directory, min(count, 5_000), "bench-default")
            bare = paho_rate(broker, directory, BARE_COUNT)
        finally:
            broker.stop()
    return [
        Figure(BENCH, f"sustained QoS 1 via outbox, drain_rate={RAISED_DRAIN:,.0f}", raised, "ev/s", "≥ 10,000",
               raised >= 10_000, f"{count:,} events, window {WINDOW}, WAL NORMAL, 20 ms commits; "
               f"bench process {percent:.0f} % core"),
        Figure(BENCH, f"sustained QoS 1 via outbox, shipped drain_rate={default_drain:,.0f}", shipped, "ev/s",
               "≥ 10,000", shipped >= 10_000, "the default drain_rate caps all forwarding, not only catch-up"),
        Figure(BENCH, "baseline: bare paho QoS 1, same window", bare, "ev/s",
               note=f"{BARE_COUNT:,} messages; no outbox, no JSON"),
    ]
