"""Fault: an event larger than the broker's maximum packet size in the middle of a stream.

Mosquitto runs with ``max_packet_size 65536``; one 70 kB QoS 1 publish would
make it drop the connection again and again and block every message behind
it (docs TESTING.md). A gateway in this process reads a real pseudo-terminal
at 1,000 lines/s; half-way, a driver posts a reading carrying 70 kB onto the
bus. It must be refused before it is queued and counted (and so must its
retained ``state/<entity>``), the connection must stay up, and every line of
the stream must arrive.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway
from gateway.config import load_config
from gateway.mqtt.bridge import MqttBridge
from tests.conftest import Broker
from tests.faults_support import Pty, Tally
from tests.helpers import wait_until
from tests.mqtt_support import recorder
from tests.test_faults_broker import RATE, stream_config, values, write_lines

LIMIT = 65_536


@pytest.mark.slow
def test_an_oversized_event_mid_stream_is_refused_and_counted_and_the_stream_behind_it_arrives(
    private_broker: Broker, tmp_path: Path
) -> None:
    private_broker.stop()
    private_broker.extra_config = f"max_packet_size {LIMIT}\n"
    private_broker.start()
    pty = Pty()
    topic = "gateway/oversized/event/temperature"
    gateway = Gateway(load_config(stream_config(tmp_path, private_broker.port, pty.path, "oversized")),
                      pin_factory=MockFactory())
    tally = Tally("oversized event mid-stream")
    with recorder(private_broker.host, private_broker.port, topic) as hub:
        gateway.start()
        runner = threading.Thread(target=gateway.run, daemon=True)
        runner.start()
        try:
            bridge = gateway.forwarder
            wait_until(lambda: getattr(bridge, "connected", False), what="connected")
            write_lines(pty.master, 0, 500, RATE, tally)
            gateway.bus.post(gateway.events.reading("temperature", "x" * 70_000))
            time.sleep(0.3)  # the stream's shape: a pause after it, so it stays the entity's newest value a while
            write_lines(pty.master, 500, 1_000, RATE, tally)
            with contextlib.suppress(AssertionError):  # reported and asserted below, with the counts
                wait_until(lambda: set(values(hub.on(topic))) >= tally.sent, timeout=10, what="the whole stream")
            tally.receive(values(hub.on(topic)))
        finally:
            gateway.request_stop()
            runner.join(5)
            gateway.shutdown()
            pty.close()
    assert isinstance(bridge, MqttBridge)
    counters = bridge.outbox.counters
    bridge_counters = bridge.counters
    tally.extra.update(oversized_refused=counters.oversized, retained_refused=bridge_counters.retained_refused,
                       disconnects=bridge_counters.disconnects)
    tally.report()
    tally.assert_nothing_lost()
    assert tally.duplicated == 0
    assert counters.oversized == 1
    assert bridge_counters.retained_refused == 1  # its retained state/<entity> too
    assert bridge_counters.disconnects == 0
