"""One serial port kept open for a driver: a reader thread, reconnect with backoff, clean release.

The port is opened through ``ctx.open_serial`` (``serial.serial_for_url``), so
``/dev/ttyUSB0``, a stable ``/dev/serial/by-id/usb-...`` link (just a path that
survives re-enumeration as ``ttyUSB1``), ``loop://`` and ``socket://`` all work.

The reader blocks until the port is readable (no polling) and hands every
chunk to the driver's :class:`~drivers.protocols.Parser`. On a POSIX port it
waits in ``poll`` on the port and pyserial's cancel pipe and takes everything
waiting in one ``os.read`` (up to :data:`READ_CHUNK`): two system calls a
wake-up, where pyserial's ``read(in_waiting)`` made an ``ioctl``, a ``select``
and a ``read`` (issue 14's profile). Other ports (``loop://``, ``socket://``)
are read through pyserial. Text protocols get their lines
whatever the device ends them with: CR, LF or CRLF (a CR alone becomes a line
end; the empty line a CRLF then leaves is skipped by the parser). Binary
frames are passed as they came.

When the port fails (USB unplugged: pyserial raises at once) or cannot be
opened, the outage begins: ``on_lost(reason)`` is called once, one ERROR line
says so, the port is closed (no leaked descriptors), and opening is retried
after ``retry_min_s``, doubling up to ``retry_max_s``. A port that opens and
fails at once (a flaky adapter, a port another program holds) is part of the
same outage: it does not reset the backoff, and its repeats are logged at
DEBUG only (:class:`core.logonce.LogOnce`). The outage ends, with one INFO line
and the count of failed attempts, when the port delivers data again; the
backoff starts over from ``retry_min_s`` only once the port has delivered data
for ``stable_s``. ``stop`` cancels the blocking read and joins the thread.

A device that floods (sends more than ``max_rate`` lines or frames a second,
measured over one-second windows, and recognised at once when, within a
window, it has sent more than ``max_rate`` times the time so far plus a burst of a
tenth of a second's allowance, :data:`FLOOD_BURST_S`) is read at a real port's pace:
after each read the reader pauses :data:`FLOOD_PAUSE_S`, which a real UART's
kernel buffer absorbs and which leaves the interpreter to the other threads
(another port, the dispatcher, the publisher). Of a line device's read only
the newest :data:`NEWEST_LINES` lines are parsed and the others counted
(``parser.counters.unparsed``: records, malformed and unparsed lines add up to
the lines read; a malformed line among the unparsed is not known as such), and
each chunk read is coalesced to one record holding the newest value of each
field: the bus sees one event per field per read rather than one per line
(``coalesced`` counts the lines not posted as themselves, unparsed ones
included), so the flooding device's newest value is at most one pause and one
dispatcher cycle old. ``rate`` and ``flooding``
say so for health; the flood is logged once when it starts (WARNING) and once
when it ends (:class:`core.logonce.LogOnce`).

A busy device within its rate (:data:`GATHER_RATE` lines or frames a second
or more over the last window) is read the same way, with a shorter pause
(:data:`GATHER_S`) and nothing coalesced: every line is parsed and posted,
only more of them per read; a read that found the port half full or more
(:data:`GATHER_BELOW`) is followed by the next at once. A read's fixed cost (the wake-up, two system calls,
taking the interpreter from the dispatcher, a bus post and its notify) is then
shared by tens of lines instead of a few (issue 14).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.clock import Clock, SystemClock
from core.guard import guarded
from core.logonce import LogOnce
from drivers.base import SerialOpener
from drivers.protocols import LineParser, Parser, Record

if TYPE_CHECKING:
    from serial import SerialBase

log = logging.getLogger(__name__)

COMPLAINT_INTERVAL = 60.0
"""Seconds between log lines about malformed input from one port (the counters keep the rest)."""

FLOOD_WINDOW_S = 1.0
"""The window over which the line rate is measured."""

FLOOD_BURST_S = 0.1
"""The burst a device may send beyond its rate before it counts as flooding: this many seconds of its
``max_rate`` (at least :data:`FLOOD_MIN_BURST` lines), never more than a whole window's allowance.

Within a window, a device floods once it has sent more than ``max_rate`` times the time since the window
opened plus this burst. Waiting for the whole window's allowance instead (``max_rate`` lines, 2,000 by
default) let the first reads of a pty flood (4 KB, ~600 short lines each) through line by line before
the flood was recognised: ~800 readings of one entity reached the outbox within 30 ms, and an unrelated
sensor's events waited behind them for up to 170 ms (benchmark 8, flood b; docs/reliability.md). A real
115200-baud port delivers ~165 short lines in 0.1 s, under the default burst of 200."""

FLOOD_MIN_BURST = 20
"""The smallest burst (lines or frames) recognised as a flood, for a device with a low ``max_rate``: a
20-line boot banner is not a flood."""

FLOOD_PAUSE_S = 0.01
"""While a device floods, the reader waits this long after each read before the next one.

A real 115200-baud port delivers at most ~115 bytes in it, far within the kernel's 4 KB buffer, so
nothing a real UART sends is lost; a pty or a USB device that sends faster is slowed to what the
reader takes. The pause is what leaves the interpreter to the other threads: parsing a flood line
by line held the GIL, and every other thread (another port's reader, the dispatcher, the publisher,
paho) waited up to 5 ms for it after each of its own system calls. Benchmark 8 (flood b) measured
an unrelated sensor's state up to 170 ms late, many superseded before they were published; with the
pause its p99 was 39 ms and p50 1.2 ms (docs/reliability.md)."""

NEWEST_LINES = 8
"""While a line device floods, the line ends of a read that are parsed, newest first; the lines before them
are only counted (:meth:`drivers.protocols.LineParser.feed_newest`). A few rather than one: a malformed
newest line falls back on the one before, and a device that sends fields on separate lines (NMEA's GGA and
RMC) delivers each. Benchmark 8 measured ~1 ms of parsing a read (600 lines) for one kept value."""

GATHER_RATE = 2_000
"""Lines (or frames) a second, over the last full window, from which the reader pauses :data:`GATHER_S` after
each read. Below it (a thermometer, a meter, a GPS at 10 Hz, the 1,000 lines/s of issue 14's latency goal) a line
is read the moment it arrives."""

GATHER_S = 0.004
"""The pause after each read of a busy device (:data:`GATHER_RATE`): at 10,000 lines/s a read then takes ~40 lines
instead of ~4, and each line waits at most 4 ms more. A pty holds ~15 kB (~37 ms of issue 14's lines at that
rate), a UART's kernel buffer 4 kB (~350 ms at 115200 baud): nothing is lost by the wait. Measured (issue 14,
the gateway at 10,000 lines/s, ``perf stat`` per thread): the reader's reads 4-8x fewer and its CPU about a third
less; the process's CPU 3-13 % less in three runs, and ~16 % with the dispatcher's batches corked as well
(docs/performance.md)."""

GATHER_BELOW = 2_048
"""Bytes: a busy device's read of this much or more is not followed by the pause; the next read comes at once.

A read of a tty takes at most what its line discipline holds (4,095 bytes), and more may wait behind it. A read
that large means the reader is behind (it waited for a core or the interpreter), and pausing then would let the
port fill: instrumented beside a busy process at 10,000 lines/s, pausing after every read dropped 1,700-4,600
lines at the port, where the reader had taken 4,095-byte reads and paused after each. Half the line discipline's
buffer: at 10,000 lines/s the pause's own reads are ~1.6 kB."""

READ_CHUNK = 65_536
"""Most bytes one read takes from a POSIX port (a pty's buffer, many times a UART's)."""

STABLE_S = 30.0
"""Seconds a reopened port must deliver data before a new failure starts the backoff over."""


class SerialLink:
    def __init__(
        self,
        name: str,
        url: str,
        *,
        baudrate: int,
        open_serial: SerialOpener,
        parser: Parser,
        on_records: Callable[[list[Record]], None],
        on_lost: Callable[[str], None],
        on_fatal: Callable[[str], None] | None = None,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
        stable_s: float = STABLE_S,
        clock: Clock | None = None,
        wait: Callable[[float], bool] | None = None,
        max_rate: float | None = None,
        pause: Callable[[float], bool] | None = None,
    ) -> None:
        """``clock`` (its ``monotonic``) measures how long the port delivered data; ``wait(seconds)`` waits
        between attempts and returns True to stop (default: real time, ended by :meth:`stop`). Tests
        inject both to run an outage of minutes in virtual time. ``pause(seconds)`` is the wait after each
        read while the device floods (:data:`FLOOD_PAUSE_S`) or is busy (:data:`GATHER_S`); same contract and
        default as ``wait``."""
        self.name = name
        self.url = url
        self.baudrate = baudrate
        self.parser = parser
        self._open_serial = open_serial
        self._on_records = on_records
        self._on_lost = on_lost
        self._on_fatal = on_fatal
        self._retry_min = retry_min_s
        self._retry_max = retry_max_s
        self._stable = stable_s
        self._clock: Clock = clock or SystemClock()
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._pause = pause or self._stop.wait
        self._lines = isinstance(parser, LineParser)
        self._outage = LogOnce(log)
        self._delivering_since: float | None = None
        self._lock = threading.Lock()
        self._port: SerialBase | None = None
        self._thread: threading.Thread | None = None
        self._last_complaint = -math.inf
        self._complained_at = 0
        self.max_rate = max_rate
        """Lines (or frames) a second beyond which the device floods; None: never flagged."""
        self._flood = LogOnce(log)
        self._window_start: float | None = None
        self._window_frames = 0
        self._rate = 0
        self._flooding = False
        self._gathering = False
        """Busy within its rate (:data:`GATHER_RATE`): the reader pauses :data:`GATHER_S` after each read."""
        self._settling = False
        """The first window since the port opened: a device may dump what it buffered while nobody read (a
        USB device when its port opens), so only the whole window's allowance counts, not the burst's."""
        self.coalesced = 0
        """Lines (or frames) of a flood not posted as their own record: merged into the newest of the same
        read, or counted and not parsed (``parser.counters.unparsed``)."""
        self.opens = 0
        self.failures = 0
        """Failed attempts: a port that could not be opened or failed after opening."""

    @property
    def connected(self) -> bool:
        return self._port is not None

    @property
    def rate(self) -> int:
        """Lines (or frames) a second over the last full window; 0 once the device has been quiet a window."""
        start = self._window_start
        if start is None or self._clock.monotonic() - start >= 2 * FLOOD_WINDOW_S:
            return 0
        return self._rate

    @property
    def flooding(self) -> bool:
        return self._flooding and self.rate > 0

    def start(self) -> None:
        """Open the port now (so nothing sent after ``start`` is missed) and start the reader.

        A port that is not there yet is not an error: ``on_lost`` says so and the reader keeps trying.
        """
        self._stop.clear()
        port = self._open()
        self._thread = threading.Thread(target=self._guarded_run, args=(port,), name=f"serial-{self.name}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> bool:
        """Send ``data`` if the port is open; False (and nothing sent) while it is away."""
        with self._lock:
            port = self._port
            if port is None:
                return False
            try:
                port.write(data)
            except Exception as exc:  # the reader sees the same failure and reconnects
                log.debug("%s: write failed: %s", self.name, exc)
                return False
            return True

    def stop(self) -> None:
        """Cancel the read, close the port, join the thread; idempotent."""
        self._stop.set()
        with self._lock:
            port = self._port
        if port is not None:
            with contextlib.suppress(Exception):  # closed under us already
                port.cancel_read()  # type: ignore[attr-defined]
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
            if thread.is_alive():
                log.error("%s: serial reader did not stop", self.name)

    # -- the reader thread --------------------------------------------------------------------

    def _guarded_run(self, port: SerialBase | None) -> None:
        """The thread's target: a bug in here ends the reader, so say so and let the supervisor restart it."""
        try:
            self._run(port)
        except Exception as exc:
            log.exception("%s: serial reader crashed", self.name)
            if self._on_fatal is not None and not self._stop.is_set():
                self._on_fatal(f"serial reader crashed: {exc}")

    def _run(self, port: SerialBase | None) -> None:
        delay = self._retry_min
        while not self._stop.is_set():
            if port is None:
                port = self._open()
            if port is not None:
                self._delivering_since = None
                reason = self._read(port)
                port = None
                if reason is None:
                    return
                since = self._delivering_since
                if since is not None and self._clock.monotonic() - since >= self._stable:
                    delay = self._retry_min  # it worked for a while: a new outage starts over
                self._lost(f"serial port {self.url} failed: {reason}", delay)
            if self._wait(delay) or self._stop.is_set():
                return
            delay = min(delay * 2, self._retry_max)

    def _open(self) -> SerialBase | None:
        try:
            port = self._open_serial(self.url, baudrate=self.baudrate, timeout=None)
        except Exception as exc:
            self._lost(f"cannot open serial port {self.url}: {exc}", self._retry_min)
            return None
        with self._lock:
            self._port = port
        self.opens += 1
        self.parser.reset()
        self._window_start, self._settling = None, True
        return port

    def _lost(self, reason: str, delay: float) -> None:
        """One failed attempt: the first of an outage is an ERROR and ``on_lost``; the others DEBUG."""
        self.failures += 1
        if self._outage.holds(logging.ERROR, "%s: %s; retrying in %g s, backing off up to every %g s",
                              self.name, reason, delay, self._retry_max):
            self._on_lost(reason)

    def _read(self, port: Any) -> str | None:
        """Read until the port fails (returns why) or we are stopped (returns None)."""
        handle = guarded(f"{self.name} parse")(self._handle)
        try:
            read = _chunk_reader(port)
            while not self._stop.is_set():
                data = read()
                if data:
                    if self._delivering_since is None:
                        self._delivering_since = self._clock.monotonic()
                        self._outage.ended(logging.INFO, "%s: serial port %s delivers data again after %d "
                                           "failed attempts", self.name, self.url)
                    handle(data)
                    if self._flooding:
                        if self._pause(FLOOD_PAUSE_S):
                            return None
                    elif self._gathering and len(data) < GATHER_BELOW and self._pause(GATHER_S):
                        return None
            return None
        except Exception as exc:  # pyserial raises SerialException, OSError or TypeError on a lost port
            return None if self._stop.is_set() else f"serial port failed: {exc}"
        finally:
            with self._lock:
                self._port = None
            with contextlib.suppress(Exception):
                port.close()

    def _meter(self, before: int, frames: int) -> None:
        """Measure the line rate per window (``before`` and ``frames``: the frames counted before and after
        this read); flag (and log once) a flood, and its end."""
        now = self._clock.monotonic()
        start = self._window_start
        if start is None or now - start >= 2 * FLOOD_WINDOW_S:  # first data, or after a quiet spell
            # The window opens with this read and counts its frames: a flood may begin with one big read.
            self._window_start, self._window_frames = now, before
            self._gathering = False
            start = now
        elapsed = now - start
        if elapsed < FLOOD_WINDOW_S:
            # More than the allowance so far plus a burst: a flood now, not when the window ends (a second
            # of parsing every line of a flood starves the other threads, and its readings queue ahead of
            # every other entity's in the outbox).
            count = frames - self._window_frames
            if not self._flooding and self.max_rate is not None and count > self._allowance(elapsed):
                self._flag(round(count / max(elapsed, FLOOD_BURST_S)))
            return
        self._rate = round((frames - self._window_frames) / elapsed)
        self._window_start, self._window_frames, self._settling = now, frames, False
        self._gathering = self._rate >= GATHER_RATE
        if self.max_rate is not None and self._rate > self.max_rate:
            self._flag(self._rate)
        elif self._flooding:
            self._flooding = False
            self._flood.ended(logging.INFO, "%s: no longer flooding (%d lines/s) after %d windows over the rate",
                              self.name, self._rate)

    def _allowance(self, elapsed: float) -> float:
        """Lines (or frames) a device within ``max_rate`` may have sent ``elapsed`` seconds into a window:
        the rate times the time, plus a burst (:data:`FLOOD_BURST_S`), at most the whole window's; the whole
        window's in the first window since the port opened (``_settling``)."""
        rate = self.max_rate or 0.0
        if self._settling:
            return rate * FLOOD_WINDOW_S
        burst = max(rate * FLOOD_BURST_S, FLOOD_MIN_BURST)
        return min(rate * FLOOD_WINDOW_S, rate * elapsed + burst)

    def _flag(self, rate: int) -> None:
        """The device floods at ``rate`` (lines or frames a second, at least): flag it, log it once."""
        self._rate = rate
        self._flooding = True
        self._flood.holds(logging.WARNING, "%s: flooding: %d lines/s, expected ≤ %g; only the newest lines "
                          "of each read are parsed, its readings coalesced to the newest",
                          self.name, rate, self.max_rate)

    def _handle(self, data: bytes) -> None:
        parser = self.parser
        counters = parser.counters
        unparsed = counters.unparsed
        before = counters.records + counters.malformed + counters.bad_checksum + unparsed
        if self._lines:
            data = data.replace(b"\r", b"\n")
        if self._flooding and isinstance(parser, LineParser):
            records = parser.feed_newest(data, NEWEST_LINES)
        else:
            records = parser.feed(data)
        self._meter(before, counters.records + counters.malformed + counters.bad_checksum + counters.unparsed)
        self.coalesced += counters.unparsed - unparsed
        if self._flooding and len(records) > 1:
            newest: Record = {}
            for record in records:
                newest.update(record)
            self.coalesced += len(records) - 1
            records = [newest]
        if records:
            self._on_records(records)
        bad = counters.malformed + counters.bad_checksum
        if bad > self._complained_at:
            now = time.monotonic()
            if now - self._last_complaint >= COMPLAINT_INTERVAL:
                log.warning(
                    "%s: %d malformed and %d bad-checksum frames so far", self.name,
                    counters.malformed, counters.bad_checksum,
                )
                self._last_complaint = now
            self._complained_at = bad


def _chunk_reader(port: Any) -> Callable[[], bytes]:
    """A function returning the next chunk the port delivers (blocking; b"" when cancelled by
    ``cancel_read`` or interrupted): everything waiting, in one system call on a POSIX port."""
    fd, cancel = getattr(port, "fd", None), getattr(port, "pipe_abort_read_r", None)
    if not isinstance(fd, int) or not isinstance(cancel, int):
        return lambda: bytes(port.read(max(1, port.in_waiting)))
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.register(cancel, select.POLLIN)

    def chunk() -> bytes:
        for ready, _ in poller.poll():
            if ready == cancel:
                with contextlib.suppress(BlockingIOError):
                    os.read(cancel, 1000)
                return b""
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return b""
        if not data:  # what pyserial raises for a device that vanished (USB unplugged)
            raise OSError("device reports readiness to read but returned no data (device disconnected?)")
        return data

    return chunk
