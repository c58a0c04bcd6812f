"""The ``gateway`` command starts with the cyclic garbage collector paused, and every process that lives on
runs with it again (gateway/__main__.py, gateway/cli.py; docs/performance.md)."""

from __future__ import annotations

import gc
import subprocess
import sys
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
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def test_the_end_of_the_start_resumes_the_collector(paused_collector: None) -> None:
    cli._end_of_start()

    assert gc.isenabled()


def test_the_end_of_the_start_freezes_what_the_start_built_before_the_collector_runs_again(
    paused_collector: None,
) -> None:
    built_at_start = [object()]  # a container: tracked by the collector, in its youngest generation

    cli._end_of_start()

    assert not any(o is built_at_start for o in gc.get_objects())  # only the frozen are in no generation


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
