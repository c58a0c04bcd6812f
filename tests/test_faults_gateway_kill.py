"""Fault: the gateway SIGKILLed mid-stream and started again.

``gateway run`` reads a real pseudo-terminal fed at 1,000 lines/s and
forwards to a real Mosquitto; a hub with a kept session listens. The process
is killed with SIGKILL (no shutdown code runs) half-way, then started again
over the same state directory. The promise (docs/mqtt.md) is at least once
*from the commit*: every event that was in the outbox's SQLite file at the
kill, or already at the hub, must reach the hub, and so must every line after
the restart. Lines that were still in the kernel's tty buffer, the bus or the
open commit window when the process died are gone with it; they are counted
(``in_kill_window``), not hidden.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.faults_support import Pty, Tally, start_gateway, stop_gateway
from tests.helpers import wait_until
from tests.mqtt_support import recorder
from tests.test_faults_broker import RATE, WINDOW, stream_config, values, write_lines


def outbox_values(state: Path) -> set[int]:
    with sqlite3.connect(state / "outbox.sqlite3") as db:
        return {int(json.loads(p)["value"]) for (p,) in db.execute("SELECT payload FROM outbox")}


@pytest.mark.slow
def test_a_gateway_killed_mid_stream_delivers_every_committed_event_after_its_restart(
    tmp_path: Path, broker: Broker
) -> None:
    pty = Pty()
    topic = "gateway/gw-kill/event/temperature"
    config = stream_config(tmp_path, broker.port, pty.path, "gw-kill")
    log = tmp_path / "gateway.log"
    tally = Tally("gateway SIGKILLed mid-stream and restarted")
    written = Tally("written")
    try:
        with recorder(broker.host, broker.port, topic, client_id="hub-gw-kill", session=True) as hub:
            process = start_gateway(config, log)
            wait_until(lambda: log.read_bytes().count(b" started: ") == 1, timeout=20, what="the gateway started")
            write_lines(pty.master, 0, 1_500, RATE, written)
            process.send_signal(signal.SIGKILL)
            process.wait()
            at_hub = set(values(hub.on(topic)))
            committed = outbox_values(tmp_path / "state") | at_hub
            for value in committed:
                tally.send(value)
            process = start_gateway(config, log)
            try:
                wait_until(lambda: log.read_bytes().count(b" started: ") == 2, timeout=20, what="the restart")
                write_lines(pty.master, 10_000, 11_500, RATE, tally)
                wait_until(lambda: set(values(hub.on(topic))) >= tally.sent, timeout=30,
                           what="every committed event and every line after the restart")
                tally.receive(values(hub.on(topic)))
            finally:
                stop_gateway(process)
    finally:
        pty.close()
    tally.extra.update(written_before_kill=len(written.sent), at_hub_at_kill=len(at_hub),
                       in_outbox_at_kill=len(committed - at_hub), in_kill_window=len(written.sent - committed))
    tally.report()
    tally.assert_nothing_lost()
    assert tally.duplicated <= WINDOW
    assert len(written.sent - committed) < RATE // 2, "more than half a second of lines died with the process"
