"""What a benchmark returns: named figures with their target, and small measuring helpers."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(slots=True)
class Figure:
    """One measured figure. ``value`` None means not measurable, and ``note`` says why."""

    bench: str
    name: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_yet(bench: str, name: str, reason: str) -> Figure:
    return Figure(bench, name, None, "", note=f"not yet measurable: {reason}")


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``samples``; no interpolation, so p99 is a real sample."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, round(q / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_exact(pid: int) -> float:
    """CPU seconds the process's live threads have used so far, to the nanosecond (the scheduler's own count,
    ``/proc/PID/task/*/schedstat``): an idle process uses a few 10 ms ticks a minute, too coarse to tell
    0.03 % from 0.07 % with :func:`cpu_seconds`. A thread that has ended no longer counts."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def status_kb(pid: int, key: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/PID/status, in kB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class CpuMeter:
    """CPU % of one core a process used between :meth:`start` and :meth:`stop`; ``exact``: counted by the
    scheduler in nanoseconds (:func:`cpu_seconds_exact`: for an idle process whose threads all live on)."""

    def __init__(self, pid: int, exact: bool = False) -> None:
        self.pid = pid
        self._read = cpu_seconds_exact if exact else cpu_seconds
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = self._read(self.pid)
        self._wall = time.monotonic()

    def stop(self) -> tuple[float, float]:
        """(percent of one core, CPU seconds used)."""
        used = self._read(self.pid) - self._cpu
        wall = time.monotonic() - self._wall
        return 100.0 * used / wall if wall > 0 else 0.0, used


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }
