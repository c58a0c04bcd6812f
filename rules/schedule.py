"""Wall-clock schedules: APScheduler 3 triggers that only post timer events.

Rules never run on the scheduler's thread: a job posts a ``Kind.TIMER`` event
(entity ``schedule.<owner>.<n>``) onto the bus and the dispatcher does the rest.

Settings chosen on purpose:

* ``coalesce = True`` and ``max_instances = 1``: runs missed together (a stalled
  board, a clock step) become one run, never a burst.
* ``misfire_grace_time`` per trigger (default 5 min, ``misfire_grace`` in the
  rule): APScheduler's one-second default silently skips jobs on a busy board.
* The time zone is the gateway's (``[gateway] timezone``).
* Daylight saving: :class:`OncePerLocalTime` makes a schedule fire at most once
  per local clock time. On the night the clocks go back, ``02:30`` happens twice
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from core import clocksync
from core.events import Event, EventFactory, Kind
from core.guard import guarded
from rules import model as m

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)

TIMESYNC_FLAG = clocksync.TIMESYNC_FLAG


def clock_synchronised() -> bool:
    """The engine's default check: :func:`core.clocksync.clock_sync_status` (timesyncd, the kernel, timedated)."""
    return clocksync.clock_sync_status(flag=TIMESYNC_FLAG).synced


class OncePerLocalTime(BaseTrigger):  # type: ignore[misc]
    """Wraps a cron trigger so it never fires twice for the same local clock time (DST fall-back)."""

    def __init__(self, inner: CronTrigger, timezone: ZoneInfo) -> None:
        self.inner = inner
        self.timezone = timezone

    def get_next_fire_time(self, previous: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
        candidate: dt.datetime | None = self.inner.get_next_fire_time(previous, now)
        if previous is None:
            return candidate
        last_local = previous.astimezone(self.timezone).replace(tzinfo=None)
        for _ in range(10_000):  # bounded: a cron expression always moves forward in real time
            if candidate is None or candidate.astimezone(self.timezone).replace(tzinfo=None) > last_local:
                break
            # Step in real (UTC) time: aware-datetime arithmetic is wall-clock and would stay in the fold.
            after = dt.datetime.fromtimestamp(candidate.timestamp() + 1, self.timezone)
            candidate = self.inner.get_next_fire_time(None, after)
        return candidate

    def __str__(self) -> str:
        return f"once-per-local-time {self.inner}"


def build_trigger(trigger: m.ScheduleTrigger | m.ScheduleEntry, timezone: ZoneInfo) -> OncePerLocalTime:
    if isinstance(trigger, m.ScheduleTrigger) and trigger.cron is not None:
        cron = CronTrigger.from_crontab(trigger.cron, timezone=timezone)
    else:
        at = trigger.at
        assert at is not None
        days = trigger.weekdays if isinstance(trigger, m.ScheduleTrigger) else trigger.days
        cron = CronTrigger(
            hour=at.hour, minute=at.minute, second=at.second,
            day_of_week=",".join(days) if days else None, timezone=timezone,
        )
    return OncePerLocalTime(cron, timezone)


@dataclass(slots=True, frozen=True)
class Job:
    key: str
    """The TIMER event's entity: ``schedule.<owner>.<n>``."""
    trigger: OncePerLocalTime
    grace: float


class Schedules(Protocol):
    """What the engine needs of a scheduler; jobs are replaced as a whole on reload."""

    def replace(self, jobs: list[Job]) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wakeup(self) -> None: ...

    @property
    def running(self) -> bool: ...


class ApsSchedules:
    """APScheduler 3's BackgroundScheduler, posting TIMER events onto the bus.

    The scheduler (its module, its thread, and the ``multiprocessing`` and ``concurrent.futures``
    modules its executors import: about 1 MB of a Pi's memory) is created only once there is a job
    to run: a house without schedules never loads it. :attr:`running` is this object's state (started
    and not stopped), whether or not a scheduler exists yet; jobs that arrive while running (a rule
    reload that adds a schedule) start one.
    """

    def __init__(self, post: Callable[[Event], None], events: EventFactory, timezone: ZoneInfo) -> None:
        self._post = post
        self._events = events
        self._timezone = timezone
        self.scheduler: BackgroundScheduler | None = None
        """None until the first job runs (:meth:`_install`)."""
        self._jobs: list[Job] = []
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def replace(self, jobs: list[Job]) -> None:
        self._jobs = list(jobs)
        if self.running:
            self._install()

    def _install(self) -> None:
        if self.scheduler is None:
            if not self._jobs:
                return
            from apscheduler.schedulers.background import BackgroundScheduler  # only with a job: see class

            self.scheduler = BackgroundScheduler(
                timezone=self._timezone,
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            )
            self.scheduler.start()
        self.scheduler.remove_all_jobs()
        for job in self._jobs:
            self.scheduler.add_job(
                self._poster(job.key), trigger=job.trigger, id=job.key, name=job.key,
                misfire_grace_time=int(job.grace) or 1, coalesce=True, max_instances=1, replace_existing=True,
            )

    def _poster(self, key: str) -> Callable[[], None]:
        def post() -> None:
            self._post(self._events.make(Kind.TIMER, key, True, detail="schedule"))

        return guarded(f"schedule {key}")(post)

    def start(self) -> None:
        if not self._running:
            self._running = True
            self._install()

    def stop(self) -> None:
        self._running = False
        if self.scheduler is not None:
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            self.scheduler = None  # a start after a stop makes a new one: APScheduler's cannot restart

    def wakeup(self) -> None:
        if self.running and self.scheduler is not None:
            self.scheduler.wakeup()


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
