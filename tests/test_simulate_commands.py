"""Scripted hub commands in ``gateway simulate`` pass the edge checks the MQTT bridge applies."""

from __future__ import annotations

from pathlib import Path

from core.events import Kind
from tests.rules_kit import house


def test_a_simulated_hub_off_word_to_a_switch_ends_off(tmp_path: Path) -> None:
    h = house(tmp_path, "")
    h.command("heater", True)
    h.command("heater", "OFF")
    assert h.value("heater") is False


def test_a_simulated_hub_command_a_switch_does_not_take_is_rejected(tmp_path: Path) -> None:
    h = house(tmp_path, "")
    h.command("heater", "banana")
    assert h.value("heater") != "banana"
    [rejected] = [e for e in h.seen if e.kind is Kind.REJECTED]
    assert "expected ON or OFF" in (rejected.detail or "")
