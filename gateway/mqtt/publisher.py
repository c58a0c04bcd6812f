"""The publisher thread: the one thread that writes the outbox to disk, and hands paho what the forwarding
thread did not.

Each round it takes the broker's acks and hands paho the rows waiting for it, *then* commits the
outbox (once its batch window has passed; at once when stopping), so a row left to it never waits
behind the transaction (issue 14's latency tail); then, while connected, it publishes retained topics,
command results, any rows the commit's renewed seq reservation now covers, and the health report. It
sleeps until something wakes it (a batch window opened, an event the forwarding thread could not hand
to paho itself, a state or result to send, half a window of acks, a connection) or the nearest
deadline (commit, health, the drain bucket). A live event that ``bridge.forward`` handed to paho
itself (:meth:`PublishWindow.hand_over`) does not wake it: it commits that row with its batch, at
most ``batch_ms`` later.
"""

from __future__ import annotations

import threading
import time

from core.guard import guarded
from gateway.mqtt.health import HealthReporter
from gateway.mqtt.inlet import CommandInlet
from gateway.mqtt.link import Link
from gateway.mqtt.outbox import Outbox
from gateway.mqtt.retained import RetainedTopics
from gateway.mqtt.window import PublishWindow

IDLE_WAKE = 5.0
"""Seconds the publisher sleeps when nothing is due. Everything that needs it (events, acks, results,
connections, the hub's birth, commit and health deadlines, the drain bucket) wakes it or bounds the wait;
this is only a backstop, kept long so an idle gateway does not wake a Pi's CPU for nothing."""


class Publisher:
    def __init__(
        self, outbox: Outbox, window: PublishWindow, *, retained: RetainedTopics, inlet: CommandInlet,
        reporter: HealthReporter, link: Link, stopping: threading.Event, wakeup: threading.Event,
    ) -> None:
        self._outbox = outbox
        self._window = window
        self._retained = retained
        self._inlet = inlet
        self._reporter = reporter
        self._link = link
        self._stopping = stopping
        self._wakeup = wakeup
        self._flush_deadline = 0.0
        """Once stopping: the monotonic time after which the thread ends even with rows in flight."""
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()

    def flush_until(self, deadline: float) -> None:
        """When stopped, keep sending what waits until ``deadline`` (monotonic). Set before ``stopping``."""
        self._flush_deadline = deadline

    def join(self, deadline: float) -> None:
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        step = guarded("mqtt publisher")(self._step)
        while True:
            self._wakeup.wait(self._idle_timeout())
            self._wakeup.clear()
            step()
            if self._stopping.is_set() and (self._flushed() or time.monotonic() >= self._flush_deadline):
                return

    def _flushed(self) -> bool:
        return not self._link.connected or self._window.drained

    def _step(self) -> None:
        # Rows first, then the commit: a row the forwarding thread left to us (the window's lock busy, the window
        # full) must not wait behind the batch's transaction (0.3 ms typical, several ms at the tail; issue 14's
        # p99). Durability is unchanged: the row is in the outbox already, and this round commits it.
        self._window.take_acks()
        if self._link.connected:
            self._window.send(self._link.client)
        if self._stopping.is_set():
            self._outbox.commit()
        else:
            self._outbox.commit_if_due()
        if self._link.connected:
            client = self._link.client
            self._retained.send(client, flush=self._stopping.is_set())
            self._inlet.send_results(client)
            self._window.send(client)  # rows the commit's renewed seq reservation now covers
            self._reporter.send(client)

    def _idle_timeout(self) -> float:
        waits = [IDLE_WAKE]
        connected = self._link.connected
        if connected:
            waits.append(self._reporter.wait())
            held = self._retained.wait()
            if held is not None:
                waits.append(held)
        due = self._outbox.due_in()
        if due is not None:
            waits.append(due)
        if self._window.acks_waiting:  # acks do not wake us each (window.on_publish): one commit window at most
            waits.append(self._outbox.batch)
        drain = self._window.wait() if connected else None
        if drain is not None:
            waits.append(drain)
        if self._stopping.is_set():
            waits.append(0.01)
        return max(0.0, min(waits))
