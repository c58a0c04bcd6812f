"""The scripts that put the gateway on a machine.

scripts/install into a scratch root (--root): the tree it lays out, a second run, an edited config, --dry-run.

Users, groups, packages and systemctl belong to the running system, so under --root the script only prints them;
the virtual environment is only planned there too (a venv is not relocatable), which keeps these tests at about a
second each. The real-system path (root, apt, useradd, systemctl) is not run here.

scripts/demo with a stand-in venv whose `gateway` only records its arguments: the Mosquitto the demo started
stops with it (Ctrl-C or not), and --fresh removes the simulated house's state directory first.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
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
    assert (root / "var/lib/gateway").is_dir()


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
    with_broker = packages("--with-broker").split(":")[1].split()
    assert with_broker == ["python3-venv", "python3-lgpio", "python3-gpiozero", "mosquitto"]


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


# -- scripts/demo: the Mosquitto it started stops with it; --fresh forgets the simulated house's state ----------

FAKE_GATEWAY = """#!{python}
# Stands in for `gateway run --simulate`: records its arguments and whether a broker listens on
# localhost:1883, and stops on Ctrl-C or SIGTERM (exit 0, as the gateway does), or at once when
# FAKE_GATEWAY_EXIT is set.
import os, signal, socket, sys, time
from pathlib import Path
out = Path(os.environ["FAKE_GATEWAY_OUT"])
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
(out / "argv").write_text("\\n".join(sys.argv[1:]))
with socket.socket() as probe:
    (out / "broker").write_text("open" if probe.connect_ex(("127.0.0.1", 1883)) == 0 else "closed")
(out / "up").touch()
if os.environ.get("FAKE_GATEWAY_EXIT"):
    sys.exit(0)
time.sleep(60)
sys.exit(3)
"""

# The demo's broker is on the fixed port 1883: each demo runs in its own network namespace, so a broker
# already running on this machine (another test run, a developer's) neither hides nor meets it.
PRIVATE_NETWORK = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


def _private_network_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*PRIVATE_NETWORK, "true"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


needs_private_network = pytest.mark.skipif(
    not _private_network_available(), reason="needs unshare --net (root) and ip to give the demo its own port 1883"
)
DEMO = [*PRIVATE_NETWORK, "bash", str(ROOT / "scripts" / "demo")]


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    """A stand-in venv for scripts/demo (already installed, so it installs nothing) and a private state home."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    gateway = venv / "bin" / "gateway"
    gateway.write_text(FAKE_GATEWAY.format(python=sys.executable))
    for script in (python, gateway):
        script.chmod(0o755)
    (venv / ".installed-test").touch()
    (tmp_path / "out").mkdir()
    return {
        **os.environ,
        "GATEWAY_VENV": str(venv),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "FAKE_GATEWAY_OUT": str(tmp_path / "out"),
        "PYTHONPATH": str(ROOT),
    }


def _demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, *args],
        env={**env, "FAKE_GATEWAY_EXIT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_its_broker_is_gone(output: str) -> None:
    match = re.search(r"started Mosquitto for the demo \(pid (\d+)", output)
    assert match, output
    assert f"stopped the Mosquitto the demo started (pid {match.group(1)})" in output
    with pytest.raises(ProcessLookupError):
        os.kill(int(match.group(1)), 0)


@needs_private_network
def test_ctrl_c_stops_the_demo_and_the_mosquitto_it_started(demo_env: dict[str, str], tmp_path: Path) -> None:
    demo = subprocess.Popen(
        DEMO,
        env=demo_env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "out" / "up").exists():
            assert demo.poll() is None and time.monotonic() < deadline, "the demo never started the gateway"
            time.sleep(0.05)
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C at the terminal does: the whole process group
        output, _ = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
    assert demo.returncode == 0, output
    assert (tmp_path / "out" / "broker").read_text() == "open"
    _assert_its_broker_is_gone(output)


@needs_private_network
def test_the_demo_stops_its_mosquitto_when_the_gateway_exits_by_itself(demo_env: dict[str, str]) -> None:
    result = _demo(demo_env)
    assert result.returncode == 0, result.stdout + result.stderr
    _assert_its_broker_is_gone(result.stdout)


@needs_private_network
def test_fresh_removes_the_simulated_houses_state_before_it_starts(demo_env: dict[str, str], tmp_path: Path) -> None:
    state = tmp_path / "state" / "edge-gateway" / "house-01-simulate"
    state.mkdir(parents=True)
    (state / "alarm.json").write_text('{"state": "armed_away"}')
    assert _demo(demo_env).returncode == 0
    assert (state / "alarm.json").exists(), "without --fresh the state is kept"
    result = _demo(demo_env, "--fresh", "--no-mqtt")
    assert result.returncode == 0, result.stdout + result.stderr
    assert not state.exists()
    assert (tmp_path / "out" / "argv").read_text().split("\n") == [
        "run",
        "--simulate",
        "--config",
        "config.toml",
        "--no-mqtt",
    ]
