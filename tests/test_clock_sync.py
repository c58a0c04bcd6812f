"""Clock synchronisation: each source on its own, their order, and the real check under the unit's filter."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from core.clocksync import (
    NTP_PHASE_LIMIT_US,
    STA_UNSYNC,
    TIME_ERROR,
    ClockSync,
    KernelNtp,
    ask_timedated,
    clock_sync_status,
    read_kernel_ntp,
)
from tests import syscall_filter

ROOT = Path(__file__).resolve().parent.parent
TIME_OK = 0


def kernel_says(state: int, status: int, maxerror_us: int) -> Callable[[], KernelNtp]:
    return lambda: KernelNtp(state=state, status=status, maxerror_us=maxerror_us)


def kernel_refuses(code: int = errno.EPERM) -> Callable[[], KernelNtp]:
    def refuse() -> KernelNtp:
        raise OSError(code, os.strerror(code))

    return refuse


def timedated_says(answer: bool | None) -> Callable[[], bool | None]:
    return lambda: answer


def never_asked() -> bool | None:
    raise AssertionError("timedated must not be asked when the kernel answered")


# -- timesyncd's flag file ---------------------------------------------------------------------


def test_timesyncds_flag_file_means_synchronised_whatever_the_kernel_says(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    flag.touch()
    result = clock_sync_status(flag, kernel_says(TIME_ERROR, STA_UNSYNC, NTP_PHASE_LIMIT_US), never_asked)
    assert (result.synced, result.source) == (True, "timesyncd")


def test_without_the_flag_file_the_kernel_decides(tmp_path: Path) -> None:
    result = clock_sync_status(tmp_path / "absent", kernel_says(TIME_OK, 0, 12_000), never_asked)
    assert (result.synced, result.source) == (True, "kernel")


# -- the kernel (adjtimex) ---------------------------------------------------------------------


def test_a_kernel_clock_disciplined_by_ntp_is_synchronised(tmp_path: Path) -> None:
    """ntpd, or chrony with rtcsync: TIME_OK, STA_UNSYNC clear, a small maximum error."""
    result = clock_sync_status(tmp_path / "absent", kernel_says(TIME_OK, 0, 250_000), never_asked)
    assert result == ClockSync(True, "kernel", "kernel maxerror 0.25 s (STA_UNSYNC clear)")


def test_a_kernel_clock_never_synchronised_since_boot_is_not(tmp_path: Path) -> None:
    """At boot, and after fake-hwclock's settimeofday: TIME_ERROR, STA_UNSYNC, maxerror at the 16 s limit."""
    result = clock_sync_status(tmp_path / "absent", kernel_says(TIME_ERROR, STA_UNSYNC, NTP_PHASE_LIMIT_US),
                               never_asked)
    assert (result.synced, result.source) == (False, "kernel")
    assert "not synchronised" in result.detail


def test_chrony_keeping_sta_unsync_to_spare_the_rtc_still_counts_as_synchronised(tmp_path: Path) -> None:
    """chrony without rtcsync sets STA_UNSYNC (so TIME_ERROR) on purpose; the error bound is what counts."""
    result = clock_sync_status(tmp_path / "absent", kernel_says(TIME_ERROR, STA_UNSYNC, 40_000), never_asked)
    assert (result.synced, result.source) == (True, "kernel")


def test_a_clock_unattended_until_its_error_bound_reached_16_s_is_not_synchronised(tmp_path: Path) -> None:
    result = clock_sync_status(tmp_path / "absent", kernel_says(TIME_OK, 0, NTP_PHASE_LIMIT_US), never_asked)
    assert result.synced is False


# -- timedated, when the kernel refuses --------------------------------------------------------


def test_when_the_sandbox_refuses_adjtimex_timedated_answers(tmp_path: Path) -> None:
    result = clock_sync_status(tmp_path / "absent", kernel_refuses(), timedated_says(True))
    assert (result.synced, result.source) == (True, "timedated")
    assert "adjtimex refused (EPERM)" in result.detail


def test_timedated_saying_no_is_not_synchronised(tmp_path: Path) -> None:
    result = clock_sync_status(tmp_path / "absent", kernel_refuses(), timedated_says(False))
    assert (result.synced, result.source) == (False, "timedated")


def test_no_source_answering_is_not_synchronised_and_says_how_to_fix_the_sandbox(tmp_path: Path) -> None:
    result = clock_sync_status(tmp_path / "absent", kernel_refuses(), timedated_says(None))
    assert (result.synced, result.source) == (False, "none")
    assert "SystemCallFilter=" in result.detail and "timedated did not answer" in result.detail


def test_a_c_library_without_adjtimex_falls_through_to_timedated(tmp_path: Path) -> None:
    result = clock_sync_status(tmp_path / "absent", kernel_refuses(errno.ENOSYS), timedated_says(True))
    assert (result.synced, result.source) == (True, "timedated")
    assert "ENOSYS" in result.detail and "SystemCallFilter" not in result.detail


def fake_timedatectl(tmp_path: Path, script: str) -> list[str]:
    program = tmp_path / "timedatectl"
    program.write_text("#!/bin/sh\n" + script + "\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return [str(program), "show", "--property=NTPSynchronized", "--value"]


@pytest.mark.parametrize(("script", "answer"), [
    ("echo yes", True),
    ("echo no", False),
    ("echo 'Failed to connect to bus: Host is down' >&2; exit 1", None),
    ("echo maybe", None),
])
def test_timedatectl_output_is_read_as_yes_no_or_no_answer(tmp_path: Path, script: str, answer: bool | None) -> None:
    assert ask_timedated(fake_timedatectl(tmp_path, script)) is answer


def test_a_missing_timedatectl_is_no_answer(tmp_path: Path) -> None:
    assert ask_timedated([str(tmp_path / "no-such-program")]) is None


def test_a_hung_timedated_is_no_answer_after_the_timeout(tmp_path: Path) -> None:
    assert ask_timedated(fake_timedatectl(tmp_path, "exec sleep 30"), timeout=0.2) is None


# -- the real thing, on this machine and under the unit's system-call filter --------------------

PROBE = """
import json
from core.clocksync import clock_sync_status, read_kernel_ntp
from pathlib import Path
try:
    kernel = read_kernel_ntp()
    reading = {"maxerror_us": kernel.maxerror_us, "synchronised": kernel.synchronised}
except OSError as exc:
    reading = {"errno": exc.errno}
status = clock_sync_status(flag=Path("/nonexistent/synchronized"), timedated=lambda: None)
print(json.dumps({"kernel": reading, "synced": status.synced, "source": status.source}))
"""

needs_filter = pytest.mark.skipif(not syscall_filter.available(),
                                  reason="needs x86-64 kernel headers and systemd-analyze")


def probe_under(launcher: Path) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(launcher), "-c", PROBE], capture_output=True, text=True,
                          timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


@needs_filter
def test_the_kernel_check_works_under_the_units_filter_and_agrees_with_the_unconfined_answer(tmp_path: Path) -> None:
    outside = read_kernel_ntp()
    inside = probe_under(syscall_filter.write_launcher(tmp_path / "seccomp.py"))
    assert inside["source"] == "kernel"  # the read went through: not refused, no fallback
    assert inside["synced"] is outside.synchronised


@needs_filter
def test_protect_clock_would_refuse_the_read_so_the_unit_must_not_set_it(tmp_path: Path) -> None:
    """ProtectClock=yes stacks its own @clock filter: no SystemCallFilter= line can re-allow adjtimex."""
    strict = syscall_filter.UNIT.read_text() + "\n[Service]\nProtectClock=yes\n"
    inside = probe_under(syscall_filter.write_launcher(tmp_path / "seccomp.py", strict))
    assert inside["kernel"] == {"errno": errno.EPERM}
    assert inside["source"] == "none"


@needs_filter
def test_the_unit_allows_the_clock_reads_but_no_call_that_sets_the_clock() -> None:
    allowed = syscall_filter.allowed_names(syscall_filter.UNIT.read_text())
    assert {"adjtimex", "clock_adjtime"} <= allowed  # glibc's adjtimex() is clock_adjtime(CLOCK_REALTIME)
    assert not {"settimeofday", "clock_settime", "stime"} & allowed


def test_the_unit_leaves_no_capability_that_could_write_the_clock() -> None:
    """adjtimex/clock_adjtime with modes != 0 need CAP_SYS_TIME: the bounding set must stay empty."""
    lines = [line.strip() for line in syscall_filter.UNIT.read_text().splitlines()]
    assert "CapabilityBoundingSet=" in lines and "AmbientCapabilities=" in lines
    assert "NoNewPrivileges=yes" in lines
    assert not any(line.startswith("ProtectClock=") and line != "ProtectClock=no" for line in lines)
