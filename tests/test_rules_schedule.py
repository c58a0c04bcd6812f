"""Wall-clock schedules: APScheduler settings, daylight saving, clock sanity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.clock import SystemClock
from core.events import Event, EventFactory, Kind
from rules import model as m
from rules.schedule import ApsSchedules, Job, build_trigger
from tests.rules_kit import House, house

AT_0130 = '[[rules]]\nid = "r"\n[[rules.triggers]]\ntype = "schedule"\nat = "01:30"\n' \
          '[[rules.actions]]\ntype = "toggle"\nentity = "heater"\n'
LONDON = "Europe/London"


def fire_times(h: House) -> list[str]:
    tz = ZoneInfo(LONDON)
    return [dt.datetime.fromtimestamp(e.ts, tz).isoformat() for e in h.seen
            if e.kind is Kind.TIMER]


def test_repeated_local_time_fires_once_when_clocks_go_back(tmp_path: Path) -> None:
    h = house(tmp_path, AT_0130, start="2026-10-24T12:00:00", tz=LONDON)
    h.advance(2 * 86400)
    assert fire_times(h) == ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]


def test_missing_local_time_fires_once_an_hour_later_when_clocks_go_forward(tmp_path: Path) -> None:
    h = house(tmp_path, AT_0130, start="2026-03-28T12:00:00", tz=LONDON)
    h.advance(2 * 86400)
    assert fire_times(h) == ["2026-03-29T02:30:00+01:00", "2026-03-30T01:30:00+01:00"]


def test_cron_in_the_repeated_hour_fires_only_the_first_time() -> None:
    tz = ZoneInfo(LONDON)
    trigger = build_trigger(m.ScheduleTrigger(type="schedule", cron="0,30 * * * *"), tz)
    now = dt.datetime(2026, 10, 25, 0, 45, tzinfo=tz)
    times, previous = [], None
    for _ in range(5):
        previous = trigger.get_next_fire_time(previous, now)
        assert previous is not None
        now = previous
        times.append(previous.isoformat())
    assert times == ["2026-10-25T01:00:00+01:00", "2026-10-25T01:30:00+01:00", "2026-10-25T02:00:00+00:00",
                     "2026-10-25T02:30:00+00:00", "2026-10-25T03:00:00+00:00"]


def test_apscheduler_jobs_are_set_on_purpose() -> None:
    posted: list[Event] = []
    schedules = ApsSchedules(posted.append, EventFactory(SystemClock(), boot="t"), ZoneInfo(LONDON))
    trigger = build_trigger(m.ScheduleTrigger(type="schedule", at="06:30", misfire_grace="10m"), ZoneInfo(LONDON))
    schedules.replace([Job("schedule.r.0", trigger, 600.0)])
    schedules.start()
    try:
        (job,) = schedules.scheduler.get_jobs()
        assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (600, True, 1)
        assert str(schedules.scheduler.timezone) == LONDON
        job.func()  # what APScheduler's thread runs: it only posts a timer event
        assert [(e.kind, e.entity) for e in posted] == [(Kind.TIMER, "schedule.r.0")]
    finally:
        schedules.stop()


def test_schedules_wait_for_a_synchronised_clock(tmp_path: Path) -> None:
    h = house(tmp_path, AT_0130, start="2026-01-05T01:00:00", begin=False)
    synced = [False]
    h.engine.wall.check = lambda: synced[0]
    h.start()
    h.advance(3600)
    assert fire_times(h) == []
    synced[0] = True
    h.engine.wall.poll()
    h.advance(86400)
    assert len(fire_times(h)) == 1


def test_unsynchronised_clock_can_be_allowed_by_policy(tmp_path: Path) -> None:
    h = house(tmp_path, AT_0130, start="2026-01-05T01:00:00", begin=False)
    h.engine.wall.check = lambda: False
    h.engine.wall.policy = "run"
    h.start()
    h.advance(3600)
    assert len(fire_times(h)) == 1


def test_a_wall_clock_step_recomputes_schedules(tmp_path: Path) -> None:
    h = house(tmp_path, AT_0130, start="2026-01-05T00:00:00")
    h.clock.set_wall(h.clock.time() + 3600)  # NTP steps the clock to 01:00
    h.engine.wall.poll()
    h.advance(30 * 60)
    assert len(fire_times(h)) == 1


@pytest.mark.parametrize("bad", ["61 * * * *", "* * *", "0 25 * * *"])
def test_bad_cron_is_a_located_error(bad: str) -> None:
    with pytest.raises(ValueError, match="cron expression"):
        m.ScheduleTrigger(type="schedule", cron=bad)


def test_running_on_an_unsynchronised_clock_is_flagged_in_traces(tmp_path: Path) -> None:
    weekday = '[[rules.conditions]]\ntype = "weekday"\ndays = ["mon"]\n'
    text = AT_0130.replace("[[rules.actions]]", weekday + "[[rules.actions]]")
    h = house(tmp_path, text, start="2026-01-05T01:00:00", begin=False)
    h.engine.wall.check = lambda: False
    h.engine.wall.policy = "run"
    h.start()
    h.advance(3600)
    assert "not synchronised" in h.engine.traces.get("r")[-1]["notes"][0]


def test_config_chooses_the_clock_policy(tmp_path: Path) -> None:
    from gateway.assembly import build_engine
    from tests.rules_config import house_config

    (tmp_path / "rules").mkdir()
    config = house_config(tmp_path, tmp_path / "rules")
    config = config.model_copy(update={"rules": config.rules.model_copy(update={"unsynced_clock": "run"})})
    h = house(tmp_path, "")
    assert build_engine(config, h.dispatcher).unsynced_clock == "run"


def test_a_real_scheduler_posts_timer_events_onto_the_bus() -> None:
    from apscheduler.triggers.cron import CronTrigger

    from gateway.bus import Bus
    from rules.schedule import OncePerLocalTime
    from tests.helpers import wait_until

    bus = Bus()
    tz = ZoneInfo("UTC")
    schedules = ApsSchedules(bus.post, EventFactory(SystemClock(), boot="t"), tz)
    every_second = OncePerLocalTime(CronTrigger(second="*", timezone=tz), tz)
    schedules.replace([Job("schedule.r.0", every_second, 5.0)])
    schedules.start()
    try:
        wait_until(lambda: len(bus) > 0, timeout=5, what="a timer event from APScheduler's thread")
    finally:
        schedules.stop()
    event = bus.get_nowait()
    assert event is not None and (event.kind, event.entity) == (Kind.TIMER, "schedule.r.0")


def test_clock_synchronised_trusts_timesyncd_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rules import schedule

    flag = tmp_path / "synchronized"
    monkeypatch.setattr(schedule, "TIMESYNC_FLAG", flag)
    assert isinstance(schedule.clock_synchronised(), bool)
    flag.touch()
    assert schedule.clock_synchronised() is True
