"""Wall-clock schedules: APScheduler triggers on one thread of ours (coalesce, misfire grace), daylight saving,
clock sanity."""

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


def wall_schedules(at: str, grace: float, posted: list[Event], now: list[float]) -> ApsSchedules:
    """A daily schedule at ``at`` (London) on a wall clock the test moves by hand, no thread involved."""
    tz = ZoneInfo(LONDON)
    schedules = ApsSchedules(posted.append, EventFactory(SystemClock(), boot="t"), tz, wall=lambda: now[0])
    trigger = build_trigger(m.ScheduleTrigger(type="schedule", at=at), tz)
    schedules.replace([Job("schedule.r.0", trigger, grace)])
    return schedules


def london(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(LONDON)).timestamp()


def utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


def test_a_run_in_the_hour_clocks_skip_fires_at_its_instant_not_early_nor_skipped_as_late() -> None:
    """01:30 does not exist in London on 29 March 2026 (01:00 GMT is 02:00 BST): the run is 01:30 UTC. Compared
    by wall time (same zone), 02:05 BST looked 35 minutes after 01:30: the run fired early, or with a grace under
    that was skipped as late."""
    posted: list[Event] = []
    now = [utc("2026-03-29T00:50:00")]
    schedules = wall_schedules("01:30", 600.0, posted, now)
    schedules.arm()
    assert schedules.run_due() == pytest.approx(2400)
    now[0] = utc("2026-03-29T01:05:00")
    assert schedules.run_due() == pytest.approx(1500)
    assert posted == []
    now[0] = utc("2026-03-29T01:30:01")
    schedules.run_due()
    assert len(posted) == 1


def test_a_schedule_posts_one_timer_event_when_its_time_comes() -> None:
    posted: list[Event] = []
    now = [london("2026-01-05T06:00:00")]
    schedules = wall_schedules("06:30", 600.0, posted, now)
    schedules.arm()
    assert schedules.run_due() == pytest.approx(1800)
    now[0] = london("2026-01-05T06:30:00.2")
    schedules.run_due()
    assert [(e.kind, e.entity, e.value) for e in posted] == [(Kind.TIMER, "schedule.r.0", True)]
    assert schedules.run_due() == pytest.approx(86400 - 0.2)


def test_runs_missed_together_become_one_run_never_a_burst() -> None:
    """coalesce: a clock stepped forward by three days (a board that booted with an old date) fires once."""
    posted: list[Event] = []
    now = [london("2026-01-05T06:00:00")]
    schedules = wall_schedules("06:30", 600.0, posted, now)
    schedules.arm()
    now[0] = london("2026-01-08T06:31:00")
    schedules.run_due()
    assert len(posted) == 1


def test_a_run_later_than_its_misfire_grace_is_skipped_and_the_next_one_is_kept() -> None:
    posted: list[Event] = []
    now = [london("2026-01-05T06:00:00")]
    schedules = wall_schedules("06:30", 600.0, posted, now)
    schedules.arm()
    now[0] = london("2026-01-05T06:45:00")  # 15 min late, grace 10 min
    assert schedules.run_due() == pytest.approx(london("2026-01-06T06:30:00") - now[0])
    assert posted == []


def test_a_reload_that_keeps_a_schedule_does_not_fire_it_again_nor_forget_it() -> None:
    posted: list[Event] = []
    now = [london("2026-01-05T06:00:00")]
    schedules = wall_schedules("06:30", 600.0, posted, now)
    schedules.arm()
    now[0] = london("2026-01-05T06:20:00")
    schedules.arm()  # what replace() does while running
    now[0] = london("2026-01-05T06:30:01")
    schedules.run_due()
    assert len(posted) == 1


def test_the_schedule_thread_starts_with_the_first_job_and_ends_at_stop() -> None:
    posted: list[Event] = []
    schedules = ApsSchedules(posted.append, EventFactory(SystemClock(), boot="t"), ZoneInfo(LONDON))
    schedules.start()
    assert schedules.running and schedules.thread is None  # nothing to run: no thread
    trigger = build_trigger(m.ScheduleTrigger(type="schedule", at="06:30"), ZoneInfo(LONDON))
    schedules.replace([Job("schedule.r.0", trigger, 300.0)])
    thread = schedules.thread
    assert thread is not None and thread.is_alive()
    schedules.stop()
    assert not thread.is_alive() and not schedules.running


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
        wait_until(lambda: len(bus) > 0, timeout=5, what="a timer event from the schedule thread")
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
