"""The MQTT package's code as its next reader meets it: what its docstrings promise."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

MQTT = Path(__file__).resolve().parent.parent / "gateway" / "mqtt"


def _is_text(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _stacked_docstrings(path: Path) -> list[str]:
    """Places where a string statement follows another: the second describes no attribute of its own,
    and the attribute it was written for is left undescribed (or described by a neighbour's text)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for first, second in itertools.pairwise(body):
            if _is_text(first) and _is_text(second):
                found.append(f"{path.name}:{second.lineno}")
    return found


def test_every_attribute_docstring_sits_under_the_attribute_it_describes() -> None:
    stacked = [place for path in sorted(MQTT.glob("*.py")) for place in _stacked_docstrings(path)]
    assert stacked == []
