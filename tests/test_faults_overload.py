"""Fault: the floods of issue 17, shortened for CI (2 s each), against ``gateway run`` in a process of its own.

The same floods as ``bench/floods.py`` (``python -m bench --only 8``), which measures them in full:
hub commands as fast as a paho publisher sends them, a serial device writing as fast as its pty takes,
``homeassistant/status`` births as fast as they can be sent, and a broker outage with a small outbox while
a rule toggles a light on every reading and the alarm is armed. Only bounds are asserted, never timings:
the gateway survives, still answers ``gateway status`` and a hub command, its memory stays under a
generous bound, and the alarm's ``arming`` and ``armed_away`` events reach the hub.

Every bound is asserted for every flood: the xfail marks that named missing fixes are gone with the fixes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.floods import BASE, FLOODS, Flood, Result, run_flood
from tests.faults_support import ROOT
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

SECONDS = 2.0
AFTER = 1.0
GRACE = 20.0
"""How long after the flood the alarm's events may still arrive: late is not lost (the goal on lateness,
p99 ≤ 50 ms, is the benchmark's figure, not a CI assertion)."""
HUB_MESSAGES = 40_000
"""The hub floods send this many messages as fast as they can (well under 2 s here), not "for 2 s": the work,
and so the memory it takes today, is then the same on a loaded CI machine as on an idle one."""
MEMORY_MAX_MB = 200.0
"""The service unit's ``MemoryMax=256M`` less a margin: beyond it the kernel kills the gateway."""
GOAL_MB = 64.0
"""Issue 17's goal for the peak under any flood."""
COMMAND_ANSWER_S = 60.0

FLOOD = {flood.key: flood for flood in FLOODS}
HUB_COMMANDS, SERIAL, BIRTHS, BROKER_DOWN = (FLOOD[k] for k in "abcd")


QUIET_S = 1.0
"""No answer on ``result/light`` for this long: the flood's backlog is read. While it is being read, the light's
rate limit accepts (and answers) 10 of its commands a second."""


def after_the_flood(config: Path, broker_port: int) -> dict[str, Any]:
    """Ask ``gateway status`` over its socket; once the flood's own answers have stopped, send ``ON`` to the
    light and wait for the final answer to *that* command.

    With its own connection for hub commands the gateway answers the flood's backlog while it reads it, so the
    answers on ``result/light`` right after the flood are the flood's (a ``failed: superseded`` among them). The
    check's command is the last the broker queued for the gateway, after the flood's: the first command accepted
    after it is published once the answers stopped is the check's, and only its answers count."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RUNTIME_DIRECTORY": str(config.parent / "run")}
    status = subprocess.run([sys.executable, "-m", "gateway", "status", "--config", str(config)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    answers: list[str] = []
    done = threading.Event()
    published = threading.Event()
    mine: list[str | None] = [None]
    last_answer = [time.monotonic()]

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        last_answer[0] = time.monotonic()
        if not published.is_set():
            return  # the flood's
        data = json.loads(msg.payload)
        answer, command = str(data.get("status")), data.get("command")
        if mine[0] is None and command is not None and answer == "accepted":
            mine[0] = command
        if command is None or command == mine[0]:  # a refusal before acceptance carries no command id
            answers.append(answer)
            if answer in ("done", "deferred", "failed", "rejected"):
                done.set()

    subscribed = threading.Event()
    hub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"overload-hub-{os.getpid()}")
    hub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{BASE}/result/light", 1)
    hub.on_subscribe = lambda *a: subscribed.set()
    hub.on_message = on_message
    hub.connect("127.0.0.1", broker_port)
    hub.loop_start()
    try:
        subscribed.wait(10)
        wait_until(lambda: time.monotonic() - last_answer[0] >= QUIET_S, COMMAND_ANSWER_S,
                   "the flood's answers to stop")
        published.set()
        hub.publish(f"{BASE}/set/light", "ON", qos=1)
        done.wait(COMMAND_ANSWER_S)
    finally:
        hub.loop_stop()
        hub.disconnect()
    return {"status_rc": status.returncode, "status_out": status.stdout[-500:] + status.stderr[-500:],
            "answers": answers}


_results: dict[str, Result] = {}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="ovl"))  # short: the status socket's path has a length limit
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def flooded(flood: Flood, workdir: Path) -> Result:
    """Each flood runs once per module; its tests read the same result."""
    if flood.key not in _results:
        _results[flood.key] = run_flood(flood, workdir / flood.key, SECONDS, AFTER, check=after_the_flood,
                                        grace=GRACE / 2 if flood.broker_down else GRACE, count=HUB_MESSAGES)
    return _results[flood.key]


ALL = [pytest.param(f, id=f.key) for f in FLOODS]


@pytest.mark.parametrize("flood", ALL)
def test_the_gateway_survives_a_flood_and_still_answers_status_and_a_hub_command(flood: Flood, workdir: Path) -> None:
    result = flooded(flood, workdir)
    assert result.alive, result.note
    assert result.checks["status_rc"] == 0, result.checks["status_out"]
    # After a flood of switching, the light's envelope may defer the command (its switch budget is spent):
    # an honest "deferred, applied at …" is an answer; "failed" or silence is not.
    assert {"done", "deferred"} & set(result.checks["answers"]), result.checks


@pytest.mark.parametrize("flood", ALL)
def test_memory_stays_below_the_units_memory_max_during_a_flood(flood: Flood, workdir: Path) -> None:
    result = flooded(flood, workdir)
    assert result.peak_mb < MEMORY_MAX_MB, f"peak RSS {result.peak_mb:.0f} MB (idle {result.idle_mb:.0f} MB)"


@pytest.mark.parametrize("flood", ALL)
def test_memory_stays_within_the_issues_goal_during_a_flood(flood: Flood, workdir: Path) -> None:
    """The serial flood once peaked at 58-62 MB here and was left out; since a flooding reader parses only
    its newest lines it stays near idle (48 MB in benchmark 8)."""
    result = flooded(flood, workdir)
    assert result.peak_mb <= GOAL_MB, f"peak RSS {result.peak_mb:.0f} MB (idle {result.idle_mb:.0f} MB)"


@pytest.mark.parametrize("flood", [
    # Was xfail: on one connection the alarm's rows waited for PUBACKs queued behind the flood's backlog and
    # missed the grace under the suite's load. Hub commands now come in on a connection of their own (the inlet,
    # docs/mqtt.md, Two connections), so nothing the gateway publishes waits behind them.
    pytest.param(HUB_COMMANDS, id="a"),
    pytest.param(SERIAL, id="b"),
    pytest.param(BIRTHS, id="c"),
    pytest.param(BROKER_DOWN, id="d"),
])
def test_every_alarm_event_reaches_the_hub_after_a_flood(flood: Flood, workdir: Path) -> None:
    result = flooded(flood, workdir)
    assert {"arming", "armed_away"} <= set(result.alarm_states), f"seen: {result.alarm_states}"
