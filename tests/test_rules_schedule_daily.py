"""DailyAt, the standard library's daily trigger, against what it replaces: APScheduler's cron trigger.

A house whose only schedules are daily ``at`` times (the shipped house's thermostat) no longer loads
APScheduler (docs/performance.md). The proof that nothing else changed: for random zones (with and without
daylight saving, half-hour shifts, southern hemisphere, changes at midnight), times (many in the hours the
clocks skip or repeat), day sets and instants (many within a day of a change of the clocks), ``DailyAt``
returns the very datetime ``OncePerLocalTime(CronTrigger(...))`` returns: same instant, same wall time,
same ``fold`` (same-zone comparisons in ``ApsSchedules`` are wall-clock), for a first run and for chains of
runs. ``SCHEDULE_EXAMPLES`` sets how many examples (200 by default; 2000 or more before changing DailyAt).
"""

from __future__ import annotations

import datetime as dt
import os
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rules import model as m
from rules.schedule import DailyAt, OncePerLocalTime

ZONES = (
    "UTC", "Asia/Tokyo", "Asia/Kolkata",  # no daylight saving
    "Europe/Berlin", "Europe/London", "America/New_York", "America/St_Johns",  # an hour at 01:00-03:00
    "Australia/Sydney", "Pacific/Auckland", "America/Santiago",  # southern hemisphere (Santiago: at midnight)
    "Australia/Lord_Howe",  # a 30-minute shift
    "America/Havana", "Asia/Beirut", "America/Asuncion",  # the clocks change at midnight
)
YEARS = range(2020, 2036)
EXAMPLES = int(os.environ.get("SCHEDULE_EXAMPLES", "200"))


def cron_daily(at: dt.time, days: list[m.Weekday] | None, tz: ZoneInfo) -> OncePerLocalTime:
    """What ``build_trigger`` built for an ``at`` schedule before DailyAt."""
    from apscheduler.triggers.cron import CronTrigger

    cron = CronTrigger(hour=at.hour, minute=at.minute, second=at.second,
                       day_of_week=",".join(days) if days else None, timezone=tz)
    return OncePerLocalTime(cron, tz)


@cache
def changes_of_the_clocks(zone: str) -> tuple[float, ...]:
    """The instants (POSIX seconds) where ``zone``'s UTC offset changes, over YEARS."""
    tz = ZoneInfo(zone)
    found: list[float] = []
    start = dt.datetime(YEARS.start, 1, 1, tzinfo=dt.UTC).timestamp()
    end = dt.datetime(YEARS.stop, 1, 1, tzinfo=dt.UTC).timestamp()
    step = 6 * 3600.0
    t = start
    while t < end:
        if dt.datetime.fromtimestamp(t, tz).utcoffset() != dt.datetime.fromtimestamp(t + step, tz).utcoffset():
            low, high = t, t + step
            while high - low > 1:
                mid = (low + high) // 2
                same = dt.datetime.fromtimestamp(mid, tz).utcoffset() == dt.datetime.fromtimestamp(low, tz).utcoffset()
                low, high = (mid, high) if same else (low, mid)
            found.append(high)
        t += step
    return tuple(found)


def seen(run: dt.datetime | None) -> object:
    """What must match: the instant, the wall time, the fold and the zone."""
    return None if run is None else (run.timestamp(), run.replace(tzinfo=None), run.fold, run.tzinfo)


zones = st.sampled_from(ZONES)
times = st.one_of(
    st.builds(dt.time, st.integers(0, 23), st.integers(0, 59), st.sampled_from([0, 0, 0, 30, 59])),
    st.builds(dt.time, st.sampled_from([0, 1, 2, 2, 3, 23]), st.sampled_from([0, 15, 30, 45, 59]),
              st.sampled_from([0, 59])),  # the hours the clocks skip or repeat, and midnight
    st.builds(dt.time, st.sampled_from([0, 1, 2, 2, 3, 23]), st.sampled_from([0, 15, 30, 45, 59]),
              st.sampled_from([0, 59])),
)
day_sets = st.one_of(st.none(), st.lists(st.sampled_from(m.WEEKDAYS), min_size=1, max_size=7))


@st.composite
def cases(draw: st.DrawFn) -> tuple[ZoneInfo, dt.time, list[m.Weekday] | None, dt.datetime]:
    """A zone, a daily time, its days and an instant as ``ApsSchedules`` reads one (microseconds and all).

    Mostly near a change of the clocks, at a time in the hour it skips or repeats: the wall time just
    before the change plus up to 90 minutes, on the days around it.
    """
    zone = draw(zones)
    tz = ZoneInfo(zone)
    changes = changes_of_the_clocks(zone)
    at, days = draw(times), draw(day_sets)
    if changes and draw(st.integers(0, 3)) > 0:
        change = draw(st.sampled_from(changes))
        if draw(st.booleans()):
            before = dt.datetime.fromtimestamp(change - 1, tz).replace(tzinfo=None)
            at = (before + dt.timedelta(seconds=1 + draw(st.integers(-1800, 5400)))).time()
        # hours either side of the change, and a few seconds or any second off the hour
        t = change + draw(st.integers(-48, 48)) * 3600 + draw(st.one_of(st.sampled_from([0, 1, -1, 1800]),
                                                                         st.integers(0, 3599)))
    else:
        t = draw(st.integers(int(dt.datetime(YEARS.start, 1, 1).timestamp()),
                             int(dt.datetime(YEARS.stop - 1, 12, 31).timestamp())))
    micro = draw(st.sampled_from([0, 0, 1, 500_000, 999_999]))
    return tz, at, days, dt.datetime.fromtimestamp(t + micro / 1e6, tz)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_a_daily_time_fires_when_apschedulers_cron_trigger_fired(
        case: tuple[ZoneInfo, dt.time, list[m.Weekday] | None, dt.datetime]) -> None:
    tz, at, days, now = case
    ours, theirs = DailyAt(at, days, tz), cron_daily(at, days, tz)
    assert seen(ours.get_next_fire_time(None, now)) == seen(theirs.get_next_fire_time(None, now))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), runs=st.integers(5, 20), data=st.data())
def test_successive_runs_of_a_daily_time_are_apschedulers_runs(
        case: tuple[ZoneInfo, dt.time, list[m.Weekday] | None, dt.datetime], runs: int,
        data: st.DataObject) -> None:
    # As ApsSchedules and VirtualSchedules chain them: each run from the previous one, `now` at it or later.
    tz, at, days, now = case
    ours, theirs = DailyAt(at, days, tz), cron_daily(at, days, tz)
    previous = theirs.get_next_fire_time(None, now)
    assert seen(ours.get_next_fire_time(None, now)) == seen(previous)
    for _ in range(runs):
        assert previous is not None
        # None: the run itself (its own wall time and fold); 0: the same instant as the wall clock reads it
        later = data.draw(st.sampled_from([None, None, 0, 1, 0.25, 59, 3600, 86400]))
        now = previous if later is None else dt.datetime.fromtimestamp(previous.timestamp() + later, tz)
        expected = theirs.get_next_fire_time(previous, now)
        assert seen(ours.get_next_fire_time(previous, now)) == seen(expected), (previous, now)
        previous = expected


@given(at=times, days=day_sets, zone=zones)
@settings(max_examples=50, deadline=None)
def test_a_daily_time_describes_itself_as_the_cron_trigger_did(
        at: dt.time, days: list[m.Weekday] | None, zone: str) -> None:
    tz = ZoneInfo(zone)
    assert str(DailyAt(at, days, tz)) == str(cron_daily(at, days, tz))
