"""A repeated condition is logged once when it starts and once when it ends, with a count."""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

import pytest

from core.clock import VirtualClock
from core.logonce import LogOnce
from gateway.logs import setup_logging
from rules.schedule import Job
from rules.wallclock import WallClock

log = logging.getLogger("tests.logonce")


class StoppedSchedules:
    """The engine's scheduler as the wall clock sees it: started or not."""

    def __init__(self) -> None:
        self.running = False

    def replace(self, jobs: list[Job]) -> None: ...

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False

    def wakeup(self) -> None: ...


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def test_a_condition_is_logged_at_its_level_once_and_its_repeats_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    condition = LogOnce(log)
    with caplog.at_level(logging.DEBUG, logger="tests.logonce"):
        firsts = [condition.holds(logging.ERROR, "port %s gone", "ttyUSB0") for _ in range(5)]
    assert firsts == [True, False, False, False, False]
    assert lines(caplog, logging.ERROR) == ["port ttyUSB0 gone"]
    assert len(lines(caplog, logging.DEBUG)) == 5


def test_the_end_of_a_condition_is_logged_once_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    condition = LogOnce(log)
    with caplog.at_level(logging.INFO, logger="tests.logonce"):
        for _ in range(3):
            condition.holds(logging.WARNING, "not yet")
        assert condition.ended(logging.INFO, "%s back after %d tries", "port") == 3
        assert condition.ended(logging.INFO, "%s back after %d tries", "port") == 0
    assert lines(caplog) == ["not yet", "port back after 3 tries"]
    assert not condition.active


def test_an_unsynchronised_wall_clock_is_logged_once_then_once_when_it_syncs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    synced = False
    wall = WallClock(VirtualClock(), ZoneInfo("UTC"), "wait", lambda: synced, StoppedSchedules())
    with caplog.at_level(logging.INFO, logger="rules.engine"):
        for _ in range(120):  # an hour of polls every 30 s
            wall.poll()
        synced = True
        wall.poll()
        wall.poll()
    assert lines(caplog) == [
        "wall clock not synchronised yet: schedules and time conditions wait",
        "wall clock synchronised after 120 checks: schedules and time conditions active",
    ]
    assert [r.levelname for r in caplog.records if r.levelno >= logging.INFO] == ["WARNING", "INFO"]


def test_apschedulers_job_chatter_is_hidden_at_info_and_shown_at_debug() -> None:
    aps = logging.getLogger("apscheduler.scheduler")
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("apscheduler").level
    try:
        setup_logging("INFO")
        assert not aps.isEnabledFor(logging.INFO) and aps.isEnabledFor(logging.WARNING)
        setup_logging("DEBUG")
        assert aps.isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("apscheduler").setLevel(saved[2])
