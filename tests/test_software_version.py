"""The version the gateway reports (health, discovery's ``sw_version``) is the one constant the package declares:
no lookup in the installed distributions (``importlib.metadata``: 1.3 MB of modules and a scan; issue 14)."""

from __future__ import annotations

import importlib.metadata

import gateway
from gateway.mqtt.health import software_version


def test_the_version_reported_is_the_one_the_installed_package_declares() -> None:
    assert software_version() == gateway.__version__ == importlib.metadata.version("edge-gateway")
