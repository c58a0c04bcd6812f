"""``gateway.id`` derived from the board's ``/etc/machine-id`` when config.toml does not set it (docs/fleet.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config

MACHINE_ID = "0123456789abcdef0123456789abcdef"
DERIVED = "gw-054596ada494"
"""HMAC-SHA256 keyed with the machine id over ``edge-gateway gateway.id``, first 12 hex digits, computed
independently: ``printf 'edge-gateway gateway.id' | openssl dgst -sha256 -hmac "$(cat /etc/machine-id)"``."""


def machine_id_file(tmp_path: Path, text: str = MACHINE_ID + "\n") -> Path:
    path = tmp_path / "machine-id"
    path.write_text(text)
    return path


def test_a_gateway_without_an_id_takes_one_derived_from_the_machine_id(tmp_path: Path) -> None:
    config = parse_config({"gateway": {}}, tmp_path / "config.toml", machine_id=machine_id_file(tmp_path))
    assert config.gateway.id == DERIVED
    assert (config.base_topic, config.client_id) == (f"gateway/{DERIVED}", f"gateway-{DERIVED}")


def test_the_derived_id_does_not_reveal_the_machine_id(tmp_path: Path) -> None:
    config = parse_config({"gateway": {}}, tmp_path / "config.toml", machine_id=machine_id_file(tmp_path))
    assert MACHINE_ID[:8] not in config.gateway.id


def test_an_id_set_in_the_config_wins_over_the_machine_id(tmp_path: Path) -> None:
    config = parse_config({"gateway": {"id": "house-01"}}, tmp_path / "config.toml",
                          machine_id=machine_id_file(tmp_path))
    assert config.gateway.id == "house-01"


def test_no_id_and_no_machine_id_is_an_error_that_says_to_set_the_id(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {}}, tmp_path / "config.toml", machine_id=tmp_path / "absent")
    assert caught.value.problems == [
        f"{tmp_path / 'config.toml'}: gateway.id: not set, and no machine id to derive one from "
        f"({tmp_path / 'absent'}: No such file or directory): set gateway.id"]


def test_a_machine_id_that_is_not_32_hex_digits_is_not_used(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"gateway": {}}, tmp_path / "config.toml", machine_id=machine_id_file(tmp_path, "uninitialized\n"))
    assert "gateway.id: not set, and no machine id to derive one from" in caught.value.problems[0]
