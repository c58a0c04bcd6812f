"""The systemd unit: it verifies cleanly, its exposure stays low, and the gateway runs under its limits."""

from __future__ import annotations

import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.control import request
from tests import syscall_filter
from tests.conftest import Broker
from tests.faults_support import UNIT, unit_assignments
from tests.service_support import ROOT, GatewayProcess, run_cli, service_config, short_dir

DOCS = ROOT / "docs" / "service.md"
INSTALLED_BINARY = "/opt/gateway/venv/bin/gateway"
EXPOSURE_LIMIT = 2.0

needs_systemd_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with its ExecStart= binary pointed at a file that exists here (verify checks it)."""
    binary = tmp_path / "bin" / "gateway"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    copy = tmp_path / "gateway.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


@needs_systemd_analyze
def test_the_unit_passes_systemd_analyze_verify_without_any_output(unit_copy: Path) -> None:
    result = _analyze("verify", str(unit_copy))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_the_exposure_rating_is_low_and_is_the_one_documented(unit_copy: Path) -> None:
    result = _analyze("security", "--offline=true", f"--threshold={int(EXPOSURE_LIMIT * 10)}", str(unit_copy))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    score = float(match.group(1))
    assert result.returncode == 0 and score <= EXPOSURE_LIMIT
    assert f"exposure level {score}" in DOCS.read_text(), "record the rating in docs/service.md"


def test_every_option_is_explained_by_a_comment() -> None:
    unexplained = []
    commented = False
    for number, line in enumerate(UNIT.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("["):
            commented = False
        elif line.startswith("#"):
            commented = True
        elif not commented:
            unexplained.append(f"{number}: {line}")
    assert unexplained == []


def test_every_gateway_command_in_the_unit_exists() -> None:
    commands = [
        shlex.split(line.split("=", 1)[1])
        for line in UNIT.read_text().splitlines()
        if line.startswith("Exec") and INSTALLED_BINARY in line
    ]
    assert {argv[1] for argv in commands} == {"check", "run", "safe-state"}
    for argv in commands:
        result = run_cli(*argv[1:], "--help")
        assert result.returncode == 0, result.stderr


def test_the_unit_keeps_the_watchdog_well_inside_the_stop_timeout() -> None:
    options = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line and not line.startswith("#")
    )
    assert options["Type"] == "notify"
    assert int(options["WatchdogSec"]) >= 10
    assert int(options["TimeoutStopSec"]) >= 5


# -- MemoryDenyWriteExecute=yes: the gateway must run without writable+executable memory ---

WRAPPER = """
# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): no W+X mappings from here on, inherited across exec.
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("W+X memory was still allowed")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _mdwe_supported() -> bool:
    """PR_SET_MDWE (Linux 6.3+) enforces what MemoryDenyWriteExecute= does; probe it in a child."""
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"],
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture
def workdir() -> Iterator[Path]:
    directory = short_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(not _mdwe_supported(), reason="kernel without PR_SET_MDWE")
def test_the_gateway_runs_without_writable_executable_memory(broker: Broker, workdir: Path) -> None:
    """Everything loaded: pydantic-core, gpiozero, paho with a real broker, the SQLite outbox."""
    (workdir / "mdwe.py").write_text(WRAPPER)
    config = service_config(workdir, "svc-mdwe", broker.port)
    gateway = GatewayProcess.start(workdir, config, launcher=[str(workdir / "mdwe.py")], mqtt=True)
    try:
        gateway.wait_ready()
        assert gateway.stop() == 0, gateway.log()
    finally:
        gateway.close()
    assert "Traceback" not in gateway.log()



@pytest.mark.skipif(not syscall_filter.available(), reason="needs x86-64 kernel headers and systemd-analyze")
def test_the_gateway_runs_under_the_units_system_call_filter(broker: Broker, workdir: Path) -> None:
    """SystemCallFilter=@system-service ~@privileged @resources (EPERM), native arch, NoNewPrivileges."""
    launcher = syscall_filter.write_launcher(workdir / "seccomp.py")
    config = service_config(workdir, "svc-seccomp", broker.port)
    answers_and_stops_cleanly(GatewayProcess.start(workdir, config, launcher=[str(launcher)], mqtt=True))


def answers_and_stops_cleanly(gateway: GatewayProcess) -> None:
    """The started ``gateway`` becomes ready, answers ``status``, stops with 0 and never logged a traceback."""
    try:
        gateway.wait_ready()
        assert request(gateway.socket_path, {"cmd": "status"})["ok"]
        assert gateway.stop() == 0, gateway.log()
    finally:
        gateway.close()
    assert "Traceback" not in gateway.log()


def test_the_service_runs_in_the_group_of_every_device_node_it_may_open() -> None:
    """gpiochip/gpiomem: gpio; serial: dialout; /dev/spidev*: spi; /dev/i2c-*: i2c (Raspberry Pi OS, all 0660)."""
    lines = UNIT.read_text().splitlines()
    groups = next(line.split("=", 1)[1].split() for line in lines if line.startswith("SupplementaryGroups="))
    assert sorted(groups) == ["dialout", "gpio", "i2c", "spi"]
    allowed = {line.split("=", 1)[1] for line in lines if line.startswith("DeviceAllow=")}
    assert {"char-spi rw", "char-i2c rw", "char-gpiochip rw"} <= allowed


# -- Environment=PYTHONOPTIMIZE=2 with the bytecode cached in CacheDirectory= ----------------


def _unit_environment(cache: Path) -> dict[str, str]:
    """The unit's ``Environment=`` assignments, its cache directory moved to ``cache``."""
    return {name: value.replace("/var/cache/gateway", str(cache)) for name, value in unit_assignments().items()}


def test_the_gateway_runs_with_the_units_optimised_bytecode_and_caches_it(broker: Broker, workdir: Path) -> None:
    """-OO leaves docstrings out of memory (2 MB, docs/performance.md); the venv is read-only to the service,
    so the compiled files go to the unit's cache directory, written at the first start and read after."""
    unit_text = UNIT.read_text()
    assert "\nCacheDirectory=gateway\n" in unit_text
    env = _unit_environment(workdir / "cache")
    assert env.get("PYTHONOPTIMIZE") == "2"
    env["PYTHONDONTWRITEBYTECODE"] = ""  # systemd does not set it; this test environment does
    config = service_config(workdir, "svc-optimised", broker.port)
    for start in range(2):  # the first start writes the cache, the second reads it
        answers_and_stops_cleanly(GatewayProcess.start(workdir, config, mqtt=True, env=env,
                                                       notify_address=str(workdir / f"notify{start}.sock")))
    cached = {path.name for path in (workdir / "cache").rglob("*.pyc")}
    assert f"app.{sys.implementation.cache_tag}.opt-2.pyc" in cached
    assert not {name for name in cached if ".opt-" not in name}
    methods = f"gateway-dataclass-methods.{sys.implementation.cache_tag}.opt2"  # core.lean_imports.GeneratedCode
    assert (Path(env["PYTHONPYCACHEPREFIX"]) / methods).is_file()
