"""``python -m bench.stacks FILE [N]``: where the time goes, from py-spy's collapsed stacks.

Prints, per thread, its share of the samples, the functions where its samples
end (self time, wait included: a thread blocked in ``select`` shows there),
and the innermost frame of project code (``gateway/``, ``drivers/``, ``rules/``)
each sample passed through, which attributes library time to our caller.
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

OURS = re.compile(r"\((gateway|drivers|rules)/")


def summarise(path: Path, top: int = 8) -> str:
    threads: Counter[str] = Counter()
    leaf: dict[str, Counter[str]] = defaultdict(Counter)
    ours: dict[str, Counter[str]] = defaultdict(Counter)
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += count
        leaf[thread][frames[-1]] += count
        mine = [f for f in frames[1:] if OURS.search(f)]
        ours[thread][mine[-1] if mine else "(library only)"] += count
    total = sum(threads.values()) or 1
    lines = []
    for thread, samples in threads.most_common():
        lines.append(f"== {thread}: {samples} samples ({100 * samples / total:.0f} %)")
        lines.append("   self (where samples end):")
        lines += [f"     {n:6d}  {name}" for name, n in leaf[thread].most_common(top)]
        lines.append("   innermost project frame:")
        lines += [f"     {n:6d}  {name}" for name, n in ours[thread].most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 8))
