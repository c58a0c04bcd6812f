"""The layers hold: core uses nothing of ours; drivers and rules use core only; gateway is the application.

The contract lives in pyproject.toml (``[tool.importlinter]``); ``.ci/run`` checks it too, and a wrong-way
import fails with a message naming the layers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_module_imports_against_the_layers() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_a_wrong_way_import_is_reported_with_the_layers_it_crosses(tmp_path: Path) -> None:
    wrong = ROOT / "core" / "_wrong_way_for_test.py"
    wrong.write_text("import gateway.app  # noqa: F401\n")
    try:
        lint = Path(sys.executable).parent / "lint-imports"
        result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    finally:
        wrong.unlink()
    assert result.returncode == 1
    assert "core is not allowed to import gateway" in result.stdout
    assert "core._wrong_way_for_test -> gateway.app" in result.stdout
