"""The ``gateway`` command starts with the cyclic garbage collector paused, and every process that lives on
runs with it again (gateway/__main__.py, gateway/cli.py; docs/performance.md)."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def paused_collector() -> Iterator[None]:
    """The collector as ``gateway.__main__`` leaves it for the command, restored for the other tests."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Node:
    def __init__(self) -> None:
        self.me = self


def test_the_end_of_the_start_frees_the_cyclic_garbage_made_while_the_collector_was_paused(
    paused_collector: None,
) -> None:
    garbage = _Node()
    alive = weakref.ref(garbage)
    del garbage
    assert alive() is not None  # a cycle: only the collector frees it

    cli._end_of_start()

    assert alive() is None


def test_the_end_of_the_start_resumes_the_collector(paused_collector: None) -> None:
    cli._end_of_start()

    assert gc.isenabled()


def test_a_command_other_than_run_and_check_runs_with_the_collector(
    paused_collector: None, tmp_path: Path
) -> None:
    cli.main(["status", "--socket", str(tmp_path / "nobody.sock")])  # no service: exits 3, after resuming

    assert gc.isenabled()


def test_the_gateway_command_validates_with_the_collector_paused(tmp_path: Path) -> None:
    """``python -m gateway``'s own entry point pauses it before the imports; ``check`` keeps it paused."""
    probe = (
        "import gc, sys\n"
        "import gateway.__main__ as entry, gateway.cli as cli\n"
        "cli.cmd_check = lambda args: print('collector', gc.isenabled()) or 0\n"
        "sys.argv = ['gateway', 'check']\n"
        "entry.main()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "collector False"
