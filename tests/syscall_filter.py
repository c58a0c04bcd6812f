"""Emulate the unit's system-call confinement for a child process, without systemd.

The allowed set is read from the unit itself (``systemd/gateway.service``, or any unit
text given): its ``SystemCallFilter=`` lines in order (the first, an allow list, starts
the set; ``~`` lines remove, later plain lines add back, as systemd does), minus the
groups that options such as ``ProtectClock=yes`` deny with seccomp filters of their
own (stacked filters: a call must pass all of them, so a later ``SystemCallFilter=``
cannot re-allow what they deny). ``SystemCallErrorNumber=EPERM``,
``SystemCallArchitectures=native`` and ``NoNewPrivileges=yes`` as in the unit. The
groups come from ``systemd-analyze syscall-filter``, the numbers from the kernel
headers, and the filter is a plain seccomp BPF program installed by a small launcher
before it execs the real command. x86-64 only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
UNIT = Path(__file__).resolve().parent.parent / "systemd" / "gateway.service"

IMPLIED_DENIALS = {"ProtectClock": "@clock", "ProtectKernelModules": "@module", "PrivateDevices": "@raw-io"}
"""Options that install a seccomp filter of their own, and the group it refuses (systemd's execute.c)."""

LAUNCHER = """
import ctypes, os, struct, sys
ALLOWED = {allowed!r}
AUDIT_ARCH_X86_64 = 0xC000003E
ALLOW, EPERM = 0x7FFF0000, 0x00050000 | 1
def op(code, k, jt=0, jf=0):
    return struct.pack("HBBI", code, jt, jf, k)
prog = [op(0x20, 4), op(0x15, AUDIT_ARCH_X86_64, 1, 0), op(0x06, EPERM), op(0x20, 0)]
for nr in ALLOWED:
    prog += [op(0x15, nr, 0, 1), op(0x06, ALLOW)]
prog.append(op(0x06, EPERM))
code = b"".join(prog)
buf = ctypes.create_string_buffer(code, len(code))
fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("PR_SET_NO_NEW_PRIVS failed")
fbuf = ctypes.create_string_buffer(fprog, len(fprog))
if libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
    sys.exit(f"PR_SET_SECCOMP failed: errno {{ctypes.get_errno()}}")
if libc.syscall(155, 0, 0) != -1:  # pivot_root (@privileged) must now fail
    sys.exit("the filter did not take")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def available() -> bool:
    import platform

    return platform.machine() == "x86_64" and UNISTD.exists() and shutil.which("systemd-analyze") is not None


def _groups() -> dict[str, list[str]]:
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def _expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(_expand(member, groups) for member in groups.get(name, [])))


def allowed_names(unit_text: str) -> set[str]:
    """The system calls the unit lets through, by name."""
    groups = _groups()
    names: set[str] | None = None
    for line in unit_text.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "SystemCallFilter":
            deny = value.startswith("~")
            listed = set().union(*(_expand(item, groups) for item in value.lstrip("~").split()))
            if names is None:
                assert not deny, "only an allow-list filter (the first SystemCallFilter= without ~) is emulated"
                names = set()
            names = names - listed if deny else names | listed
    assert names is not None, "the unit has no SystemCallFilter="
    for line in unit_text.splitlines():  # implied filters apply whatever their place in the file
        key, _, value = line.strip().partition("=")
        if key in IMPLIED_DENIALS and value.strip() in {"yes", "true", "on", "1"}:
            names -= _expand(IMPLIED_DENIALS[key], groups)
    return names


def allowed_numbers(unit_text: str | None = None) -> list[int]:
    names = allowed_names(UNIT.read_text() if unit_text is None else unit_text)
    numbers = dict(re.findall(r"#define __NR_(\w+) (\d+)", UNISTD.read_text()))
    return sorted(int(numbers[name]) for name in names if name in numbers)


def write_launcher(path: Path, unit_text: str | None = None) -> Path:
    """A launcher script: ``python LAUNCHER prog args…`` runs ``python prog args…`` under the unit's filter."""
    path.write_text(LAUNCHER.format(allowed=allowed_numbers(unit_text)))
    return path
