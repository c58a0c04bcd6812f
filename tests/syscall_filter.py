"""Emulate the unit's system-call confinement for a child process, without systemd.

``SystemCallFilter=@system-service``, ``SystemCallFilter=~@privileged @resources``,
``SystemCallErrorNumber=EPERM``, ``SystemCallArchitectures=native`` and
``NoNewPrivileges=yes``: the groups are read from ``systemd-analyze syscall-filter``,
the numbers from the kernel headers, and the filter is a plain seccomp BPF program
installed by a small launcher before it execs the real command. x86-64 only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")

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


def allowed_numbers() -> list[int]:
    groups = _groups()
    names = _expand("@system-service", groups) - _expand("@privileged", groups) - _expand("@resources", groups)
    numbers = dict(re.findall(r"#define __NR_(\w+) (\d+)", UNISTD.read_text()))
    return sorted(int(numbers[name]) for name in names if name in numbers)


def write_launcher(path: Path) -> Path:
    path.write_text(LAUNCHER.format(allowed=allowed_numbers()))
    return path
