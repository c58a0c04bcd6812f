"""The benchmarks run as the unit runs the gateway, with ``-OO`` (``PYTHONOPTIMIZE=2`` removes docstrings and
asserts): ``PYTHONOPTIMIZE=2 python -m bench`` must not need a docstring to start."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.faults_support import ROOT


@pytest.mark.parametrize("module", ["bench", "bench.fleet"])
def test_a_benchmark_command_starts_under_the_units_optimisation(module: str) -> None:
    done = subprocess.run([sys.executable, "-OO", "-m", module, "--help"], check=False, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"usage: python -m {module}")
