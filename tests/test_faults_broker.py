"""Fault: the broker killed (SIGKILL) and restarted during a 1,000 events/s stream.

The whole path on real parts: lines written into a real pseudo-terminal at
1,000 a second, ``gateway run`` in its own process reading them through the
serial.kv driver, a real Mosquitto, and a hub with a kept session (QoS 1) on
``event/temperature``. The broker is killed mid-stream and started again
half a second later; the gateway's outbox holds what arrives meanwhile.
Every line written must reach the hub; duplicates are counted (the hub drops
them by event id) and bounded by the gateway's in-flight window.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import pytest

from tests import toml_kit as toml
from tests.conftest import Broker, free_port
from tests.faults_support import Pty, Tally, start_gateway, stop_gateway
from tests.helpers import wait_until, write_config
from tests.mqtt_support import Message, recorder

RATE = 1_000
LINES = 4_000
KILL_AT = 1_500
WINDOW = 100
BROKER = "persistence true\nautosave_on_changes true\nautosave_interval 1\nuser root\n"
"""Persistence keeps the hub's session and its queue across the kill, saved after every change, so what the
broker acknowledged is on its disk; root: pytest's 0700 temp dirs are closed to the mosquitto user."""


def stream_config(directory: Path, port: int, serial: str, gateway_id: str) -> Path:
    return write_config(directory, toml.config(
        toml.gateway(gateway_id),
        toml.mqtt(port, reconnect_min=0.2, reconnect_max=1, max_inflight=WINDOW, discovery=False),
        toml.serial_kv("climate", "temperature", port=serial, baudrate=115200),
    ))


def write_lines(master: int, first: int, last: int, rate: float, tally: Tally) -> None:
    """Lines ``t=first`` .. ``t=last-1`` paced at ``rate`` a second, ten per write."""
    started = time.monotonic()
    for i in range(first, last, 10):
        batch = range(i, min(i + 10, last))
        os.write(master, b"".join(b"t=%d\n" % n for n in batch))
        for n in batch:
            tally.send(n)
        pause = started + (i + 10 - first) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)


def values(hub_messages: list[Message]) -> list[int]:
    return [int(m.json()["value"]) for m in hub_messages]


@pytest.mark.slow
def test_a_broker_killed_and_restarted_mid_stream_loses_nothing(tmp_path: Path) -> None:
    broker = Broker(port=free_port(), directory=tmp_path / "mosquitto", extra_config=BROKER)
    broker.start()
    pty = Pty()
    topic = "gateway/broker-kill/event/temperature"
    config = stream_config(tmp_path, broker.port, pty.path, "broker-kill")
    log = tmp_path / "gateway.log"
    process = start_gateway(config, log)
    tally = Tally("broker SIGKILLed and restarted at 1,000 events/s")
    try:
        with recorder(broker.host, broker.port, topic, client_id="hub-broker-kill", session=True) as hub:
            wait_until(lambda: b" started: " in log.read_bytes(), timeout=20, what="the gateway started")
            write_lines(pty.master, 0, 20, 100, tally)
            wait_until(lambda: len(hub.on(topic)) >= 20, timeout=20, what="the path flowing")
            time.sleep(1.5)  # the broker autosaves the hub's session
            write_lines(pty.master, 20, KILL_AT, RATE, tally)
            broker.stop(kill=True)
            killed = time.monotonic()
            write_lines(pty.master, KILL_AT, KILL_AT + 500, RATE, tally)
            broker.start()
            outage = time.monotonic() - killed
            write_lines(pty.master, KILL_AT + 500, LINES, RATE, tally)
            with contextlib.suppress(AssertionError):  # reported with the counts, then asserted
                wait_until(lambda: set(values(hub.on(topic))) >= tally.sent, timeout=30, what="every line")
            tally.receive(values(hub.on(topic)))
    finally:
        stop_gateway(process)
        pty.close()
        broker.stop()
    tally.extra.update(outage_s=round(outage, 2), inflight_window=WINDOW, lost_values=sorted(tally.lost)[:20],
                       killed_after_line=KILL_AT)
    tally.report()
    tally.assert_nothing_lost()
    assert tally.duplicated <= WINDOW
