"""``python -m bench [--quick] [--only 1,2,...]``: run the benchmarks, print a table, write JSON.

Results go to ``bench/results/<UTC time>.json`` (git-ignored) and
``bench/results/latest.json``, with the machine they came from.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from bench.figures import Figure, machine

BENCHMARKS: dict[str, tuple[str, str]] = {
    "1": ("bench.engine", "engine throughput, 1/100/1,000 rules"),
    "2": ("bench.gpio_latency", "GPIO edge -> relay latency"),
    "3": ("bench.serial_mqtt", "serial line -> MQTT subscriber latency, loss, CPU"),
    "4": ("bench.outbox", "sustained QoS 1 forwarding through the outbox"),
    "5": ("bench.idle", "steady RSS and idle CPU"),
    "6": ("bench.startup", "start to ready"),
    "7": ("bench.backlog", "100,000-event outbox backlog: restart and drain"),
    "8": ("bench.floods", "floods (issue 17): peak RSS, recovery, unrelated latency, alarms kept, shed"),
    "9": ("bench.web", "the web page (idle, one client) and the event history (bytes per hour)"),
    "10": ("bench.fleet", "a fleet of 200 gateways reconnecting after a broker restart (issue 15): jitter, drain_rate"),
    "11": ("bench.node_red_workload", "issue 14's workload: 49 % alarms, pty feeder that drops, CPU/messages per line"),
}

RESULTS = Path(__file__).resolve().parent / "results"

DESCRIPTION = "run the benchmarks, print a table, write JSON"
"""The ``--help`` line: not taken from the module's docstring, which ``-OO`` removes (the unit runs the gateway with
``PYTHONOPTIMIZE=2``, and ``PYTHONOPTIMIZE=2 python -m bench`` measures it the same way)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="shorter runs (idle window 10 s instead of 60 s)")
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers, e.g. 1,2")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    figures: list[Figure] = []
    started = time.time()
    for number in chosen:
        module_name, title = BENCHMARKS[number]
        print(f"-- {number}: {title}", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(module_name)
            figures.extend(module.measure(args.quick))
        except Exception as exc:
            traceback.print_exc()
            figures.append(Figure(f"{number}", title, None, "", note=f"failed: {type(exc).__name__}: {exc}"))
    print(table(figures))
    path = write(figures, quick=args.quick, started=started)
    print(f"\nJSON: {path}")
    return 1 if any(f.note.startswith("failed") for f in figures) else 0


def table(figures: Sequence[Figure]) -> str:
    rows = [("bench", "figure", "value", "target", "met", "note")]
    for f in figures:
        value = "—" if f.value is None else f"{format_value(f.value)} {f.unit}".strip()
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.bench, f.name, value, f.target, met, f.note))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for j, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5])
        if j == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(lines)


def format_value(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def write(figures: Sequence[Figure], *, quick: bool, started: float) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    document = {
        "started": stamp,
        "quick": quick,
        "machine": machine(),
        "figures": [f.as_dict() for f in figures],
    }
    path = RESULTS / f"{stamp}.json"
    text = json.dumps(document, indent=2, ensure_ascii=False)
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path
