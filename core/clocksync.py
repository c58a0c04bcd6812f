"""Has the system clock been synchronised (NTP) since boot? Asked in a way that works inside the unit.

A board without a real-time clock boots with a wrong time; the rules keep wall-clock
schedules waiting until this says yes (``[rules] unsynced_clock = "wait"``). It must
work whatever keeps the time (systemd-timesyncd, chrony, ntpd) and inside the
service's sandbox (``systemd/gateway.service``). Three sources, in this order:

1. **timesyncd's flag file** ``/run/systemd/timesync/synchronized``: timesyncd creates
   it at its first synchronisation after boot. Cheap, but only timesyncd writes it,
   and its absence proves nothing.
2. **The kernel** (``adjtimex`` with ``modes = 0``, a read): every NTP daemon
   disciplines the clock through the kernel and keeps its error bounds there. The
   clock counts as synchronised when the kernel's maximum error is below 16 s
   (``NTP_PHASE_LIMIT``): the kernel raises ``maxerror`` by 500 ppm every second
   nobody updates it and marks the clock unsynchronised when it reaches 16 s; at
   boot and after any ``settimeofday`` (fake-hwclock, ``date -s``) it is 16 s. This is
   the rule ``timedatectl``'s "System clock synchronized" uses (systemd's
   ``ntp_synced()``). The ``STA_UNSYNC`` flag, and the ``TIME_ERROR`` (5) return value
   that follows from it, are *not* used: chrony keeps ``STA_UNSYNC`` set on purpose
   when it tracks the RTC itself (no ``rtcsync``), to stop the kernel's 11-minute RTC
   writes, while the clock is perfectly synchronised.
   The unit must allow the call: ``ProtectClock=yes`` installs a seccomp filter of its
   own that refuses every ``@clock`` call, and glibc's ``adjtimex()`` is the
   ``clock_adjtime`` system call. The unit therefore leaves ``ProtectClock=`` off and
   allows ``adjtimex clock_adjtime clock_adjtime64`` explicitly; without
   ``CAP_SYS_TIME`` (its bounding set is empty) the kernel refuses any write.
3. **timedated** (``timedatectl show -p NTPSynchronized``), only when the kernel
   refused the read (an older or stricter unit, a container): timedated runs outside
   our sandbox and asks the kernel the same question. A subprocess with a timeout,
   asked only until the first yes.

The result says which source answered and why, so ``gateway check --hardware`` and
the log can tell an installer what is wrong ("adjtimex refused by the sandbox").
"""

from __future__ import annotations

import errno
import functools
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import ctypes

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
"""Created by systemd-timesyncd at its first synchronisation after boot (it lives in /run)."""

NTP_PHASE_LIMIT_US = 16_000_000
"""The kernel's largest ``maxerror`` (µs): at or above it the clock is not synchronised."""

STA_UNSYNC = 0x0040
TIME_ERROR = 5
TIMEDATECTL = ("timedatectl", "show", "--property=NTPSynchronized", "--value")
TIMEDATECTL_TIMEOUT = 5.0
"""Seconds to wait for timedated (D-Bus activation on a slow board included)."""


@functools.cache
def _timex_type() -> type[ctypes.Structure]:
    """The ``struct timex`` type, made at the first kernel read: ``ctypes`` (0.3 MB, a few ms) is imported
    only then, so a board whose timesyncd flag answers, or a house that never asks, does not load it."""
    import ctypes

    class _Timex(ctypes.Structure):
        """``struct timex`` (``<sys/timex.h>``) for the ``adjtimex`` symbol: ``long`` fields, native width."""

        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("constant", ctypes.c_long),
            ("precision", ctypes.c_long),
            ("tolerance", ctypes.c_long),
            ("time_sec", ctypes.c_long),
            ("time_usec", ctypes.c_long),
            ("tick", ctypes.c_long),
            ("ppsfreq", ctypes.c_long),
            ("jitter", ctypes.c_long),
            ("shift", ctypes.c_int),
            ("stabil", ctypes.c_long),
            ("jitcnt", ctypes.c_long),
            ("calcnt", ctypes.c_long),
            ("errcnt", ctypes.c_long),
            ("stbcnt", ctypes.c_long),
            ("tai", ctypes.c_int),
            ("_reserved", ctypes.c_int * 11),
        ]

    return _Timex


@dataclass(slots=True, frozen=True)
class KernelNtp:
    """What ``adjtimex`` read: its return value (``TIME_OK`` 0 … ``TIME_ERROR`` 5), status bits, maxerror (µs)."""

    state: int
    status: int
    maxerror_us: int

    @property
    def synchronised(self) -> bool:
        return 0 <= self.maxerror_us < NTP_PHASE_LIMIT_US


def read_kernel_ntp() -> KernelNtp:
    """The kernel's NTP state, read only (``modes = 0``); raises :class:`OSError` when refused (EPERM in a sandbox)."""
    import ctypes

    try:
        adjtimex = ctypes.CDLL(None, use_errno=True).adjtimex
    except AttributeError as exc:  # not Linux
        raise OSError(errno.ENOSYS, "no adjtimex in this C library") from exc
    timex = _timex_type()()  # zeroed: modes = 0 asks, changes nothing
    state = int(adjtimex(ctypes.byref(timex)))
    if state < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return KernelNtp(state=state, status=int(timex.status), maxerror_us=int(timex.maxerror))


def ask_timedated(command: Sequence[str] = TIMEDATECTL, timeout: float = TIMEDATECTL_TIMEOUT) -> bool | None:
    """timedated's ``NTPSynchronized`` via ``timedatectl``; None when it cannot answer (absent, no D-Bus, timeout)."""
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argv (tests pass their own fake program), no shell
            list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    answer = done.stdout.strip()
    if done.returncode != 0 or answer not in {"yes", "no"}:
        return None
    return answer == "yes"


Source = Literal["timesyncd", "kernel", "timedated", "none"]


@dataclass(slots=True, frozen=True)
class ClockSync:
    """The answer: synchronised or not, which source gave it, and a sentence for a person."""

    synced: bool
    source: Source
    detail: str


def clock_sync_status(
    flag: Path = TIMESYNC_FLAG,
    kernel: Callable[[], KernelNtp] = read_kernel_ntp,
    timedated: Callable[[], bool | None] = ask_timedated,
) -> ClockSync:
    """Ask the sources in order (module docstring); never raises. The sources are injectable for tests."""
    try:
        if flag.exists():
            return ClockSync(True, "timesyncd", f"{flag} exists")
    except OSError:
        pass
    try:
        reading = kernel()
    except OSError as exc:
        refused = f"adjtimex refused ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
        if exc.errno == errno.EPERM:
            refused += (": the sandbox blocks it (the unit needs ProtectClock=no and"
                        " SystemCallFilter=adjtimex clock_adjtime, docs/service.md)")
    else:
        unsync = "set" if reading.status & STA_UNSYNC else "clear"
        detail = f"kernel maxerror {reading.maxerror_us / 1e6:g} s (STA_UNSYNC {unsync})"
        if reading.synchronised:
            return ClockSync(True, "kernel", detail)
        return ClockSync(False, "kernel", f"{detail}: not synchronised by NTP yet")
    answer = timedated()
    if answer is not None:
        said = "yes" if answer else "no"
        return ClockSync(answer, "timedated", f"{refused}; timedated says NTPSynchronized={said}")
    return ClockSync(False, "none", f"{refused}; no {flag}; timedated did not answer")


def clock_synchronised() -> bool:
    """True when the clock has been synchronised since boot (see :func:`clock_sync_status`)."""
    return clock_sync_status().synced
