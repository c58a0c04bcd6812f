"""Wall-clock schedules: triggers with APScheduler 3's semantics that only post timer events.

Rules never run on the schedule thread: a job posts a ``Kind.TIMER`` event
(entity ``schedule.<owner>.<n>``) onto the bus and the dispatcher does the rest.
A ``cron`` expression runs on APScheduler's ``CronTrigger``; a daily ``at`` (with
``weekdays``/``days``, the thermostat's schedule) on :class:`DailyAt`, the standard
library's, which gives the very same runs without importing APScheduler (1.6 MB
and 18 ms of start-up on a Pi). The thread that runs them is
:class:`ApsSchedules`, ours, with APScheduler's semantics.

Settings chosen on purpose:

* coalesce, and one run at a time: runs missed together (a stalled board, a
  clock step) become one run, never a burst.
* a misfire grace per trigger (default 5 min, ``misfire_grace`` in the rule):
  APScheduler's one-second default silently skips jobs on a busy board.
* The time zone is the gateway's (``[gateway] timezone``).
* Daylight saving: :class:`OncePerLocalTime` (and :class:`DailyAt`) make a
  schedule fire at most once per local clock time. On the night the clocks go back, ``02:30`` happens twice
  and fires once (the first); on the night they go forward, a time that does not
  exist fires once, one hour later by the clock (``02:30`` -> ``03:30``).

A board without a real-time clock boots with a wrong time: the engine starts
the scheduler only once :func:`clock_synchronised` says so (policy ``wait``),
and wakes it when the wall clock steps.

:class:`VirtualSchedules` computes the same triggers against a
:class:`~core.clock.VirtualClock`, for tests and ``gateway simulate``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from core import clocksync
from core.events import Event, EventFactory, Kind
from core.guard import guarded
from rules import model as m

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

log = logging.getLogger(__name__)

TIMESYNC_FLAG = clocksync.TIMESYNC_FLAG


def clock_synchronised() -> bool:
    """The engine's default check: :func:`core.clocksync.clock_sync_status` (timesyncd, the kernel, timedated)."""
    return clocksync.clock_sync_status(flag=TIMESYNC_FLAG).synced


class Trigger(Protocol):
    """A schedule's times, in APScheduler's shape: :class:`DailyAt` or :class:`OncePerLocalTime`."""

    def get_next_fire_time(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        """The next run after ``previous`` (the last one, if any), not before ``now``; None: no run left."""
        ...


class OncePerLocalTime:
    """Wraps a cron trigger so it never fires twice for the same local clock time (DST fall-back).

    A trigger in APScheduler's shape (``get_next_fire_time``) without deriving from its ``BaseTrigger``:
    nothing here hands it to an APScheduler scheduler, and a house without schedules then never imports
    APScheduler, whose ``util`` imports ``asyncio`` (1.4 MB, 14 ms of start-up).
    """

    __slots__ = ("inner", "timezone")

    def __init__(self, inner: CronTrigger, timezone: ZoneInfo) -> None:
        self.inner = inner
        self.timezone = timezone

    def get_next_fire_time(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        return once_per_local_time(self.inner.get_next_fire_time, previous, now, self.timezone)

    def __str__(self) -> str:
        return f"once-per-local-time {self.inner}"


def once_per_local_time(
    next_run: Callable[[dt.datetime | None, dt.datetime], dt.datetime | None],
    previous: dt.datetime | None, now: dt.datetime, timezone: ZoneInfo,
) -> dt.datetime | None:
    """``next_run(previous, now)``, moved on past any run whose local clock time is not later than
    ``previous``'s: a time the clocks repeat (DST fall-back) fires once. For :class:`OncePerLocalTime` and
    :class:`DailyAt` alike."""
    candidate = next_run(previous, now)
    if previous is None:
        return candidate
    last_local = previous.astimezone(timezone).replace(tzinfo=None)
    for _ in range(10_000):  # bounded: a schedule always moves forward in real time
        if candidate is None or candidate.astimezone(timezone).replace(tzinfo=None) > last_local:
            break
        # Step in real (UTC) time: aware-datetime arithmetic is wall-clock and would stay in the fold.
        after = dt.datetime.fromtimestamp(candidate.timestamp() + 1, timezone)
        candidate = next_run(None, after)
    return candidate


_UTC = dt.UTC
_MICROSECOND = dt.timedelta(microseconds=1)
_DAY, _DAY_OF_WEEK, _HOUR, _MINUTE, _SECOND, _DONE = range(6)


class DailyAt:
    """A daily ``at`` time (on some ``days``) in ``timezone``: the standard library's own trigger.

    Why not APScheduler's ``CronTrigger``: its ``util`` imports ``asyncio``, ``tzlocal`` and
    ``concurrent.futures`` (1.6 MB of a Pi's memory, 18 ms of start-up) and the shipped house needs it only
    for its thermostat's daily schedule. The contract is ``OncePerLocalTime(CronTrigger(hour=, minute=,
    second=, day_of_week=, timezone=))``'s, result for result (tests/test_rules_schedule_daily.py proves it
    over random zones, times and instants), including its daylight-saving behaviour:

    * A local time that happens twice (the clocks go back) fires once, the first time.
    * A local time that does not exist (the clocks go forward) fires once, at the instant the clock would
      have shown it before the change (``02:30`` -> ``03:30``). The datetime returned then keeps the wall
      time ``02:30`` with the pre-change offset, as APScheduler's does (the property test compares the
      values themselves, not only their instants; :class:`ApsSchedules` compares instants).
    * Where midnight does not exist and the time is midnight, that day has no run (APScheduler resets a
      new day to 00:00 by adding the wall-clock difference in real time, which lands on 01:00).

    The search below is APScheduler 3's cron search (``CronTrigger.get_next_fire_time``) with its fields
    fixed: year, month, day and week are ``*``, so only the weekday, hour, minute and second can move the
    date, and each step moves it exactly as APScheduler does (a field set: wall time, same ``fold``; a
    field incremented: the wall-clock difference added in UTC).
    """

    __slots__ = ("at", "day_names", "timezone")

    def __init__(self, at: dt.time, days: Sequence[m.Weekday] | None, timezone: ZoneInfo) -> None:
        """``days`` as the rule wrote them (``__str__`` keeps their order); None is every day."""
        self.at = at.replace(microsecond=0, tzinfo=None)
        self.day_names = tuple(days) if days else None
        self.timezone = timezone

    def get_next_fire_time(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        """The first run after ``previous`` (if given) and at or after ``now``; never the same local time twice."""
        return once_per_local_time(self._next, previous, now, self.timezone)

    def _next(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime:
        """``CronTrigger.get_next_fire_time`` for this daily time."""
        if previous is not None:
            start = min(now.astimezone(_UTC), _utc_add(previous, _MICROSECOND).astimezone(_UTC))
            start = start.astimezone(self.timezone)
            if start == previous:
                start = _utc_add(start, _MICROSECOND)
        else:
            start = now
        if start.microsecond:
            start = _utc_add(start, dt.timedelta(seconds=1, microseconds=-start.microsecond))
        date = start.astimezone(self.timezone)
        at, field = self.at, _DAY_OF_WEEK
        while field != _DONE:
            if field == _DAY_OF_WEEK:
                if self.day_names is None or m.local_weekday(date) in self.day_names:
                    field = _HOUR
                else:
                    date, field = self._increment(date, _DAY)
            else:
                value, wanted = {_HOUR: (date.hour, at.hour), _MINUTE: (date.minute, at.minute),
                                 _SECOND: (date.second, at.second)}[field]
                if value > wanted:
                    date, field = self._increment(date, _DAY if field == _HOUR else field - 1)
                else:
                    if value < wanted:
                        date = self._set(date, field, wanted)
                    field += 1
        return date

    def _set(self, date: dt.datetime, field: int, value: int) -> dt.datetime:
        """APScheduler's ``_set_field_value``: the wall time with ``field`` set and the smaller ones at zero."""
        hour = value if field == _HOUR else date.hour
        minute = value if field == _MINUTE else date.minute if field > _MINUTE else 0
        second = value if field == _SECOND else 0
        return dt.datetime(date.year, date.month, date.day, hour, minute, second,
                           tzinfo=self.timezone, fold=date.fold)

    def _increment(self, date: dt.datetime, field: int) -> tuple[dt.datetime, int]:
        """APScheduler's ``_increment_field_value``: the next day/hour/minute at zero, and the field that moved.

        The wall-clock difference is added in UTC, so the result is a real instant (across a change of the
        clocks it need not show the wall time aimed at). A full field rolls over into the larger one.
        """
        if field == _MINUTE and date.minute == 59:
            field = _HOUR
        if field == _HOUR and date.hour == 23:
            field = _DAY
        wall = date.replace(tzinfo=None)
        if field == _DAY:
            target = dt.datetime.combine(wall.date() + dt.timedelta(days=1), dt.time())
        elif field == _HOUR:
            target = wall.replace(hour=wall.hour + 1, minute=0, second=0)
        else:
            target = wall.replace(minute=wall.minute + 1, second=0)
        return _utc_add(date, target - wall), _DAY_OF_WEEK if field == _DAY else field

    def __str__(self) -> str:
        options = [f"hour='{self.at.hour}'", f"minute='{self.at.minute}'", f"second='{self.at.second}'"]
        if self.day_names is not None:
            options.insert(0, f"day_of_week='{','.join(self.day_names)}'")
        return f"once-per-local-time cron[{', '.join(options)}]"


def _utc_add(date: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    """``date + delta`` in real time (APScheduler's ``datetime_utc_add``), back in ``date``'s zone."""
    return (date.astimezone(_UTC) + delta).astimezone(date.tzinfo)


def build_trigger(trigger: m.ScheduleTrigger | m.ScheduleEntry, timezone: ZoneInfo) -> Trigger:
    """A ``cron`` expression on APScheduler's trigger (imported only then); a daily ``at`` on :class:`DailyAt`."""
    if isinstance(trigger, m.ScheduleTrigger) and trigger.cron is not None:
        from apscheduler.triggers.cron import CronTrigger  # only for a cron schedule: see OncePerLocalTime

        return OncePerLocalTime(CronTrigger.from_crontab(trigger.cron, timezone=timezone), timezone)
    at = trigger.at
    assert at is not None
    days = trigger.weekdays if isinstance(trigger, m.ScheduleTrigger) else trigger.days
    return DailyAt(at, days, timezone)


@dataclass(slots=True, frozen=True)
class Job:
    key: str
    """The TIMER event's entity: ``schedule.<owner>.<n>``."""
    trigger: Trigger
    grace: float


class Schedules(Protocol):
    """What the engine needs of a scheduler; jobs are replaced as a whole on reload."""

    def replace(self, jobs: list[Job]) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wakeup(self) -> None: ...

    @property
    def running(self) -> bool: ...


MAX_WAIT = 600.0
"""The schedule thread re-reads the wall clock at least this often (seconds), so a slow drift between the
monotonic wait and the wall clock never delays a run by more than a few milliseconds."""


class _Entry:
    __slots__ = ("job", "next")

    def __init__(self, job: Job, next_run: dt.datetime | None) -> None:
        self.job = job
        self.next = next_run


class ApsSchedules:
    """APScheduler 3's triggers, run by one small thread of ours that only posts TIMER events.

    Why not APScheduler's ``BackgroundScheduler``: a job here only posts an event, so its scheduler, its
    executor's thread pool and the modules they import (``concurrent.futures``, ``multiprocessing``:
    1.6 MB of a Pi's memory, docs/performance.md) buy nothing. The semantics are APScheduler's, kept on
    purpose (see the module docstring): runs missed together become **one** run (coalesce); a run later
    than its job's ``grace`` is skipped and logged; one job never runs twice at once (posting is instant).
    The thread sleeps until the next run (at most :data:`MAX_WAIT`) and exists only once there is a job:
    a house without schedules has none. :meth:`wakeup` (a wall-clock step) makes it look at the clock
    again: a run the step jumped over fires at once if within its grace, as with APScheduler.

    ``wall`` is the wall clock (``time.time``); tests move it by hand and call :meth:`arm` and
    :meth:`run_due` without the thread.
    """

    def __init__(self, post: Callable[[Event], None], events: EventFactory, timezone: ZoneInfo,
                 *, wall: Callable[[], float] = time.time) -> None:
        self._post = post
        self._events = events
        self._timezone = timezone
        self._wall = wall
        self._jobs: list[Job] = []
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.thread: threading.Thread | None = None
        """None until there is a job to run while started."""
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def replace(self, jobs: list[Job]) -> None:
        self._jobs = list(jobs)
        if self._running:
            self.arm()

    def start(self) -> None:
        if not self._running:
            self._running = True
            self.arm()

    def stop(self) -> None:
        self._running = False
        self._wake.set()
        thread, self.thread = self.thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    def wakeup(self) -> None:
        self._wake.set()

    def arm(self) -> None:
        """Each job's next run from now (what APScheduler's ``add_job`` does); the thread once there is a job."""
        now = self._now()
        with self._lock:
            self._entries = [_Entry(job, job.trigger.get_next_fire_time(None, now)) for job in self._jobs]
        if self._running and self._entries and self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="schedules", daemon=True)
            self.thread.start()
        self._wake.set()

    def run_due(self) -> float | None:
        """Post what is due now; the seconds until the next run (None: no run left)."""
        now = self._now()
        wait: float | None = None
        with self._lock:
            entries = list(self._entries)
        for entry in entries:
            guarded(f"schedule {entry.job.key}")(self._run)(entry, now)  # one bad job never stops the others
            if entry.next is not None:
                left = entry.next.timestamp() - now.timestamp()
                wait = left if wait is None else min(wait, left)
        return wait

    def _run(self, entry: _Entry, now: dt.datetime) -> None:
        """APScheduler's ``_get_run_times`` + ``run_job`` with ``coalesce=True``: the last due run, if in grace."""
        # Instants, not wall times: two datetimes of one zone compare and subtract by their wall clocks, which
        # put a run in the hour clocks skip (01:30 in London's spring-forward night is 01:30 UTC) before 02:05 BST.
        trigger, last, instant = entry.job.trigger, None, now.timestamp()
        while entry.next is not None and entry.next.timestamp() <= instant:
            last = entry.next
            entry.next = trigger.get_next_fire_time(last, now)
        if last is None:
            return
        late = instant - last.timestamp()
        if late > max(entry.job.grace, 1.0):
            log.warning("schedule %s: run of %s skipped, %.0f s late (misfire grace %.0f s)",
                        entry.job.key, last.isoformat(), late, entry.job.grace)
            return
        self._post(self._events.make(Kind.TIMER, entry.job.key, True, detail="schedule"))

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._wall(), self._timezone)

    def _loop(self) -> None:
        while self._running:
            self._wake.clear()
            wait = self.run_due()
            self._wake.wait(MAX_WAIT if wait is None else max(0.0, min(wait, MAX_WAIT)))


class TimerHost(Protocol):
    events: EventFactory

    def emit(self, event: Event) -> None: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any: ...


class VirtualSchedules:
    """The same triggers on the dispatcher's own timers, for a :class:`~core.clock.VirtualClock`."""

    def __init__(self, host: TimerHost, timezone: ZoneInfo) -> None:
        self._host = host
        self._tz = timezone
        self._timers: list[Any] = []
        self._jobs: list[Job] = []
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def replace(self, jobs: list[Job]) -> None:
        self._jobs = list(jobs)
        if self._running:
            self._install()

    def _install(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        for job in self._jobs:
            self._arm(job, None)

    def _arm(self, job: Job, previous: dt.datetime | None) -> None:
        clock = self._host.events.clock
        now = dt.datetime.fromtimestamp(clock.time(), self._tz)
        when = job.trigger.get_next_fire_time(previous, now)
        if when is None:
            return

        def fire() -> None:
            self._host.emit(self._host.events.make(Kind.TIMER, job.key, True, detail="schedule"))
            self._arm(job, when)

        self._timers.append(self._host.call_later(when.timestamp() - clock.time(), fire))

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._install()

    def stop(self) -> None:
        self._running = False
        for timer in self._timers:
            timer.cancel()
        self._timers = []

    def wakeup(self) -> None:
        if self._running:
            self._install()
