"""A sampling CPU profile by hand (py-spy is not installed): ``python -m bench.sampler OUT -- run --config X``.

Runs ``gateway`` (its CLI, with the arguments after ``--``) in this process with a daemon thread
that, every :data:`PERIOD` seconds, reads every thread's CPU time from
``/proc/self/task/<tid>/schedstat`` (nanoseconds on the CPU) and its Python stack from
``sys._current_frames()``. The CPU a thread used since the previous sample is charged to the stack
it is in now, so a thread blocked in ``select`` or a condition costs nothing (py-spy's default mode
counts waits as samples). At exit, OUT gets per thread its CPU seconds and, per function, the
CPU it spent itself ("self") and below it ("total"), the top of each. The sampler's own thread is
reported too (its cost, about 1-2 % of a core at 200 Hz, is in the process's CPU figure).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path
from types import FrameType

ROOT = str(Path(__file__).resolve().parent.parent)

PERIOD = 0.05
"""Every 50 ms: the per-thread CPU split is exact (schedstat) whatever the period; a shorter period
charged more CPU to the right stack but cost the sampler a quarter of the process."""


def _cpu_ns(tid: int) -> int:
    try:
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def _wakeups(tid: int) -> int:
    """The thread's voluntary context switches so far: each a wait it was woken from."""
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            for text in f:
                if text.startswith("voluntary_ctxt_switches:"):
                    return int(text.split()[1])
    except OSError:
        pass
    return 0


def _name(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    short = path[len(ROOT) + 1:] if path.startswith(ROOT) else path.rsplit("/site-packages/", 1)[-1]
    return f"{short}:{code.co_name}"


class Sampler:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.self_ns: dict[str, Counter[str]] = defaultdict(Counter)
        self.total_ns: dict[str, Counter[str]] = defaultdict(Counter)
        self.thread_ns: Counter[str] = Counter()
        self.thread_wakeups: Counter[str] = Counter()
        self._woken: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()
        atexit.register(self.write)

    def _run(self) -> None:
        skip = float(os.environ.get("BENCH_SKIP_S", "0"))
        if skip and self._stop.wait(skip):  # start-up (imports, config) is not the hot path
            return
        while not self._stop.wait(PERIOD):
            frames = sys._current_frames()
            for thread in threading.enumerate():
                tid = thread.native_id
                ident = thread.ident
                if tid is None or ident is None:
                    continue
                now = _cpu_ns(tid)
                spent = now - self._last.get(tid, now)
                self._last[tid] = now
                woken = _wakeups(tid)
                name = thread.name.split("(")[0].rstrip("-0123456789") or thread.name
                self.thread_wakeups[name] += woken - self._woken.get(tid, woken)
                self._woken[tid] = woken
                frame = frames.get(ident)
                if spent <= 0 or frame is None:
                    continue
                self.thread_ns[name] += spent
                self.self_ns[name][_name(frame)] += spent
                seen: set[str] = set()
                f: FrameType | None = frame
                while f is not None:
                    key = _name(f)
                    if key not in seen:
                        seen.add(key)
                        self.total_ns[name][key] += spent
                    f = f.f_back

    def write(self) -> None:
        self._stop.set()
        total = sum(self.thread_ns.values()) or 1
        lines = [f"sampled CPU {total / 1e9:.2f} s (every {PERIOD * 1e3:g} ms, charged to the stack sampled)"]
        for name, ns in self.thread_ns.most_common():
            lines.append(f"\n== thread {name}: {ns / 1e9:.2f} s, {100 * ns / total:.1f} % of the process, "
                         f"{self.thread_wakeups[name]:,} wake-ups")
            lines.append("   self:")
            for key, v in self.self_ns[name].most_common(12):
                lines.append(f"     {100 * v / total:5.1f} %  {key}")
            lines.append("   total (inclusive):")
            for key, v in self.total_ns[name].most_common(25):
                lines.append(f"     {100 * v / total:5.1f} %  {key}")
        self.out.write_text("\n".join(lines) + "\n")


def profile_threads(out: Path) -> None:
    """Deterministic mode (``BENCH_CPROFILE=1``): a ``cProfile.Profile`` per thread (``Thread.run``
    wrapped before the gateway starts any), written to ``OUT.cprofile`` at exit, top functions by own
    time per thread (and each thread's whole profile to ``OUT.<thread>.pstats``). cProfile roughly
    doubles the cost of Python calls: read its shares, not its times."""
    import cProfile
    import pstats

    profiles: dict[str, cProfile.Profile] = {}
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = profiles.setdefault(self.name, cProfile.Profile())
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main_profile = profiles.setdefault("MainThread", cProfile.Profile())
    main_profile.enable()
    skip = float(os.environ.get("BENCH_SKIP_S", "0"))
    if skip:
        def reset() -> None:
            for p in profiles.values():
                p.clear()  # type: ignore[attr-defined]
        threading.Timer(skip, reset).start()

    def write() -> None:
        main_profile.disable()
        import io
        text = io.StringIO()
        for name, p in profiles.items():
            with contextlib.suppress(TypeError):  # a profile that never ran
                stats = pstats.Stats(p, stream=text)
                stats.dump_stats(f"{out}.{name}.pstats")  # for pstats' own browser: sort and filter at will
                text.write(f"\n===== thread {name}\n")
                stats.sort_stats("tottime").print_stats(18)
        Path(f"{out}.cprofile").write_text(text.getvalue())

    atexit.register(write)


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    args = argv[argv.index("--") + 1:]
    if os.environ.get("BENCH_CPROFILE"):
        profile_threads(out)
    Sampler(out).start()
    from gateway.cli import main as gateway_main

    return int(gateway_main(args) or 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
