"""A reconnect storm: a fleet of gateways against one Mosquitto that restarts (issue 15).

``python -m bench.fleet [--gateways 200] [--backlog 100] [--outage 5]`` runs four scenarios (jitter
on/off x drain rate limited/unlimited) and prints a table; ``python -m bench --only 10`` runs it with
the other benchmarks. Kept out of CI (a minute or two); ``tests/test_fleet_bench.py`` runs it with 10
gateways to check that the harness works.

Each simulated gateway is the real thing minus the hardware: an :class:`~gateway.mqtt.bridge.MqttBridge`
(its own paho client, :class:`~gateway.mqtt.link.Link` with paho's backoff and the gateway's
:class:`~gateway.mqtt.connection.Jitter`, :class:`~gateway.mqtt.window.PublishWindow` with its
``drain_rate`` bucket, a SQLite :class:`~gateway.mqtt.outbox.Outbox` in a state directory of its own),
in worker processes of :data:`PER_PROCESS` gateways each. What happens:

1. Mosquitto starts; every gateway connects.
2. Mosquitto stops (SIGTERM): every gateway loses its link at the same instant, as in a broker restart.
3. Each gateway accepts ``backlog`` events into its outbox while the broker is away.
4. After ``outage`` seconds Mosquitto starts again (t = 0 below). Measured from there: the time until
   the last gateway is connected, the peak CONNECT rate (accepted connections per 100 ms, from each
   gateway's own "connection accepted" moment), the peak message rate (PUBACKs per 100 ms, summed
   over the fleet: what the broker took in), and the time until every outbox is empty.

"Without jitter" replaces a gateway's ``Jitter`` by one with a zero range (paho's own backoff stays:
1, 2, 4 s ... from ``reconnect_min``); "unlimited" sets ``drain_rate`` to 10^6 events/s. The two
instrumentation points are wrappers set on each bridge from outside (the link's connection-accepted
callback and paho's ``on_publish``); nothing in ``gateway/`` was changed for this bench.

The client side is a few Python processes on a shared 2-core machine: at a few thousand messages a second
it, not Mosquitto, is the limit, so the *unlimited* peaks are a floor of what a real fleet would do.
docs/performance.md (*A fleet reconnecting after a broker restart*) has the figures and the model.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bench.figures import Figure
from core.entities import Component, EntitySpec
from gateway.mqtt.connection import Jitter
from tests.conftest import Broker, free_port
from tests.mqtt_support import Harness, make_bridge, make_config

ENTITIES = {"meter": EntitySpec("meter", Component.SENSOR, unit="W", minimum=0, maximum=100_000)}
WINDOW = 20
"""``max_inflight`` of each simulated gateway: also the drain bucket's burst."""
LIMITED = 20.0
"""The ``drain_rate`` (events/s per gateway) of the limited scenarios."""
UNLIMITED = 1_000_000.0
BIN = 0.1
"""Seconds per bin of the rate counts."""


@dataclass(slots=True)
class Result:
    gateways: int
    jitter: bool
    drain_rate: float
    backlog: int
    reconnect_all_s: float
    """From the broker's restart to the last gateway's accepted connection."""
    peak_connects_per_s: float
    """The most connections accepted in one 100 ms bin, times 10."""
    busiest_second_connects: int
    """The most connections accepted in one whole second (from the restart)."""
    peak_messages_per_s: float
    """The most PUBACKs in one 100 ms bin, times 10 (fleet-wide)."""
    busiest_second_messages: int
    """The most PUBACKs in one whole second: the sustained drain, where the 100 ms peak is the bursts."""
    drain_all_s: float
    """From the broker's restart until every outbox is empty."""
    acked: int
    """PUBACKs after the restart, fleet-wide: the backlog and each gateway's retained ``online``."""

    def row(self) -> tuple[str, ...]:
        rate = "unlimited" if self.drain_rate >= UNLIMITED else f"{self.drain_rate:g}/s"
        return (str(self.gateways), "on" if self.jitter else "off", rate, str(self.backlog),
                f"{self.reconnect_all_s:.2f}", f"{self.peak_connects_per_s:,.0f}",
                f"{self.busiest_second_connects:,}", f"{self.peak_messages_per_s:,.0f}",
                f"{self.busiest_second_messages:,}", f"{self.drain_all_s:.2f}", f"{self.acked:,}")


HEADER = ("gateways", "jitter", "drain_rate", "backlog/gw", "all reconnected s", "peak CONNECT/s (100 ms)",
          "CONNECTs busiest s", "peak msg/s (100 ms)", "msgs busiest s", "all drained s", "PUBACKs")


def table(results: Sequence[Result]) -> str:
    rows = [HEADER, *(r.row() for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


class Stamps:
    """Moments of one kind (accepted connections, PUBACKs), recorded from paho's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.times: list[float] = []

    def mark(self) -> None:
        now = time.monotonic()
        with self._lock:
            self.times.append(now)

    def since(self, start: float) -> list[float]:
        with self._lock:
            return [t - start for t in self.times if t >= start]



def peak_per_s(moments: Sequence[float], width: float = BIN) -> float:
    """The most moments in one bin of ``width`` seconds (100 ms), as a rate per second."""
    bins = Counter(int(t / width) for t in moments)
    return max(bins.values(), default=0) / width


def instrument(harness: Harness, connects: Stamps, acks: Stamps, *, jitter: bool) -> None:
    """Record each accepted connection and each PUBACK; without jitter, a zero-range Jitter."""
    link: Any = harness.bridge.link
    came_up: Callable[..., None] = link._came_up

    def recorded_came_up(*args: Any) -> None:
        came_up(*args)
        connects.mark()

    link._came_up = recorded_came_up
    client = link.client
    on_publish = client.on_publish

    def recorded_on_publish(*args: Any) -> None:
        acks.mark()
        on_publish(*args)

    client.on_publish = recorded_on_publish
    if not jitter:
        link._jitter = Jitter(0.0, 0.0)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


PER_PROCESS = 50
"""Gateways per worker process. paho waits on its sockets with ``select()``, which cannot watch a
descriptor numbered 1024 or above, and each simulated gateway holds about 14 (its socket, paho's
wake-up pair, SQLite's three files, ...): in one process the 74th gateway never connects (found by
running it). A real gateway is one process, so this is a limit of the simulation only."""


@dataclass(slots=True)
class Plan:
    """One worker's share of a scenario."""

    first: int
    count: int
    directory: Path
    port: int
    jitter: bool
    drain_rate: float
    backlog: int
    timeout: float


def worker(plan: Plan, pipe: Connection) -> None:
    """A process running ``plan.count`` gateways; steps on the main process's word (see :func:`run`)."""
    logging.basicConfig(level=logging.ERROR)
    connects, acks = Stamps(), Stamps()
    fleet: list[Harness] = []
    try:
        for i in range(plan.first, plan.first + plan.count):
            config = make_config(f"fleet-{i:04d}", plan.directory / f"gw{i:04d}", plan.port, discovery=False,
                                 max_inflight=WINDOW, drain_rate=plan.drain_rate, reconnect_min=1,
                                 reconnect_max=60, health_interval=3600,
                                 outbox={"batch_ms": 50, "synchronous": "NORMAL"})
            harness = make_bridge(config, ENTITIES)
            instrument(harness, connects, acks, jitter=plan.jitter)
            fleet.append(harness)
        for harness in fleet:
            harness.bridge.start()
        wait_for(lambda: all(h.bridge.connected for h in fleet), plan.timeout, "the first connections")
        pipe.send("up")
        if pipe.recv() != "down":  # the broker is stopped (not an assert: -OO would skip the wait)
            raise RuntimeError("the fleet's parent sent something other than 'down'")
        wait_for(lambda: not any(h.bridge.connected for h in fleet), plan.timeout, "every link to drop")
        for n in range(plan.backlog):
            for harness in fleet:
                harness.bridge.forward(harness.events.reading("meter", n))
        pipe.send("queued")
        restart = pipe.recv()  # the broker is back: its monotonic start time (the clock is system-wide)
        wait_for(lambda: all(h.bridge.connected for h in fleet), plan.timeout, "the fleet to reconnect")
        wait_for(lambda: all(h.bridge.outbox.depth == 0 for h in fleet), plan.timeout, "every outbox to drain")
        pipe.send((time.monotonic(), connects.since(restart), acks.since(restart)))
    except BaseException as exc:
        pipe.send(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        stoppers = [threading.Thread(target=h.bridge.stop, args=(2.0,)) for h in fleet]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()


def _expect(pipes: Sequence[Connection], word: str, timeout: float) -> list[Any]:
    answers = []
    for pipe in pipes:
        if not pipe.poll(timeout):
            raise TimeoutError(f"a worker did not answer {word!r} within {timeout:.0f} s")
        answer = pipe.recv()
        if isinstance(answer, str) and answer.startswith("failed"):
            raise RuntimeError(f"a worker {answer}")
        answers.append(answer)
    return answers


def run(gateways: int, *, jitter: bool, drain_rate: float, backlog: int = 300, outage: float = 5.0,
        timeout: float = 120.0) -> Result:
    """One scenario against a fresh Mosquitto, the fleet spread over worker processes; see the module
    docstring. The main process only starts and stops the broker and adds up what the workers saw."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        directory = Path(tmp)
        broker = Broker(port=free_port(), directory=directory / "mosquitto")
        broker.start()
        processes: list[BaseProcess] = []
        pipes: list[Connection] = []
        try:
            for first in range(0, gateways, PER_PROCESS):
                ours, theirs = context.Pipe()
                plan = Plan(first, min(PER_PROCESS, gateways - first), directory, broker.port, jitter, drain_rate,
                            backlog, timeout)
                processes.append(context.Process(target=worker, args=(plan, theirs), daemon=True))
                processes[-1].start()
                pipes.append(ours)
            _expect(pipes, "up", timeout)
            broker.stop()
            down = time.monotonic()
            for pipe in pipes:
                pipe.send("down")
            _expect(pipes, "queued", timeout)
            time.sleep(max(0.0, outage - (time.monotonic() - down)))
            broker.start()
            restart = time.monotonic()
            for pipe in pipes:
                pipe.send(restart)
            reports = _expect(pipes, "drained", timeout)
            connects = [t for _, c, _ in reports for t in c]
            acks = [t for _, _, a in reports for t in a]
            return Result(gateways, jitter, drain_rate, backlog, max(connects), peak_per_s(connects),
                          round(peak_per_s(connects, 1.0)), peak_per_s(acks), round(peak_per_s(acks, 1.0)),
                          max(done for done, _, _ in reports) - restart, len(acks))
        finally:
            for child in processes:
                child.join(timeout=15)
                if child.is_alive():
                    child.kill()
                    child.join()
            broker.stop()


SCENARIOS = ((True, LIMITED), (True, UNLIMITED), (False, LIMITED), (False, UNLIMITED))


def run_all(gateways: int, backlog: int, outage: float) -> list[Result]:
    return [run(gateways, jitter=jitter, drain_rate=rate, backlog=backlog, outage=outage)
            for jitter, rate in SCENARIOS]


def measure(quick: bool) -> list[Figure]:
    """For ``python -m bench``: the four scenarios as figures."""
    gateways = 50 if quick else 200
    figures = []
    for r in run_all(gateways, backlog=300, outage=5.0):
        label = f"{r.gateways} gw, jitter {'on' if r.jitter else 'off'}, drain {r.row()[2]}"
        figures += [
            Figure("10", f"{label}: all reconnected", r.reconnect_all_s, "s"),
            Figure("10", f"{label}: peak CONNECT rate", r.peak_connects_per_s, "/s"),
            Figure("10", f"{label}: peak message rate (100 ms)", r.peak_messages_per_s, "/s"),
            Figure("10", f"{label}: messages in the busiest second", r.busiest_second_messages, "/s"),
            Figure("10", f"{label}: all drained", r.drain_all_s, "s"),
        ]
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description="a fleet of gateways against one Mosquitto that restarts")
    parser.add_argument("--gateways", type=int, default=200)
    parser.add_argument("--backlog", type=int, default=300, help="events per gateway queued during the outage")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds the broker stays down")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # 200 gateways each logging their outage would bury the table
    results = []
    for jitter, rate in SCENARIOS:
        results.append(run(args.gateways, jitter=jitter, drain_rate=rate, backlog=args.backlog, outage=args.outage))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
