"""The sd_notify protocol without libsystemd: one datagram per message.

systemd hands a ``Type=notify`` service the address of its notification
socket in ``NOTIFY_SOCKET``: a file-system path, or an abstract socket name
written with a leading ``@`` (a NUL byte on the wire). Each message is a
datagram of ``KEY=VALUE`` lines (sd_notify(3)). When ``NOTIFY_SOCKET`` is
unset (a terminal, a test, ``--simulate`` on a laptop) every call is a no-op.

The watchdog contract (``WatchdogSec=`` in the unit): systemd exports
``WATCHDOG_USEC`` (and ``WATCHDOG_PID``); the service must send
``WATCHDOG=1`` more often than that or be killed and restarted. The gateway
pings from its dispatcher loop, so a hung dispatcher stops the pings.

A notification must never take the gateway down: send errors are logged
(once per kind of error) and swallowed.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | None:
    """``NOTIFY_SOCKET`` -> an ``AF_UNIX`` address; ``@name`` is the abstract socket ``\\0name``."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and other transports are not for a gateway on a board


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds after which systemd declares us hung, or None when the watchdog is off.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for:
    a child that inherited the environment must not ping for its parent.
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    return usec / 1_000_000 if usec > 0 else None


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET`` (read at construction)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX address: systemd will not hear from us", raw)
        self._sock: socket.socket | None = None
        self._reported: set[str] = set()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True if it left the process."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            key = type(exc).__name__
            if key not in self._reported:
                self._reported.add(key)
                log.error("sd_notify to %r failed: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *_status(status))

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC``, as sd_notify(3) asks; follow with :meth:`ready`."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(*_status(text))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> list[str]:
    return [] if text is None else [f"STATUS={' '.join(text.split())}"]
