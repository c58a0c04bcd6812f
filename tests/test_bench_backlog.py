"""Benchmark 7 drains the backlog it made: its own reading of the outbox file must not keep the file from the
restarted bridge (the outbox opens it in exclusive locking mode; a connection left open made the bridge run
degraded, in memory, and nothing arrived)."""

from __future__ import annotations

from bench.backlog import backlog


def test_benchmark_7s_backlog_on_disk_is_drained_by_the_restarted_bridge() -> None:
    figures = {figure.name: figure for figure in backlog(2_000, wait_s=30.0)}
    assert figures["backlog on disk after stop"].value == 2_000
    assert figures["drain after restart"].value is not None
