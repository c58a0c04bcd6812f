"""The version the gateway reports (health, discovery's ``sw_version``) is read once per process: asking the
installed distributions scans the virtual environment (4 ms, a transient 0.36 MB; issue 14), and the installed
version cannot change under a running process — an upgrade restarts the service."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mqtt.health import software_version


def test_the_version_is_read_once_per_process_and_not_again_after_an_upgrade_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    software_version.cache_clear()
    before = software_version()
    upgraded = tmp_path / "edge_gateway-99.0.dist-info"  # a newer install, found first on the path
    upgraded.mkdir()
    (upgraded / "METADATA").write_text("Metadata-Version: 2.1\nName: edge-gateway\nVersion: 99.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert software_version() == before
