"""scripts/install into a scratch root (--root): the tree it lays out, a second run, an edited config, --dry-run.

Users, groups, packages and systemctl belong to the running system, so under --root the script only prints them;
the virtual environment is only planned there too (a venv is not relocatable), which keeps these tests at about a
second each. The real-system path (root, apt, useradd, systemctl) is not run here.
"""

from __future__ import annotations

import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.service_support import ROOT

SCRIPT = ROOT / "scripts" / "install"
UNIT = ROOT / "systemd" / "gateway.service"
INSTALLED_UNIT = "etc/systemd/system/gateway.service"
VENV_BINARY = "/opt/gateway/venv/bin/gateway"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )


def installed(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = install("--root", str(root), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every path under root with its mode, mtime and content (a link's target): what "changes nothing" compares."""
    tree: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content: bytes | str = str(path.readlink())
        elif path.is_file():
            content = path.read_bytes()
        else:
            content = b""
        tree[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    return tree


def test_an_install_into_a_scratch_root_lays_out_the_unit_the_config_the_rules_and_the_source(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    installed(root)
    assert (root / INSTALLED_UNIT).read_text() == UNIT.read_text()
    assert (root / "etc/gateway/config.toml").read_text() == (ROOT / "config.toml").read_text()
    assert (root / "etc/gateway/rules.d/house.toml").read_text() == (ROOT / "rules.d/house.toml").read_text()
    assert stat.S_IMODE((root / "etc/gateway").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "etc/gateway/config.toml").stat().st_mode) == 0o640
    assert (root / "opt/gateway/src/pyproject.toml").read_text() == (ROOT / "pyproject.toml").read_text()
    assert not (root / "opt/gateway/src/.venv").exists()
    assert str((root / "usr/local/bin/gateway").readlink()) == VENV_BINARY


def test_under_a_scratch_root_the_venv_is_planned_with_the_system_site_packages_and_not_built(
    tmp_path: Path,
) -> None:
    result = installed(tmp_path / "root")
    assert "python3 -m venv --system-site-packages /opt/gateway/venv" in result.stdout
    assert "/opt/gateway/venv/bin/pip install /opt/gateway/src" in result.stdout
    assert not (tmp_path / "root/opt/gateway/venv").exists()


def test_a_second_install_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed(root)
    before = snapshot(root)
    result = installed(root)
    assert snapshot(root) == before
    assert "nothing to change" in result.stdout


def test_an_edited_config_and_edited_rules_are_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed(root)
    config = root / "etc/gateway/config.toml"
    rules = root / "etc/gateway/rules.d/house.toml"
    config.write_text('[gateway]\nid = "my-house"\n')
    rules.write_text("version = 1\n")
    result = installed(root)
    assert config.read_text() == '[gateway]\nid = "my-house"\n'
    assert rules.read_text() == "version = 1\n"
    assert "/etc/gateway/config.toml exists: kept as it is" in result.stdout


def test_the_shipped_rules_are_not_added_beside_an_installers_own_config(tmp_path: Path) -> None:
    """The shipped rules name the shipped config's devices: an emptied rules.d stays empty."""
    root = tmp_path / "root"
    installed(root)
    (root / "etc/gateway/rules.d/house.toml").unlink()
    installed(root)
    assert list((root / "etc/gateway/rules.d").iterdir()) == []


def test_a_dry_run_writes_nothing_and_lists_every_step(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = installed(root, "--dry-run")
    assert not root.exists()
    steps = [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("== ")]
    assert steps == [
        "== system",
        "== packages",
        "== groups",
        "== user",
        "== source",
        "== virtual environment",
        "== configuration",
        "== unit",
        "== check",
    ]
    out = result.stdout
    assert f"would run: install -D -m 0644 {UNIT} {root / INSTALLED_UNIT}" in out
    assert f"would run: install -m 0640 {ROOT / 'config.toml'} {root / 'etc/gateway/config.toml'}" in out
    assert "systemctl enable gateway.service" in out
    assert f"{VENV_BINARY} check --hardware --config /etc/gateway/config.toml" in out
    assert "dry run: nothing was changed" in out


def test_the_broker_is_installed_only_when_asked_for(tmp_path: Path) -> None:
    def packages(*args: str) -> str:
        out = installed(tmp_path / "root", "--dry-run", *args).stdout
        return next(line for line in out.splitlines() if line.startswith("== packages:"))

    assert "mosquitto" not in packages()
    assert packages("--with-broker").split(":")[1].split() == ["python3-venv", "python3-lgpio", "mosquitto"]


def test_the_service_user_gets_exactly_the_groups_the_unit_runs_with(tmp_path: Path) -> None:
    out = installed(tmp_path / "root", "--dry-run").stdout
    unit_lines = UNIT.read_text().splitlines()
    unit_groups = next(line.split("=", 1)[1].split() for line in unit_lines if line.startswith("SupplementaryGroups="))
    if "useradd" in out:
        argv = shlex.split(next(line for line in out.splitlines() if "useradd" in line).split(": ", 1)[1])
        assert argv[argv.index("--groups") + 1].split(",") == unit_groups
    group_line = next(line for line in out.splitlines() if line.startswith("== groups:"))
    assert group_line.split(":")[1].split("(")[0].split() == unit_groups


def test_an_unknown_option_is_a_usage_error() -> None:
    result = install("--rooot", "/tmp/x")
    assert result.returncode == 2
    assert "unknown option --rooot" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_installed_unit_passes_systemd_analyze_verify_without_any_output(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed(root)
    # verify checks that ExecStart='s binary exists: point it at one inside the scratch root.
    binary = root / VENV_BINARY.lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    unit = root / INSTALLED_UNIT
    unit.write_text(unit.read_text().replace(VENV_BINARY, str(binary)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
